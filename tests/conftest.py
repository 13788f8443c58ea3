import pytest

from emu import Machine


@pytest.fixture
def machine() -> Machine:
    """A booted 2-CPU machine (seed 0)."""
    return Machine(cpus=2, seed=0).boot()


@pytest.fixture
def demo_machine() -> Machine:
    """A booted 2-CPU machine with busy demo tasks (a computing kthread,
    a getpid-hammering user task, a sleeping user task)."""
    return Machine(cpus=2, seed=3, cmdline="console=ttyS0 klpemu.demo=1").boot()
