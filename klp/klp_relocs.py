"""Livepatch relocations (Documentation/livepatch/module-elf-format.rst).

A livepatch module keeps `.klp.rela.<objname>.<section>` sections
(SHF_RELA_LIVEPATCH) whose relocations use `.klp.sym.<objname>.<symbol>,<sympos>`
symbols (SHN_LIVEPATCH): references to symbols the module loader cannot
resolve (static or not exported), or that live in a module not loaded yet.
As in kernel/livepatch/core.c, the vmlinux sections are written by the
module loader when the livepatch module loads (`apply_vmlinux_relocs`, the
loader's klp_apply_section_relocs call), a module's sections when that
module is loaded (klp_init_object_loaded), and cleared again when it goes
(klp_clear_object_relocs), so that the next load can write them afresh.
The arithmetic is the loader's (emu/elf/relocs.py); the checks and messages
are the kernel's (klp_resolve_symbols, x86 __write_relocate_add).
"""
from __future__ import annotations

import errno
import re
from typing import TYPE_CHECKING

from emu.elf.image import Symbol
from emu.elf.format import SHN_LIVEPATCH
from emu.elf.module_loader import KlpRelaSection
from emu.elf.relocs import MASK64, RELOCATIONS, RelocOverflow
from emu.module.manager import Module, ModuleState
from klp.objects import KSYM_NAME_LEN, MODULE_NAME_LEN, KlpObject, KlpPatch

if TYPE_CHECKING:
    from emu import Machine

PR_WARN, PR_ERR = 4, 3

# The sscanf() formats of the kernel: ".klp.rela.%55[^.]" and
# ".klp.sym.%55[^.].%511[^,],%lu" (%lu skips blanks, then wants a digit).
_SEC_NAME = re.compile(rf"\.klp\.rela\.([^.]{{1,{MODULE_NAME_LEN - 1}}})")
_SYM_NAME = re.compile(rf"\.klp\.sym\.([^.]{{1,{MODULE_NAME_LEN - 1}}})\."
                       rf"([^,]{{1,{KSYM_NAME_LEN - 1}}}),[ \t\n\v\f\r]*([0-9]+)")


def find_object_symbol(m: "Machine", objname: str | None, name: str,
                       sympos: int) -> Symbol | None:
    """klp_find_object_symbol: the sympos-th `name` of an object (None: vmlinux),
    the only one for sympos 0; None (-EINVAL) after the kernel's message."""
    ks = m.kallsyms
    count = ks.count(name, objname)
    sym = ks.find(name, objname, sympos)
    if count == 0:
        _klp_log(m, f"symbol '{name}' not found in symbol table", PR_ERR)
    elif count > 1 and sympos == 0:
        _klp_log(m, f"unresolvable ambiguity for symbol '{name}' in object '{objname or '(null)'}'", PR_ERR)
    elif sym is None:
        _klp_log(m, f"symbol position {sympos} for symbol '{name}' in object "
                 f"'{objname or 'vmlinux'}' not found", PR_ERR)
    return sym


def resolve_symbols(m: "Machine", pmod: Module, sec: KlpRelaSection, sec_objname: str) -> int:
    """klp_resolve_symbols: set st_value of every livepatch symbol `sec` uses; 0 or -errno."""
    symtab = _symtab(pmod)
    for rela in sec.entries:
        if rela.shndx != SHN_LIVEPATCH:
            _klp_log(m, f"symbol {rela.symbol} is not marked as a livepatch symbol", PR_ERR)
            return -errno.EINVAL
        match = _SYM_NAME.match(rela.symbol)
        if match is None:
            _klp_log(m, f"symbol {rela.symbol} has an incorrectly formatted name", PR_ERR)
            return -errno.EINVAL
        sym_objname, sym_name, sympos = match[1], match[2], int(match[3]) & MASK64
        sym_vmlinux = sym_objname == "vmlinux"
        # module-specific sections may not use vmlinux symbols (ordering of
        # module special sections); exported ones take normal relocations
        if sec_objname != "vmlinux" and sym_vmlinux:
            _klp_log(m, f"invalid access to vmlinux symbol '{sym_name}' from module-specific "
                     "livepatch relocation section", PR_ERR)
            return -errno.EINVAL
        sym = find_object_symbol(m, None if sym_vmlinux else sym_objname, sym_name, sympos)
        if sym is None:
            return -errno.EINVAL
        symtab[rela.symbol] = sym.address
    return 0


def write_relocate_add(m: "Machine", pmod: Module, sec: KlpRelaSection, apply: bool) -> int:
    """x86 __write_relocate_add: write (apply) or zero (clear) every field; 0 or -errno.

    Applying wants a zero field, clearing wants the value applying wrote.
    A module still UNFORMED is written directly (memcpy); a live one with
    every CPU stopped and its translations dropped (text_poke). Fields
    written before a failure stay written, as in the kernel."""
    symtab = _symtab(pmod)
    writes: list[tuple[int, bytes]] = []
    try:
        for rela in sec.entries:
            reloc = RELOCATIONS.get(rela.type)
            if reloc is None:
                m.log(f"{pmod.name}: Unknown rela relocation: {rela.type}", PR_ERR)
                return -errno.ENOEXEC
            if reloc.width == 0:
                continue
            loc = sec.target_address + rela.offset
            S = symtab.get(rela.symbol, 0)
            value = reloc.value(S, rela.addend, loc)
            try:
                data = reloc.compute(S, rela.addend, loc)
            except RelocOverflow:
                m.log(f"overflow in relocation type {rela.type} val {value:x}", PR_ERR)
                m.log(f"`{pmod.name}' likely not compiled with -mcmodel=kernel", PR_ERR)
                return -errno.ENOEXEC
            current = _read(m, writes, loc, reloc.width)
            if apply and any(current):
                m.log(f"x86/modules: Invalid relocation target, existing value is nonzero for "
                      f"type {rela.type}, loc {loc:016x}, val {value:x}", PR_ERR)
                return -errno.ENOEXEC
            if not apply and current != data:
                m.log(f"x86/modules: Invalid relocation target, existing value does not match "
                      f"expected value for type {rela.type}, loc {loc:016x}, val {value:x}", PR_WARN)
                return -errno.ENOEXEC
            writes.append((loc, data if apply else bytes(reloc.width)))
        return 0
    finally:
        _write(m, pmod, writes)


def write_section_relocs(m: "Machine", pmod: Module, sec: KlpRelaSection,
                         objname: str | None, apply: bool) -> int:
    """klp_write_section_relocs: `sec` if it belongs to `objname` (None: vmlinux); 0 or -errno."""
    match = _SEC_NAME.match(sec.name)
    if match is None:
        _klp_log(m, f"section {sec.name} has an incorrectly formatted name", PR_ERR)
        return -errno.EINVAL
    if (objname or "vmlinux") != match[1]:
        return 0
    if not apply:
        write_relocate_add(m, pmod, sec, False)      # clear_relocate_add() is void
        return 0
    return resolve_symbols(m, pmod, sec, match[1]) or write_relocate_add(m, pmod, sec, True)


def apply_vmlinux_relocs(m: "Machine", pmod: Module) -> int:
    """The module loader's klp_apply_section_relocs(..., NULL) for every
    livepatch section of a loading module: 0 or -errno (the load fails)."""
    for sec in pmod.image.klp_relocations:
        ret = write_section_relocs(m, pmod, sec, None, True)
        if ret:
            return ret
    return 0


def write_object_relocs(m: "Machine", patch: KlpPatch, obj: KlpObject, apply: bool) -> int:
    """klp_apply_object_relocs / klp_clear_object_relocs: a module object's sections."""
    for sec in patch.module.image.klp_relocations:
        ret = write_section_relocs(m, patch.module, sec, obj.name, apply)
        if ret:
            return ret
    return 0


def _klp_log(m: "Machine", text: str, level: int) -> None:
    m.log(f"livepatch: {text}", level=level)


def _symtab(pmod: Module) -> dict[str, int]:
    """st_value of the module's livepatch symbols (0 until resolved)."""
    return pmod.data.setdefault("klp_symtab", {})   # type: ignore[return-value]


def _read(m: "Machine", writes: list[tuple[int, bytes]], loc: int, width: int) -> bytes:
    """The field as this pass left it (writes are batched)."""
    for addr, data in reversed(writes):
        if addr == loc and len(data) == width:
            return data
    return m.mem.read(loc, width)


def _write(m: "Machine", pmod: Module, writes: list[tuple[int, bytes]]) -> None:
    if not writes:
        return
    if pmod.state == ModuleState.UNFORMED:
        for addr, data in writes:
            m.mem.write(addr, data)
            m.text.invalidate(addr, len(data))
    else:
        m.text_poke_many(writes)
