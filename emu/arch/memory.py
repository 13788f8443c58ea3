"""Guest-physical RAM and the page tables that give it kernel addresses.

Unicorn's default TLB truncates high-half addresses (field notes §2), so the
machine runs under real 4-level paging. All CPUs map this one buffer with
mem_map_ptr; Python reads and writes it directly (under paging, uc.mem_read
takes physical addresses, which we avoid altogether).

Physical layout:
    0x000000  page tables, GDT, boot_params (emulator-owned, below 1 MiB)
    8 MiB     user program (mapped at USER_BASE, U/S)
    10 MiB    user stacks and the shell mailbox (mapped at USER_BASE + 2 MiB)
    12 MiB    staging area for files the shell hands to the kernel (USER_STAGING)
    14 MiB    page tables of the kernel stacks' area (VMAP_STACK_START)
    16 MiB    kernel image (KERNEL_VIRT_BASE + 16 MiB = 0xffffffff81000000)
    64 MiB    module area (MODULES_VADDR)
    96 MiB .. kernel heap (kmalloc, stacks), reached through the direct map
"""
from __future__ import annotations

import ctypes
import mmap
import struct

from emu.abi import (KERNEL_VIRT_BASE, MODULES_VADDR, PAGE_OFFSET, THREAD_SIZE, USER_BASE, USER_END,
                     VMAP_STACK_PT_PHYS, VMAP_STACK_PTES_PHYS, VMAP_STACK_SLOTS, VMAP_STACK_START)
from emu.errors import BadGuestAddress, EmuError

MiB = 1 << 20
RAM_SIZE = 192 * MiB
PAGE_2M = 2 * MiB

PT_BASE = 0x1000            # page tables live in [0x1000, 0x20000)
GDT_PHYS = 0x20000
BOOT_PARAMS_PHYS = 0x21000
USER_CODE_PHYS = 8 * MiB
USER_DATA_PHYS = 10 * MiB
USER_STAGING_PHYS = 12 * MiB
KERNEL_PHYS = 16 * MiB
MODULES_PHYS = 64 * MiB
MODULES_SIZE = 32 * MiB
HEAP_PHYS = 96 * MiB
PAGE_4K = 4096
VMAP_STACK_END = VMAP_STACK_START + VMAP_STACK_SLOTS * 2 * THREAD_SIZE
MAX_HEAP = VMAP_STACK_SLOTS * THREAD_SIZE      # every heap block can be a stack

_PRESENT, _RW, _USER, _PS = 0x1, 0x2, 0x4, 0x80
# the hottest reads (task fields, stack walks): struct straight from the buffer
_U64, _U32, _S32 = (struct.Struct(f).unpack_from for f in ("<Q", "<I", "<i"))
_PUT_U64 = struct.Struct("<Q").pack_into

# Flat 64-bit segments: null, null, kernel code, kernel data, null, user data, user code.
GDT_ENTRIES = (0, 0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF, 0,
               0x00CFF2000000FFFF, 0x00AFFA000000FFFF)


class Ram:
    """The guest's physical memory: one ctypes buffer shared by every CPU."""

    def __init__(self, size: int = RAM_SIZE) -> None:
        self.size = size
        # an anonymous mapping: zero pages on first touch, where a zeroed
        # malloc (create_string_buffer) costs a quarter of a second per boot
        # and makes all of RAM resident; private, so that a forked process
        # (a run of an exploration) gets its own copy-on-write RAM
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.buffer = (ctypes.c_char * size).from_buffer(self._map)
        self.base = ctypes.addressof(self.buffer)
        self.view = memoryview(self.buffer).cast("B")

    def read(self, paddr: int, size: int) -> bytes:
        self._check(paddr, size)
        return bytes(self.view[paddr:paddr + size])

    def write(self, paddr: int, data: bytes) -> None:
        self._check(paddr, len(data))
        self.view[paddr:paddr + len(data)] = data

    def _check(self, paddr: int, size: int) -> None:
        if paddr < 0 or size < 0 or paddr + size > self.size:
            raise EmuError(f"physical access [{paddr:#x}, +{size:#x}) outside RAM")


def is_canonical(vaddr: int) -> bool:
    """x86-64 4-level paging: bits 63..47 all equal (else the CPU raises #GP)."""
    top = vaddr >> 47
    return top == 0 or top == (1 << 17) - 1


class AddressSpace:
    """Virtual-to-physical translation of the fixed kernel mappings.

    The guest changes its page tables only to map a kernel stack, once per
    heap block (it never unmaps one), so translation is arithmetic, and in
    the stacks' area a PTE read whose answer is then kept.
    """

    def __init__(self, ram: Ram) -> None:
        self.ram = ram
        self._view = ram.view
        # (virtual start, virtual end, physical start), most used first
        self.regions = (
            (PAGE_OFFSET, PAGE_OFFSET + ram.size, 0),
            (KERNEL_VIRT_BASE, KERNEL_VIRT_BASE + MODULES_PHYS, 0),
            (MODULES_VADDR, MODULES_VADDR + MODULES_SIZE, MODULES_PHYS),
            (USER_BASE, USER_END, USER_CODE_PHYS),
        )
        # 2 MiB page -> physical - virtual, for the pages wholly inside a region
        # (each region has its own offset): two lookups instead of a walk
        self._offset = {page: phys - start for start, end, phys in self.regions
                        for page in range(-(-start // PAGE_2M), end // PAGE_2M)}
        self._stack_pages: dict[int, int] = {}     # 4 KiB page of a mapped stack -> physical - virtual

    def v2p(self, vaddr: int, size: int = 1, access: str = "read") -> int:
        if size > 0:
            offset = self._offset.get(vaddr >> 21)
            if offset is not None and self._offset.get((vaddr + size - 1) >> 21) == offset:
                return vaddr + offset
            offset = self._stack_pages.get(vaddr >> 12)        # a stack page seen before
            if offset is not None and (vaddr + size - 1) >> 12 == vaddr >> 12:
                return vaddr + offset
            if VMAP_STACK_START <= vaddr and vaddr + size <= VMAP_STACK_END:
                return self._stack_v2p(vaddr, size, access)
        for start, end, phys in self.regions:
            if start <= vaddr and vaddr + size <= end:
                return vaddr - start + phys
        raise BadGuestAddress(vaddr, size, access)

    def _stack_v2p(self, vaddr: int, size: int, access: str) -> int:
        """v2p in the stacks' area: every 4 KiB page of the range mapped, and
        contiguously (a stack's are; a guard page's and a neighbour's are not)."""
        offset = self._stack_page(vaddr >> 12)
        if offset is None or not all(self._stack_page(page) == offset
                                     for page in range((vaddr >> 12) + 1, ((vaddr + size - 1) >> 12) + 1)):
            raise BadGuestAddress(vaddr, size, access)
        return vaddr + offset

    def _stack_page(self, page: int) -> int | None:
        """physical - virtual of a 4 KiB page of the stacks' area, from the
        guest's PTE (None: absent, a guard page or a stack not handed out)."""
        offset = self._stack_pages.get(page)
        if offset is None:
            pte = _U64(self._view, VMAP_STACK_PTES_PHYS + (page - (VMAP_STACK_START >> 12)) * 8)[0]
            if not pte & _PRESENT:
                return None
            offset = self._stack_pages[page] = (pte & 0x000FFFFFFFFFF000) - (page << 12)
        return offset

    @staticmethod
    def is_user(vaddr: int, size: int = 1) -> bool:
        """Whether a copy from or to user memory may touch [vaddr, vaddr +
        size): inside [USER_BASE, USER_END), else the kernel's -EFAULT."""
        return USER_BASE <= vaddr and size >= 0 and vaddr + size <= USER_END

    def read_user_cstr(self, vaddr: int, limit: int) -> bytes | None:
        """strncpy_from_user: a user string's bytes before its NUL, at most
        LIMIT of them (LIMIT bytes and no NUL: the caller's "too long"); None
        when user memory ends first (-EFAULT)."""
        raw = b""
        while len(raw) < limit:
            at = vaddr + len(raw)
            if not self.is_user(at):
                return None
            chunk = self.read(at, min(limit - len(raw), USER_END - at, 4096))
            end = chunk.find(b"\0")
            if end >= 0:
                return raw + chunk[:end]
            raw += chunk
        return raw

    def window(self, vaddr: int, size: int) -> memoryview:
        """The RAM behind [vaddr, vaddr + size), which must be mapped linearly
        (one region, or a run of one stack): reads and writes through it need
        no translation. BadGuestAddress otherwise."""
        p = self.v2p(vaddr, size)
        return self._view[p:p + size]

    # Every region lies inside RAM, so what v2p gives for [vaddr, vaddr +
    # size) is inside RAM too: these go to the buffer's view directly.
    def read(self, vaddr: int, size: int) -> bytes:
        p = self.v2p(vaddr, size)
        if size < 0:
            return self.ram.read(p, size)            # its error
        return bytes(self._view[p:p + size])

    def write(self, vaddr: int, data: bytes) -> None:
        p = self.v2p(vaddr, len(data), "write")
        self._view[p:p + len(data)] = data

    def read_u64(self, vaddr: int) -> int:
        return _U64(self._view, self.v2p(vaddr, 8))[0]

    def read_u32(self, vaddr: int) -> int:
        return _U32(self._view, self.v2p(vaddr, 4))[0]

    def read_s32(self, vaddr: int) -> int:
        return _S32(self._view, self.v2p(vaddr, 4))[0]

    def write_u64(self, vaddr: int, value: int) -> None:
        _PUT_U64(self._view, self.v2p(vaddr, 8, "write"), value & 0xFFFFFFFFFFFFFFFF)

    def read_cstr(self, vaddr: int, limit: int = 4096) -> str:
        """A NUL-terminated string (at most `limit` bytes) at vaddr."""
        p = self.v2p(vaddr)
        end = min(p + limit, self.ram.size)
        raw = bytes(self.ram.view[p:end])
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def build_page_tables(ram: Ram) -> int:
    """Write the PML4 and its tables; return CR3. 2 MiB pages throughout."""
    next_table = [PT_BASE]

    def alloc() -> int:
        addr = next_table[0]
        next_table[0] += 0x1000
        if next_table[0] > GDT_PHYS:
            raise EmuError("page-table area exhausted")
        return addr

    pml4 = alloc()

    def table_for(parent: int, index: int, user: bool) -> int:
        entry = struct.unpack_from("<Q", ram.buffer, parent + index * 8)[0]
        if entry & _PRESENT:
            return entry & ~0xFFF & ((1 << 52) - 1)
        table = alloc()
        flags = _PRESENT | _RW | (_USER if user else 0)
        struct.pack_into("<Q", ram.buffer, parent + index * 8, table | flags)
        return table

    def map_2m(vaddr: int, paddr: int, user: bool = False) -> None:
        pdpt = table_for(pml4, (vaddr >> 39) & 511, user)
        pd = table_for(pdpt, (vaddr >> 30) & 511, user)
        flags = _PRESENT | _RW | _PS | (_USER if user else 0)
        struct.pack_into("<Q", ram.buffer, pd + ((vaddr >> 21) & 511) * 8, paddr | flags)

    for off in range(0, ram.size, PAGE_2M):
        map_2m(PAGE_OFFSET + off, off)
    for off in range(0, MODULES_PHYS, PAGE_2M):
        map_2m(KERNEL_VIRT_BASE + off, off)
    for off in range(0, MODULES_SIZE, PAGE_2M):
        map_2m(MODULES_VADDR + off, MODULES_PHYS + off)
    map_2m(USER_BASE, USER_CODE_PHYS, user=True)
    map_2m(USER_BASE + PAGE_2M, USER_DATA_PHYS, user=True)
    map_2m(USER_BASE + 2 * PAGE_2M, USER_STAGING_PHYS, user=True)
    _link_stack_area(ram, pml4)
    return pml4


def _link_stack_area(ram: Ram, pml4: int) -> None:
    """The stacks' area: its PDPT and PD, and a PD entry for each of its
    page tables, all of whose PTEs are absent until the guest maps a stack."""
    pdpt, pd = VMAP_STACK_PT_PHYS, VMAP_STACK_PT_PHYS + PAGE_4K
    flags = _PRESENT | _RW
    struct.pack_into("<Q", ram.buffer, pml4 + ((VMAP_STACK_START >> 39) & 511) * 8, pdpt | flags)
    struct.pack_into("<Q", ram.buffer, pdpt + ((VMAP_STACK_START >> 30) & 511) * 8, pd | flags)
    tables = -(-(VMAP_STACK_END - VMAP_STACK_START) // PAGE_2M)
    for i in range(tables):
        struct.pack_into("<Q", ram.buffer, pd + (((VMAP_STACK_START >> 21) + i) & 511) * 8,
                         (VMAP_STACK_PTES_PHYS + i * PAGE_4K) | flags)


def write_gdt(ram: Ram) -> tuple[int, int]:
    """Write the GDT (iretq needs one); return its (virtual base, limit)."""
    for i, desc in enumerate(GDT_ENTRIES):
        struct.pack_into("<Q", ram.buffer, GDT_PHYS + i * 8, desc)
    return PAGE_OFFSET + GDT_PHYS, len(GDT_ENTRIES) * 8 - 1
