"""Shadow variables (kernel/livepatch/shadow.c) and system states
(kernel/livepatch/state.c) at kernel parity. The tests call the guest's own
klp_shadow_*() and klp_get_*state() through Machine.call(); the ctor and
dtor are klpemu_shadow_probe's guest code, which records how it was called.
The ported selftests (test-shadow-vars.sh, test-state.sh) run in
test_selftests.py."""
from __future__ import annotations

import errno

import pytest

from emu import Machine
from emu.trace.ftrace import FtraceOps
from klp_helpers import Session, errno_of
from ptr_hash import hashed_pointer
from klpemu.scenario import FIXTURE_MODULES

GFP_KERNEL, GFP_ATOMIC = 0x0CC0, 0x0820
SHADOW_HEADER = 24                   # struct klp_shadow before data[]: next, obj, id
PROBE = "klpemu_shadow_probe"
S1, S2, S3 = "test_klp_state", "test_klp_state2", "test_klp_state3"
MOTORMOUTH = 15


def ptr(value: int) -> int:
    """A pointer returned by Machine.call() (a signed long) as an address."""
    return value & 0xFFFF_FFFF_FFFF_FFFF


class Shadow:
    """The shadow API of one booted machine, with the probe's ctor and dtor."""

    def __init__(self) -> None:
        self.m = Machine(cpus=2, seed=0).boot()
        self.m.insmod(FIXTURE_MODULES / f"{PROBE}.ko")
        self.ctor, self.dtor = self.sym("probe_ctor"), self.sym("probe_dtor")

    def sym(self, name: str) -> int:
        return self.m.kallsyms.find(name, module=PROBE).address

    def probe(self, name: str) -> int:
        return self.m.mem.read_u64(self.sym(f"probe_{name}"))

    def buffer(self, value: int = 0) -> int:
        """Guest memory holding one long: an object, or ctor_data."""
        addr = ptr(self.m.call("kzalloc", 8, GFP_KERNEL))
        self.m.mem.write_u64(addr, value)
        return addr

    def get(self, obj: int, sv_id: int) -> int:
        return ptr(self.m.call("klp_shadow_get", obj, sv_id))

    def alloc(self, obj: int, sv_id: int, ctor_data: int, gfp: int = GFP_KERNEL, *,
              or_get: bool = False, ctor: int | None = None) -> int:
        fn = "klp_shadow_get_or_alloc" if or_get else "klp_shadow_alloc"
        return ptr(self.m.call(fn, obj, sv_id, 8, gfp, self.ctor if ctor is None else ctor, ctor_data))

    def dmesg_lines(self) -> list[str]:
        return [r.text for r in self.m.dmesg_log.records()]


@pytest.fixture(scope="module")
def sh() -> Shadow:
    return Shadow()


# ---------------------------------------------------------------- shadow variables
def test_alloc_runs_the_ctor_under_the_lock_and_get_finds_the_data(sh: Shadow) -> None:
    obj, cdata = sh.buffer(), sh.buffer(0x1122334455667788)
    calls = sh.probe("ctor_calls")
    assert sh.get(obj, 0x10) == 0
    data = sh.alloc(obj, 0x10, cdata)
    assert data and sh.m.mem.read_u64(data) == 0x1122334455667788
    assert sh.probe("ctor_calls") == calls + 1
    assert (sh.probe("ctor_obj"), sh.probe("ctor_data")) == (obj, data)
    assert sh.probe("ctor_irqs_off") == 1          # spin_lock_irqsave held around it
    assert sh.get(obj, 0x10) == data
    assert sh.get(obj, 0x11) == 0 and sh.get(sh.buffer(), 0x10) == 0


def test_alloc_without_a_ctor_gives_zeroed_data(sh: Shadow) -> None:
    obj = sh.buffer()
    calls = sh.probe("ctor_calls")
    data = sh.alloc(obj, 0x12, 0, ctor=0)
    assert data and sh.m.mem.read_u64(data) == 0
    assert sh.probe("ctor_calls") == calls and sh.get(obj, 0x12) == data


def test_the_gfp_flags_reach_the_allocator(sh: Shadow) -> None:
    seen: list[tuple[int, int]] = []
    ops = FtraceOps("kzalloc-args", 0, callback=sh.m.ftrace.python_callback(
        lambda cpu: seen.append((cpu.engine.reg("rdi"), cpu.engine.reg("rsi")))))
    site = sh.m.ftrace.site_of("kzalloc")
    assert sh.m.ftrace.register(ops, site) == 0
    try:
        sh.alloc(sh.buffer(), 0x13, sh.buffer(1), GFP_ATOMIC)
    finally:
        sh.m.ftrace.unregister(ops, site)
    assert (8 + SHADOW_HEADER, GFP_ATOMIC) in seen


def test_a_duplicate_alloc_warns_and_returns_null_without_the_ctor(sh: Shadow) -> None:
    obj = sh.buffer()
    data = sh.alloc(obj, 0x14, sh.buffer(7))
    calls, before = sh.probe("ctor_calls"), len(sh.dmesg_lines())
    assert sh.alloc(obj, 0x14, sh.buffer(8)) == 0
    assert sh.probe("ctor_calls") == calls
    new = sh.dmesg_lines()[before:]
    assert new[:2] == ["------------[ cut here ]------------",
                       f"Duplicate shadow variable <{hashed_pointer(sh.m, obj)}, 14>"]
    assert new[2].startswith("WARNING: CPU: ")
    assert sh.get(obj, 0x14) == data and sh.m.mem.read_u64(data) == 7


def test_get_or_alloc_returns_the_existing_variable_silently(sh: Shadow) -> None:
    obj = sh.buffer()
    data = sh.alloc(obj, 0x15, sh.buffer(5), or_get=True)
    assert data and sh.m.mem.read_u64(data) == 5
    calls, before = sh.probe("ctor_calls"), len(sh.dmesg_lines())
    assert sh.alloc(obj, 0x15, sh.buffer(6), or_get=True) == data
    assert sh.probe("ctor_calls") == calls and sh.dmesg_lines()[before:] == []
    assert sh.m.mem.read_u64(data) == 5


def test_a_failing_ctor_frees_the_variable_and_logs_the_error(sh: Shadow) -> None:
    obj = sh.buffer()
    before = len(sh.dmesg_lines())
    assert sh.alloc(obj, 0x16, 0) == 0                     # the probe's ctor fails: -ENOMEM
    assert sh.dmesg_lines()[before:] == [
        f"livepatch: Failed to construct shadow variable <{hashed_pointer(sh.m, obj)}, 16> (-12)"]
    assert sh.get(obj, 0x16) == 0
    assert sh.alloc(obj, 0x16, sh.buffer(3)) != 0          # nothing was left behind


def test_free_calls_the_dtor_with_obj_and_data_then_forgets_the_variable(sh: Shadow) -> None:
    obj = sh.buffer()
    data = sh.alloc(obj, 0x17, sh.buffer(0xABCD))
    other = sh.alloc(obj, 0x18, sh.buffer(1))
    calls = sh.probe("dtor_calls")
    sh.m.call("klp_shadow_free", obj, 0x17, sh.dtor, returns="void")
    assert sh.probe("dtor_calls") == calls + 1
    assert (sh.probe("dtor_obj"), sh.probe("dtor_data"), sh.probe("dtor_value")) == (obj, data, 0xABCD)
    assert sh.get(obj, 0x17) == 0 and sh.get(obj, 0x18) == other
    sh.m.call("klp_shadow_free", obj, 0x17, sh.dtor, returns="void")   # gone: no dtor
    sh.m.call("klp_shadow_free", obj, 0x18, 0, returns="void")         # no dtor given
    assert sh.probe("dtor_calls") == calls + 1 and sh.get(obj, 0x18) == 0


def test_free_all_frees_every_object_with_that_id_only(sh: Shadow) -> None:
    objs = [sh.buffer() for _ in range(3)]
    for i, obj in enumerate(objs):
        sh.alloc(obj, 0x19, sh.buffer(i))
    keep = sh.alloc(objs[0], 0x1A, sh.buffer(9))
    calls = sh.probe("dtor_calls")
    sh.m.call("klp_shadow_free_all", 0x19, sh.dtor, returns="void")
    assert sh.probe("dtor_calls") == calls + 3
    assert [sh.get(obj, 0x19) for obj in objs] == [0, 0, 0]
    assert sh.get(objs[0], 0x1A) == keep
    sh.m.call("klp_shadow_free_all", 0x1A, 0, returns="void")
    assert sh.get(objs[0], 0x1A) == 0 and sh.probe("dtor_calls") == calls + 3


# ---------------------------------------------------------------- system states
class States(Session):
    """A Session that reads the patches' states and the console loglevel."""

    def state_data(self, name: str) -> int:
        state = self.patch(name).states[0]
        return self.m.mem.read_u64(state.struct + self.m.offsets["KLP_STATE_data"])

    def console_loglevel(self) -> int:
        return self.m.mem.read_u32(self.m.symbol_address("console_printk"))

    def insmod_refused(self, name: str, args: str = "") -> int:
        return errno_of(self.m.insmod, FIXTURE_MODULES / f"{name}.ko", args)


@pytest.fixture(scope="module")
def st() -> States:
    return States()


def test_get_state_finds_the_patch_own_states_only(st: States) -> None:
    st.run(f"load_lp {S1}")
    patch = st.patch(S1)
    assert ptr(st.m.call("klp_get_state", patch.struct, 1)) == patch.states[0].struct
    assert st.m.call("klp_get_state", patch.struct, 2) == 0
    assert st.console_loglevel() == MOTORMOUTH             # fix_console_loglevel ran
    st.run(f"disable_lp {S1}\nunload_lp {S1}")
    assert st.console_loglevel() == 7


def test_get_prev_state_outside_a_transition_warns_once_and_returns_null(st: States) -> None:
    def warnings() -> int:
        return sum(r.text.startswith("WARNING: CPU: ") for r in st.m.dmesg_log.records())

    before = warnings()
    assert st.m.call("klp_get_prev_state", 1) == 0
    assert warnings() == before + 1
    assert st.m.call("klp_get_prev_state", 1) == 0         # WARN_ON_ONCE
    assert warnings() == before + 1


def test_a_cumulative_patch_takes_the_state_over_through_get_prev_state(st: States) -> None:
    st.run(f"start_test x\nload_lp {S1}")
    data = st.state_data(S1)
    st.run(f"load_lp {S2}")
    assert f"{S2}: allocate_loglevel_state: space to store console_loglevel already allocated" in st.log()
    assert f"{S2}: fix_console_loglevel: taking over the console_loglevel change" in st.log()
    assert st.state_data(S2) == data                      # the same allocation, handed on
    assert st.m.mem.read_u32(data) == 7 and st.console_loglevel() == MOTORMOUTH
    st.run(f"unload_lp {S1}\ndisable_lp {S2}\nunload_lp {S2}")
    assert st.console_loglevel() == 7


def test_an_older_state_version_with_replace_is_refused(st: States) -> None:
    st.run(f"start_test x\nload_lp {S2}")
    assert st.insmod_refused(S1) == errno.EINVAL
    assert st.log()[-1] == (f"livepatch: Livepatch patch ({S1}) is not compatible "
                            "with the already installed livepatches.")
    assert [p.name for p in st.core.patches] == [S2] and st.patch(S2).enabled
    assert st.insmod_refused("test_klp_atomic_replace", "replace=1") == errno.EINVAL  # drops the state
    st.run(f"load_lp {S3}")                                # same version: compatible
    assert [p.name for p in st.core.patches] == [S3]
    st.run("load_lp test_klp_livepatch")                   # no state, no replace: compatible
    st.run(f"disable_lp test_klp_livepatch\nunload_lp test_klp_livepatch\n"
           f"unload_lp {S2}\ndisable_lp {S3}\nunload_lp {S3}")
    assert st.core.patches == [] and st.console_loglevel() == 7
