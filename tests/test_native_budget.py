"""The quantum budget hook: the native library (built by the install) and its
Python fallback stop real code at the same block with the same budget left."""
from __future__ import annotations

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_ALL, Uc
from unicorn import x86_const as x86

from emu.arch import native
from emu.arch.native import BlockBudget

BASE = 0x10000
# loop: inc rax; add rbx, rax; cmp rax, 1000000; jne loop; hlt (a 14-byte block)
LOOP = bytes.fromhex("48ffc0" "4801c3" "483d40420f00" "75f2") + b"\xf4"


def _stop_point(budget_bytes: int) -> tuple[int, int, int, int]:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(BASE, 0x1000, UC_PROT_ALL)
    uc.mem_write(BASE, LOOP)
    budget = BlockBudget(uc)
    budget.arm(budget_bytes)
    uc.emu_start(BASE, BASE + 0x800)
    return uc.reg_read(x86.UC_X86_REG_RIP), uc.reg_read(x86.UC_X86_REG_RAX), budget.remaining, budget.blocks


@pytest.fixture(params=["native", "fallback"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("KLPEMU_NATIVE", "1" if request.param == "native" else "0")
    native.library.cache_clear()
    yield request.param
    native.library.cache_clear()


def test_the_install_built_the_native_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KLPEMU_NATIVE", raising=False)
    native.library.cache_clear()
    assert native.library() is not None, "emu/arch/native/native.c was not built by the install"
    monkeypatch.setenv("KLPEMU_NATIVE", "0")      # the switch to the fallback
    native.library.cache_clear()
    assert native.library() is None
    native.library.cache_clear()


@pytest.mark.parametrize("budget_bytes", [1, 14, 15, 1000, 140_000])
def test_budget_stops_at_a_block_boundary(mode: str, budget_bytes: int) -> None:
    rip, rax, remaining, blocks = _stop_point(budget_bytes)
    assert rip == BASE                           # stopped as a block was about to start
    assert rax == blocks                         # one loop iteration per block started
    assert remaining <= 0 and remaining == budget_bytes - 14 * blocks
    assert (native.library() is not None) == (mode == "native")


def test_native_and_fallback_stop_at_the_same_instruction(monkeypatch: pytest.MonkeyPatch) -> None:
    points = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("KLPEMU_NATIVE", flag)
        native.library.cache_clear()
        points[flag] = _stop_point(70_001)
    native.library.cache_clear()
    assert points["1"] == points["0"]


def test_the_hooks_state_lives_as_long_as_the_unicorn_instance(mode: str) -> None:
    """The C hook keeps a pointer to its budget: dropping the BlockBudget
    object must not free it (the stop still comes where the budget says)."""
    import gc
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(BASE, 0x1000, UC_PROT_ALL)
    uc.mem_write(BASE, LOOP)
    BlockBudget(uc).arm(140)
    gc.collect()
    _ = [bytearray(64) for _ in range(10_000)]        # reuse freed memory, if it was freed
    uc.emu_start(BASE, BASE + 0x800)
    assert uc.reg_read(x86.UC_X86_REG_RAX) == 10


def test_a_library_built_from_an_older_native_c_is_refused_with_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A hook the library does not export (the build predates it): the
    Python fallbacks run, and a warning says to rebuild."""
    monkeypatch.delenv("KLPEMU_NATIVE", raising=False)
    monkeypatch.setattr(native, "HOOKS", (*native.HOOKS, "klpemu_hook_of_a_newer_native_c"))
    native.library.cache_clear()
    try:
        with caplog.at_level("WARNING"):
            assert native.library() is None
    finally:
        native.library.cache_clear()
    assert "lacks klpemu_hook_of_a_newer_native_c (built from an older native.c)" in caplog.text
    assert "rebuild it with `pip install -e .`" in caplog.text
