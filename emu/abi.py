"""The guest ABI constants, read from the one header that defines them.

`fixtures/include/klpemu/abi.h` is shared by the guest's C and asm and by
Python, so hypercall numbers, vectors and the memory layout have one home.

FIXTURES is the guest: `fixtures/` beside the packages in a source tree,
`emu/guest/` in an installed wheel (pyproject.toml maps one to the other).
"""
from __future__ import annotations

import re
from pathlib import Path


def _guest_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "guest", here.parent / "fixtures"):
        if (candidate / "include" / "klpemu" / "abi.h").is_file():
            return candidate
    raise ImportError(f"klpemu's guest (fixtures/ or emu/guest/ with include/klpemu/abi.h) is not "
                      f"beside {here}: a broken install?")


FIXTURES = _guest_dir()
ABI_HEADER = FIXTURES / "include" / "klpemu" / "abi.h"

_DEFINE = re.compile(r"^#define\s+([A-Za-z_][A-Za-z0-9_]*)\s+(0x[0-9a-fA-F]+|\d+)\b", re.M)


def _read_defines(path: Path) -> dict[str, int]:
    return {name: int(value, 0) for name, value in _DEFINE.findall(path.read_text())}


_ABI = _read_defines(ABI_HEADER)


def abi(name: str) -> int:
    """The value of a #define in abi.h; KeyError names what is missing."""
    try:
        return _ABI[name]
    except KeyError:
        raise KeyError(f"{name} is not defined in {ABI_HEADER}") from None


HYPERCALLS = {name: value for name, value in _ABI.items() if name.startswith("HC_")}
NR = {name: value for name, value in _ABI.items() if name.startswith("__NR_")}   # system call numbers
O_ACCMODE, O_RDONLY, O_WRONLY = abi("O_ACCMODE"), abi("O_RDONLY"), abi("O_WRONLY")
O_CREAT, O_TRUNC, O_APPEND, O_NONBLOCK = abi("O_CREAT"), abi("O_TRUNC"), abi("O_APPEND"), abi("O_NONBLOCK")
LOCAL_TIMER_VECTOR = abi("LOCAL_TIMER_VECTOR")
RESCHEDULE_VECTOR = abi("RESCHEDULE_VECTOR")
DOORBELL_VECTOR = abi("DOORBELL_VECTOR")
PAGE_OFFSET = abi("PAGE_OFFSET")
KERNEL_VIRT_BASE = abi("KERNEL_VIRT_BASE")
MODULES_VADDR = abi("MODULES_VADDR")
USER_BASE = abi("USER_BASE")
USER_END = abi("USER_END")
USER_STACKS_TOP = abi("USER_STACKS_TOP")
VMAP_STACK_START = abi("VMAP_STACK_START")
VMAP_STACK_PT_PHYS = abi("VMAP_STACK_PT_PHYS")
VMAP_STACK_PTES_PHYS = abi("VMAP_STACK_PTES_PHYS")
VMAP_STACK_SLOTS = abi("VMAP_STACK_SLOTS")
KERNEL_CS = abi("__KERNEL_CS")
KERNEL_DS = abi("__KERNEL_DS")
USER_CS = abi("__USER_CS")
USER_DS = abi("__USER_DS")
THREAD_SIZE = abi("THREAD_SIZE")
NR_CPUS = abi("NR_CPUS")
HZ = abi("HZ")
