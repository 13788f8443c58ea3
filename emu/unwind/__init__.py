"""An objtool/ORC-style unwinder: CFA tables from disassembly, and stack walks.

Typical use::

    tables = tables_from_elf("fixtures/build/vmlinux-modern")
    trace = walk(tables, read_u64, StartState(ip, sp, bp), (stack_low, stack_high))
    if not trace.reliable:
        print(trace.reason)
"""

from emu.unwind.cfa import track_function
from emu.unwind.elf import stack_switches_from_elf, tables_from_elf
from emu.unwind.entry import Entry
from emu.unwind.hints import HINTS_SECTION, Hint, HintType, SpReg, parse_hints
from emu.unwind.switches import StackSwitch, find_stack_switches
from emu.unwind.tables import FunctionSym, UnwindTables, build_tables
from emu.unwind.walk import (DEFAULT_MAX_FRAMES, IRET_FRAME_SIZE, PT_REGS_SIZE, RULES, Frame, FrameKind,
                             StackTrace, StartState, walk, walk_best_effort)

__all__ = [
    "DEFAULT_MAX_FRAMES", "Entry", "Frame", "FrameKind", "FunctionSym", "HINTS_SECTION",
    "Hint", "HintType", "IRET_FRAME_SIZE", "PT_REGS_SIZE", "RULES", "SpReg", "StackSwitch", "StackTrace",
    "StartState", "UnwindTables", "build_tables", "find_stack_switches", "parse_hints",
    "stack_switches_from_elf", "tables_from_elf",
    "track_function", "walk", "walk_best_effort",
]
