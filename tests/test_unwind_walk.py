"""Stack walks on real stacks: gcc-compiled code run in Unicorn, and hand-built frames.

Rules checked (kernel `arch_stack_walk_reliable` with the ORC unwinder):
"passing through kernel-mode pt_regs continues the walk with regs' ip/sp/bp as
long as the tables cover the interrupted ip; user-mode pt_regs end the walk
reliably if they sit at the very top of the task stack; END_OF_STACK ends
reliably; an ip with no table entry, or a return address of 0, is unreliable."
The frame-pointer rule also refuses any kernel-mode pt_regs on the stack.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time

import pytest
from elftools.elf.elffile import ELFFile

from emu.unwind import (PT_REGS_SIZE, FrameKind, StartState, build_tables, tables_from_elf, walk,
                        walk_best_effort)

unicorn = pytest.importorskip("unicorn")
from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_MODE_64, Uc  # noqa: E402
from unicorn.x86_const import UC_X86_REG_EFLAGS, UC_X86_REG_RBP, UC_X86_REG_RIP, UC_X86_REG_RSP  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")

KERNEL_CFLAGS = (
    "-O2 -ffreestanding -fno-pic -fno-pie -mcmodel=kernel -mno-red-zone -mno-sse "
    "-mno-mmx -mno-avx -pg -mfentry -mrecord-mcount -fno-omit-frame-pointer "
    "-fno-jump-tables -fcf-protection=none -fasynchronous-unwind-tables "
    "-fno-stack-protector"
).split()
TEXT_BASE = 0x400000
STACK_LOW, STACK_HIGH = 0x800000, 0x808000
KERNEL_CS, KERNEL_SS, USER_CS = 0x10, 0x18, 0x33
END_ADDR = 0x700000  # a mapped hlt page, never reached

PROGRAM_C = r"""
volatile long sink;
extern void irq_entry(void);

__attribute__((noinline)) long leaf(long x)
{
	long a[8];
	for (int i = 0; i < 8; i++)
		a[i] = x * i + sink;
	sink = a[x & 7];
	return a[3];
}

__attribute__((noinline)) long mid2(long x)
{
	if (x & 1)
		return leaf(x + 1);          /* tail call */
	return leaf(x) + 1;
}

__attribute__((noinline)) long many(long a, long b, long c, long d, long e, long f,
				    long g, long h)
{
	return a + b + c + d + e + f + g + h + leaf(h);
}

__attribute__((noinline)) long spin(long n)
{
	for (;;) {
		n = mid2(n) + many(n, 1, 2, 3, 4, 5, 6, n >> 2);
		if (n == 123456789)
			break;
	}
	return n;
}

__attribute__((noinline)) long level3(long x) { return spin(x) + 1; }

__attribute__((noinline)) long level2(long x)
{
	long r = level3(x);
	sink = r;
	return r;
}

__attribute__((noinline)) long level1(long x)
{
	long v[(x & 3) + 2];
	for (long i = 0; i < (x & 3) + 2; i++)
		v[i] = x + i;
	return level2(v[1]) * 2;
}

__attribute__((noinline)) void do_irq(void *regs)
{
	for (;;)
		sink += mid2(sink) + (long)regs;
}
"""

PROGRAM_ASM = r"""
	.intel_syntax noprefix
.macro HINT type, reg=0, off=0
.Lhint_\@:
	.pushsection .klpemu_unwind_hints, "a"
	.quad .Lhint_\@
	.short \off
	.byte \reg
	.byte \type
	.long 0
	.popsection
.endm
	.text
	.globl __fentry__
	.type __fentry__, @function
__fentry__:
	ret
	.size __fentry__, .-__fentry__

	.globl kentry
	.type kentry, @function
kentry:
	HINT 3
	mov edi, 5
	call level1
	ud2
	.size kentry, .-kentry

	.globl irq_entry, irq_entry_regs
	.type irq_entry, @function
irq_entry:
	HINT 2
	push -1
	push rdi
	push rsi
	push rdx
	push rcx
	push rax
	push r8
	push r9
	push r10
	push r11
	push rbx
	push rbp
	push r12
	push r13
	push r14
	push r15
irq_entry_regs:
	HINT 1
	mov rdi, rsp
	call do_irq
	ud2
	.size irq_entry, .-irq_entry

	.globl bad_asm
	.type bad_asm, @function
bad_asm:
	and rsp, -16
	ret
	.size bad_asm, .-bad_asm
	.section .note.GNU-stack, "", @progbits
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """The linked test program: (path, symbols, tables, loadable segments)."""
    work = tmp_path_factory.mktemp("unwind_walk")
    objs = []
    for name, text in (("prog.c", PROGRAM_C), ("entry.S", PROGRAM_ASM)):
        (work / name).write_text(text)
        obj = work / (name + ".o")
        subprocess.run(["gcc", *KERNEL_CFLAGS, "-c", str(work / name), "-o", str(obj)], check=True)
        objs.append(str(obj))
    path = work / "prog.elf"
    subprocess.run(["ld", f"-Ttext=0x{TEXT_BASE:x}", "-e", "kentry", "-o", str(path), *objs],
                   check=True)
    with open(path, "rb") as f:
        elf = ELFFile(f)
        syms = {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()}
        segs = [(seg["p_vaddr"], seg.data(), seg["p_memsz"]) for seg in elf.iter_segments()
                if seg["p_type"] == "PT_LOAD"]
    return path, syms, tables_from_elf(path, use_cache=False), segs


class Machine:
    """The program in Unicorn, with a shadow stack of return addresses kept by a hook."""

    def __init__(self, segs, on_insn=None):
        self.uc = uc = Uc(UC_ARCH_X86, UC_MODE_64)
        for vaddr, data, memsz in segs:
            lo, hi = vaddr & ~0xFFF, (vaddr + memsz + 0xFFF) & ~0xFFF
            uc.mem_map(lo, hi - lo)
            uc.mem_write(vaddr, data)
        uc.mem_map(END_ADDR, 0x1000)
        uc.mem_write(END_ADDR, b"\xf4")
        uc.mem_map(STACK_LOW, STACK_HIGH - STACK_LOW)
        uc.reg_write(UC_X86_REG_RSP, STACK_HIGH)
        self.shadow: list[int] = []
        self.on_insn = on_insn
        lo = min(v for v, _, _ in segs)
        hi = max(v + size for v, _, size in segs)
        uc.hook_add(UC_HOOK_CODE, self._hook, begin=lo, end=hi)

    def _hook(self, uc, addr, size, _):
        if self.on_insn is not None:
            self.on_insn(self, addr)
        op = bytes(uc.mem_read(addr, 1))[0]
        if op == 0xE8:
            self.shadow.append(addr + 5)
        elif op == 0xC3:
            self.shadow.pop()

    def read_u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.uc.mem_read(addr, 8))[0]

    def regs(self) -> StartState:
        r = self.uc.reg_read
        return StartState(r(UC_X86_REG_RIP), r(UC_X86_REG_RSP), r(UC_X86_REG_RBP))

    def run(self, begin: int, count: int) -> None:
        self.uc.emu_start(begin, END_ADDR, count=count)

    def inject_irq(self, entry: int) -> list[int]:
        """Push an iret frame as an interrupt gate would and jump to `entry`;
        returns the interrupted context's expected frames."""
        st = self.regs()
        expected = [st.ip, *reversed(self.shadow)]
        new = (st.sp & ~0xF) - 40
        flags = self.uc.reg_read(UC_X86_REG_EFLAGS)
        self.uc.mem_write(new, struct.pack("<5Q", st.ip, KERNEL_CS, flags, st.sp, KERNEL_SS))
        self.uc.reg_write(UC_X86_REG_RSP, new)
        self.uc.reg_write(UC_X86_REG_RIP, entry)
        self.shadow = []
        return expected


def test_walk_at_every_instruction_matches_call_chain(program):
    """From live registers at each of ~6000 instruction boundaries (prologues,
    epilogues, tail calls, stack arguments, a VLA), the reliable walk returns
    exactly the return addresses the CPU pushed."""
    _, syms, tables, segs = program
    checked = []

    def check(m, addr):
        st = StartState(addr, m.uc.reg_read(UC_X86_REG_RSP), m.uc.reg_read(UC_X86_REG_RBP))
        trace = walk(tables, m.read_u64, st, (STACK_LOW, STACK_HIGH))
        assert trace.reliable, (tables.describe(addr), trace.reason)
        assert list(trace.ips) == [addr, *reversed(m.shadow)], tables.describe(addr)
        checked.append(len(trace.frames))

    m = Machine(segs, check)
    m.run(syms["kentry"], 6000)
    assert len(checked) == 6000 and max(checked) >= 7
    print(f"\n{len(checked)} walks, {sum(checked)} frames, deepest {max(checked)}")


def test_walk_after_stops_at_varied_counts(program):
    """Stop the CPU with emu_start(count=N) for many N and walk from its registers."""
    _, syms, tables, segs = program
    m = Machine(segs)
    ip = syms["kentry"]
    for count in [1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 53, 97, 101, 211, 499]:
        m.run(ip, count)
        st = m.regs()
        ip = st.ip
        trace = walk(tables, m.read_u64, st, (STACK_LOW, STACK_HIGH))
        assert trace.reliable, trace.reason
        assert list(trace.ips) == [st.ip, *reversed(m.shadow)]
        assert all(f.kind is FrameKind.NORMAL for f in trace.frames)


@pytest.mark.parametrize("stop_after", [3, 40, 137, 1000, 1777])
def test_walk_through_interrupt_frame(program, stop_after):
    """An interrupt injected at an arbitrary instruction: the ORC rule walks
    through the iret frame and then the pt_regs; the frame-pointer rule refuses."""
    _, syms, tables, segs = program
    interrupted: list[int] = []
    checked = [0]

    def check(m, addr):
        if not interrupted:
            return
        st = StartState(addr, m.uc.reg_read(UC_X86_REG_RSP), m.uc.reg_read(UC_X86_REG_RBP))
        trace = walk(tables, m.read_u64, st, (STACK_LOW, STACK_HIGH))
        assert trace.reliable, (tables.describe(addr), trace.reason)
        handler = [addr, *reversed(m.shadow)]
        assert list(trace.ips) == handler + interrupted
        kinds = [f.kind for f in trace.frames]
        assert kinds[len(handler)] is FrameKind.INTERRUPT
        assert kinds.count(FrameKind.INTERRUPT) == 1
        fp = walk(tables, m.read_u64, st, (STACK_LOW, STACK_HIGH), rule="frame-pointer")
        assert not fp.reliable
        assert fp.reason == "kernel-mode pt_regs on the stack (frame-pointer rule)"
        checked[0] += 1

    m = Machine(segs, check)
    m.run(syms["kentry"], stop_after)
    interrupted.extend(m.inject_irq(syms["irq_entry"]))
    m.run(syms["irq_entry"], 400)
    assert checked[0] == 400


def _stack_reader(mem: bytearray, low: int):
    def read_u64(addr: int) -> int:
        if not low <= addr <= low + len(mem) - 8:
            raise KeyError(f"unmapped 0x{addr:x}")
        return struct.unpack_from("<Q", mem, addr - low)[0]
    return read_u64


def _pt_regs(ip: int, cs: int, sp: int, bp: int = 0) -> bytes:
    regs = [0] * 21
    regs[4], regs[16], regs[17], regs[19], regs[20] = bp, ip, cs, sp, cs + 8
    return struct.pack("<21Q", *regs)


def test_user_regs_end_the_walk_only_at_stack_top(program):
    _, syms, tables, _ = program
    low, high = 0x10000, 0x14000
    mem = bytearray(high - low)
    top = high - PT_REGS_SIZE
    mem[top - low:] = _pt_regs(0x401234, USER_CS, 0x7FFF0000)
    start = StartState(syms["irq_entry_regs"], top, 0)
    for rule in ("orc", "frame-pointer"):
        trace = walk(tables, _stack_reader(mem, low), start, (low, high), rule=rule)
        assert trace.reliable and trace.reason is None
        assert [(f.ip, f.kind) for f in trace.frames] == [
            (syms["irq_entry_regs"], FrameKind.NORMAL), (0x401234, FrameKind.USER)]
    lower = top - 64
    mem[lower - low:lower - low + PT_REGS_SIZE] = _pt_regs(0x401234, USER_CS, 0x7FFF0000)
    trace = walk(tables, _stack_reader(mem, low), StartState(syms["irq_entry_regs"], lower, 0),
                 (low, high))
    assert not trace.reliable and "not at the top of the task stack" in trace.reason


def test_kernel_regs_continue_only_into_known_text(program):
    _, syms, tables, _ = program
    low, high = 0x10000, 0x14000
    mem = bytearray(high - low)
    regs_at = 0x12000
    # interrupted at the first instruction of leaf(): its return address at sp
    mem[regs_at - low:regs_at - low + PT_REGS_SIZE] = _pt_regs(syms["leaf"], KERNEL_CS, 0x13000)
    struct.pack_into("<Q", mem, 0x13000 - low, syms["kentry"] + 10)  # after `call level1`
    read = _stack_reader(mem, low)
    trace = walk(tables, read, StartState(syms["irq_entry_regs"], regs_at, 0), (low, high))
    assert trace.reliable, trace.reason
    assert [f.kind for f in trace.frames] == [FrameKind.NORMAL, FrameKind.INTERRUPT,
                                              FrameKind.NORMAL]
    mem[regs_at - low:regs_at - low + PT_REGS_SIZE] = _pt_regs(0x9999000, KERNEL_CS, 0x13000)
    trace = walk(tables, read, StartState(syms["irq_entry_regs"], regs_at, 0), (low, high))
    assert not trace.reliable and trace.reason == "unknown text at 0x9999000"


def test_unreliable_reasons(program):
    _, syms, tables, _ = program
    low, high = 0x10000, 0x14000
    mem = bytearray(high - low)
    read = _stack_reader(mem, low)
    sp = 0x13000
    at_leaf = StartState(syms["leaf"], sp, 0)

    def reason(start, bounds=(low, high), reader=read):
        trace = walk(tables, reader, start, bounds)
        assert not trace.reliable
        return trace.reason

    struct.pack_into("<Q", mem, sp - low, 0xDEADBEEF)
    assert reason(at_leaf) == "return address 0xdeadbeef outside kernel text"
    struct.pack_into("<Q", mem, sp - low, 0)
    assert reason(at_leaf) == "return address 0 in the frame of leaf+0x0"
    assert reason(StartState(0x1234, sp, 0)) == "unknown text at 0x1234"
    assert reason(StartState(syms["leaf"], high + 64, 0)).startswith("stack pointer 0x")
    assert reason(at_leaf, bounds=(low, sp + 4)) == f"stack pointer 0x{sp + 8:x} left the task stack"

    def unmapped(addr):
        raise KeyError(addr)

    assert reason(at_leaf, reader=unmapped) == f"cannot read stack at 0x{sp:x}"
    assert reason(StartState(syms["bad_asm"] + 4, sp, 0)) == "undefined stack state at bad_asm+0x4"
    # an ip inside a function that no path reaches: `ret; nop`
    padded = build_tables([("f", 0x1000, 2)], lambda a, n: b"\xc3\x90"[:n])
    assert walk(padded, read, StartState(0x1001, sp, 0), (low, high)).reason == \
        "no unwind entry for 0x1001 (f+0x1)"
    # a call frame whose CFA goes down the stack (garbage rbp)
    mid = [f for f in tables.iter_functions() if f.name == "level1"][0]
    rbp_ip = next(a for a in range(mid.start, mid.end)
                  if (e := tables.lookup(a)) is not None and e.base.name == "RBP")
    assert "wrong direction" in reason(StartState(rbp_ip, sp, sp - 64))


def test_too_many_frames():
    """A self-recursive chain longer than max_frames is unreliable."""
    # f: push rbp; mov rbp,rsp; call f; pop rbp; ret
    code = bytes.fromhex("554889e5e8f7ffffff5dc3")
    tables = build_tables([("f", 0x1000, len(code))], lambda a, n: code[:n])
    low, high = 0x10000, 0x20000
    mem = bytearray(high - low)
    sp = low + 0x100
    for i in range(1000):  # frames of 16 bytes: saved rbp, return address f+9
        struct.pack_into("<QQ", mem, sp - low + 16 * i, sp + 16 * i + 16, 0x1009)
    trace = walk(tables, _stack_reader(mem, low), StartState(0x1009, sp, sp), (low, high),
                 max_frames=50)
    assert not trace.reliable and trace.reason == "too many frames" and len(trace.frames) == 50


def test_best_effort_marks_guessed_frames(program):
    _, syms, tables, _ = program
    low, high = 0x10000, 0x14000
    mem = bytearray(high - low)
    sp = 0x13000
    struct.pack_into("<QQQ", mem, sp - low, 0xDEADBEEF, 0x55, syms["kentry"] + 10)
    trace = walk_best_effort(tables, _stack_reader(mem, low), StartState(syms["leaf"], sp, 0),
                             (low, high))
    assert not trace.reliable and "outside kernel text" in trace.reason
    assert [(f.ip, f.guessed) for f in trace.frames] == [
        (syms["leaf"], False), (0xDEADBEEF, False), (syms["kentry"] + 10, True)]


def test_walk_speed(program):
    """Frames per second of the reliable walk on a real 8-frame stack."""
    _, syms, tables, segs = program
    m = Machine(segs)
    m.run(syms["kentry"], 1)
    ip = syms["kentry"]
    best = None
    for _ in range(200):  # find a deep stop point
        m.run(ip, 7)
        st = m.regs()
        ip = st.ip
        if best is None or len(m.shadow) > best[1]:
            best = (st, len(m.shadow), bytes(m.uc.mem_read(STACK_LOW, STACK_HIGH - STACK_LOW)))
    st, _, mem = best
    unpack = struct.Struct("<Q").unpack_from

    def read_u64(addr):
        return unpack(mem, addr - STACK_LOW)[0]

    trace = walk(tables, read_u64, st, (STACK_LOW, STACK_HIGH))
    assert trace.reliable
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        walk(tables, read_u64, st, (STACK_LOW, STACK_HIGH))
    dt = time.perf_counter() - t0
    fps = n * len(trace.frames) / dt
    print(f"\n{len(trace.frames)}-frame walks: {n / dt:,.0f} walks/s, {fps:,.0f} frames/s")
    assert fps > 100_000
