"""The switch_to/RIP hazard: what a livepatch must not replace blindly.

Before 4.9, x86-64 switched stacks inline in __schedule() and saved no
resume address: a task switched to goes on with the code after the switch
in whichever copy of __schedule() made it. If a patched task switches to a
task that went to sleep in the old __schedule(), that task resumes in the
new function's code on the old function's frame (and the other way round):
registers and the return address come from the wrong slots. So a function
that switches stacks without saving RIP may be replaced only by one whose
frame at the resume point is the same, and what gcc inlined into it can be
patched only by patching the function itself.

Everything here comes from the machine code (emu.unwind.switches, Capstone)
and, for inlining, from the image's DWARF (DW_TAG_inlined_subroutine).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from emu.elf.image import ElfImage
from emu.errors import ImageError
from emu.kernel.tasks import TaskView
from emu.unwind import (HINTS_SECTION, FunctionSym, StackSwitch, find_stack_switches, parse_hints,
                        stack_switches_from_elf)

if TYPE_CHECKING:
    from emu.arch.cpu import Cpu
    from emu import Machine
    from klp.objects import KlpFunc


@dataclass(frozen=True)
class Hazard:
    """A function that is unsafe to patch, and why."""

    function: str
    reason: str


def no_rip_switches(switches: list[StackSwitch]) -> dict[str, StackSwitch]:
    """The functions whose stack switch saves no resume address, by name."""
    return {s.function.name: s for s in switches if not s.saves_rip}


def inlined_into(path: str | os.PathLike[str], containers: set[str]) -> dict[str, set[str]]:
    """{function: containers it was inlined into}, from the image's DWARF.

    Empty if the image has no debug info. Imports pyelftools' DWARF reader
    (the only user of it at run time), so only the commands that ask load it."""
    found: dict[str, set[str]] = {}
    if not containers:
        return found
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as f:
        elf = ELFFile(f)
        if not elf.has_dwarf_info():
            return found
        dwarf = elf.get_dwarf_info()
        for cu in dwarf.iter_CUs():
            for die in cu.get_top_DIE().iter_children():
                if die.tag != "DW_TAG_subprogram" or "DW_AT_low_pc" not in die.attributes:
                    continue
                name = die_name(die)
                if name in containers:
                    for inl in _inlined(die):
                        found.setdefault(inl, set()).add(name)
    return found


def die_name(die) -> str | None:
    while die is not None:
        if "DW_AT_name" in die.attributes:
            return die.attributes["DW_AT_name"].value.decode()
        ref = die.attributes.get("DW_AT_abstract_origin") or die.attributes.get("DW_AT_specification")
        die = die.get_DIE_from_attribute(ref.name) if ref is not None else None
    return None


def _inlined(die):
    for child in die.iter_children():
        if child.tag == "DW_TAG_inlined_subroutine":
            name = die_name(child)
            if name:
                yield name
        yield from _inlined(child)


def image_hazards(path: str | os.PathLike[str]) -> list[Hazard]:
    """What `klpemu hazards` lists for a kernel image, in address order of the
    function where possible: stack switches without a saved RIP, what gcc
    inlined into them, and functions without an fentry site (notrace).
    ImageError when PATH is not an ELF image (the parser's message names the
    file) or not a kernel's."""
    from elftools.common.exceptions import ELFError
    image = ElfImage(path)
    missing = [name for name in KERNEL_SYMBOLS if image.find_symbol(name) is None]
    if missing:
        raise ImageError(f"{os.fspath(path)} is not a kernel image: it has no {' or '.join(missing)}")
    try:
        return [*switch_hazards(image), *(Hazard(name, NOTRACE) for name in _notrace(image))]
    except (ImageError, ELFError) as exc:
        raise ImageError(f"{os.fspath(path)} is not a kernel image: {exc}") from None


NOTRACE = "notrace: no fentry site"
KERNEL_SYMBOLS = ("start_kernel", "__schedule")   # what every vmlinux has, and no other image


def switch_hazards(image: ElfImage) -> list[Hazard]:
    """The stack switches without a saved RIP, and what gcc inlined into them."""
    switchers = no_rip_switches(stack_switches_from_elf(image))
    out = [Hazard(name, f"switches stacks without saving RIP: a task resumes at "
                        f"{name}+{s.resume_ip - s.function.start:#x} in the frame its own copy left "
                        f"({s.frame()})") for name, s in switchers.items()]
    for func, containers in sorted(inlined_into(image.path, set(switchers)).items()):
        for c in sorted(containers):
            out.append(Hazard(func, f"inlined into {c}, which switches stacks without saving RIP: "
                                    f"patch {c} (and mind its frame)"))
    return out


def _notrace(image: ElfImage) -> list[str]:
    """Functions of the image that have no __mcount_loc entry at their start."""
    sites = set(image.mcount_sites()) if image.has_section("__mcount_loc") else set()
    funcs = sorted({(s.address, s.name) for s in image.symbols if s.is_function and s.size > 0})
    return [n for v, n in funcs if v not in sites]


class SwitchCheck:
    """The check on the enable path: which patched functions would make a task
    resume in a different frame. Built once per machine (the kernel's
    switches come from its image)."""

    def __init__(self, machine: "Machine") -> None:
        self.machine = machine
        self.switchers = no_rip_switches(machine.walker.switches)
        self.inlined = inlined_into(machine.kernel.path, set(self.switchers))

    def problems(self, obj_name: str | None, func: "KlpFunc") -> list[str]:
        """Why replacing `func` is unsafe (empty: it is not)."""
        if obj_name is not None:
            return []
        old = self.switchers.get(func.old_name)
        if old is None:
            return [f"function '{func.old_name}' is inlined into '{c}', which switches stacks "
                    f"without saving RIP: patch '{c}' instead"
                    for c in sorted(self.inlined.get(func.old_name, ()))]
        new = self.switch_of(func)
        if new is None:
            return [f"function '{func.old_name}' switches stacks without saving RIP, and its "
                    f"replacement does not switch at the same point: a task sleeping in it "
                    f"would resume in a different frame"]
        if (new.frame_size, new.saved_regs) != (old.frame_size, old.saved_regs):
            return [f"function '{func.old_name}' switches stacks without saving RIP: a task "
                    f"sleeping in it would resume in a different frame "
                    f"(old: {old.frame()}; new: {new.frame()})"]
        return []

    def switch_of(self, func: "KlpFunc") -> StackSwitch | None:
        """The no-RIP stack switch of the replacement function, from its code."""
        loc = self.machine.kallsyms.lookup(func.new_func)
        if loc is None:
            return None
        sym = FunctionSym(loc.symbol.name, func.new_func, func.new_size)
        read = self.machine.mem.read
        hints = []
        mod = self.machine.modules.modules.get(loc.module) if loc.module else None
        if mod is not None and HINTS_SECTION in mod.image.sections:
            hints = parse_hints(read(*mod.image.sections[HINTS_SECTION]))
        return next((s for s in find_stack_switches([sym], read, hints) if not s.saves_rip), None)



class ResumeWatch:
    """After an overridden switch_to/RIP refusal: watch every switch of the
    old and the new function, and say when a task resumes in a copy other
    than the one it went to sleep in (the moment the hazard bites; the
    oops, if any, follows)."""

    def __init__(self, machine: "Machine", log: Callable[[str], None]) -> None:
        self.machine = machine
        self.log = log
        self.copies: dict[int, str] = {}        # a switch's load_ip -> which copy it is
        self.slept_in: dict[int, str] = {}      # task -> the copy it switched out in
        self.mismatches: list[str] = []

    def watch(self, old: StackSwitch, new: StackSwitch, old_copy: str, new_copy: str) -> None:
        for switch, copy in ((old, old_copy), (new, new_copy)):
            if switch.load_ip in self.copies:
                continue
            self.copies[switch.load_ip] = copy
            for cpu in self.machine.cpus:
                cpu.engine.hook_code_at(switch.load_ip, lambda c=cpu, ip=switch.load_ip: self._switch(c, ip))
        self.default = old_copy

    def _switch(self, cpu: "Cpu", load_ip: int) -> None:
        """At `mov rsp, [next->thread.sp]`: prev (current) sleeps in this copy;
        next (rsi, switch_to()'s operand) resumes in it."""
        copy = self.copies[load_ip]
        prev, nxt = self.machine.current_task(cpu), cpu.engine.reg("rsi")
        self.slept_in[prev] = copy
        slept = self.slept_in.get(nxt, self.default)
        if slept != copy:
            task = TaskView(self.machine.prog, nxt)
            text = (f"UNSAFE: {task.comm}:{task.pid} went to sleep in {slept} and resumes in {copy}, "
                    f"on the frame {slept} left (switch_to/RIP hazard) on CPU {cpu.index}")
            self.mismatches.append(text)
            self.log(text)
