"""The guest kernel's API as module sources use it, on the running guest:
completions and mutexes whose waiters really sleep, jiffies that start at
INITIAL_JIFFIES and carry sleeps across the 32-bit wrap, proc_remove(), %p
hashed as lib/vsprintf.c hashes it (and `no_hash_pointers`), and the
kernel's livepatch samples (re-created in fixtures/modules with the same
names, parameters and messages) behaving as on a real kernel.

klpemu_kernel_api.ko drives kthreads from /sys/kernel/klpemu_kernel_api/
(see its source); every wait is on a condition in virtual time."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from emu import Machine, ShellError
from klp import Livepatch
from klp_helpers import MODULES, SYSFS, set_dynamic_debug
from ptr_hash import hashed_pointer

API = "/sys/kernel/klpemu_kernel_api"
HZ = 250
INITIAL_JIFFIES = (-300 * HZ) & 0xFFFFFFFF          # (unsigned long)(unsigned int)(-300*HZ)
SOURCES = Path(__file__).resolve().parent.parent / "fixtures" / "modules"
HASHED = re.compile(r"^00000000[0-9a-f]{8}$")


def api_machine(**config: object) -> Machine:
    m = Machine(cpus=2, seed=1, **config).boot()
    m.insmod(MODULES / "klpemu_kernel_api.ko")
    return m


@pytest.fixture
def api() -> Machine:
    return api_machine()


def lines(m: Machine, prefix: str = "klpemu_kernel_api: ") -> list[str]:
    return [t[len(prefix):] for t in m.dmesg_lines() if t.startswith(prefix)]


def wait_line(m: Machine, pattern: str, timeout_s: float = 5.0) -> re.Match[str]:
    """Until a line of the module matches `pattern` (a regex); its match."""
    found: list[re.Match[str]] = []

    def seen() -> bool:
        found[:] = [x for x in map(re.compile(pattern).fullmatch, lines(m)) if x]
        return bool(found)

    m.run_until(seen, timeout_s, f"a log line {pattern!r}")
    return found[0]


def kthreads(m: Machine, comm: str) -> list:
    return [t for t in m.tasks() if t.comm == comm]


def asleep_in(m: Machine, comm: str, func: str) -> bool:
    """Every kthread `comm` is in uninterruptible sleep with `func` on its stack."""
    tasks = kthreads(m, comm)
    return bool(tasks) and all(
        t.state_letter == "D" and any(f.startswith(func + "+") for f in m.walker.format(m.walker.trace(t)))
        for t in tasks)


# ------------------------------------------------------------------ jiffies

def test_jiffies_start_at_initial_jiffies(api: Machine) -> None:
    """include/linux/jiffies.h: INITIAL_JIFFIES is -300*HZ as a 32-bit value,
    so the 32-bit count wraps five minutes after boot."""
    now, initial = (int(x, 16) for x in api.read_file(f"{API}/jiffies").split())
    assert initial == INITIAL_JIFFIES == 0xFFFEDB08
    assert 0 <= now - initial <= api.clock_ns * HZ // 10**9 + 1


def test_msleep_across_the_32bit_wrap(api: Machine) -> None:
    """A sleep that starts before jiffies pass 2^32 and ends after it lasts
    what it should (msleep(2000): 500 ticks and one): timers and timeouts
    compare with time_after(), never with <."""
    api.run(299.5)
    now = int(api.read_file(f"{API}/jiffies").split()[0], 16)
    assert now < 2**32 < now + 500
    api.write_file(f"{API}/sleep", "2000")
    hit = wait_line(api, r"sleeper: 2000 ms asked, (\d+) ms slept, jiffies (\w+) -> (\w+)")
    start, end = int(hit[2], 16), int(hit[3], 16)
    assert start < 2**32 <= end
    assert int(hit[1]) == 2004 and end - start == 501


# ------------------------------------------------------------------ completions

def test_wait_for_completion_sleeps_until_complete(api: Machine) -> None:
    """A waiter sleeps (TASK_UNINTERRUPTIBLE, in wait_for_completion's
    schedule) until complete(); then it runs on and exits."""
    api.write_file(f"{API}/wait", "0")
    api.run_until(lambda: asleep_in(api, "kapi_waiter", "schedule"), 2, "the waiter to sleep")
    api.run(1)
    assert asleep_in(api, "kapi_waiter", "wait_for_common")
    assert not any(t.startswith("waiter") for t in lines(api))
    api.write_file(f"{API}/complete", "1")
    wait_line(api, "waiter: completed")
    api.run_until(lambda: not kthreads(api, "kapi_waiter"), 1, "the waiter to exit")


def test_completion_keeps_an_early_event_and_times_out(api: Machine) -> None:
    """complete() before anyone waits is kept for the next waiter, which
    goes through with all of its timeout left; a waiter with nothing to
    take times out after its timeout (msecs_to_jiffies(300) = 75 ticks)."""
    api.write_file(f"{API}/complete", "1")
    api.write_file(f"{API}/wait", "100")
    wait_line(api, r"waiter: completed, 25 jiffies left")
    start = api.clock_ns
    api.write_file(f"{API}/wait", "300")
    wait_line(api, r"waiter: timed out after 300 ms")
    stamp = next(r.timestamp_ns for r in api.dmesg_log.records() if "timed out" in r.text)
    # 75 ticks from the tick it started in: a tick's part less than 300 ms
    assert 0.296 <= (stamp - start) / 1e9 <= 0.308


def test_complete_all_lets_every_waiter_through_until_reinit(api: Machine) -> None:
    """complete_all(): the waiters there and every later one pass, until
    reinit_completion() makes the next one sleep again."""
    for _ in range(3):
        api.write_file(f"{API}/wait", "0")
    api.run_until(lambda: len(kthreads(api, "kapi_waiter")) == 3 and asleep_in(api, "kapi_waiter", "schedule"),
                  2, "three waiters asleep")
    api.write_file(f"{API}/complete", "all")
    api.run_until(lambda: lines(api).count("waiter: completed") == 3, 1, "three waiters through")
    api.write_file(f"{API}/wait", "0")
    api.run_until(lambda: lines(api).count("waiter: completed") == 4, 1, "a late waiter through")
    api.write_file(f"{API}/complete", "reinit")
    api.write_file(f"{API}/wait", "0")
    api.run(0.5)
    assert lines(api).count("waiter: completed") == 4
    assert asleep_in(api, "kapi_waiter", "wait_for_common")


def test_wait_event_timeout(api: Machine) -> None:
    """wait_event_timeout(): 0 when the time is up with the condition false;
    the jiffies left (at least 1) when a wake-up finds it true."""
    api.write_file(f"{API}/event", "200")
    wait_line(api, r"event: flag=0, 0 jiffies left")
    api.write_file(f"{API}/event", "2000")
    api.run_until(lambda: asleep_in(api, "kapi_event", "schedule"), 1, "the waiter to sleep")
    api.run(1)
    api.write_file(f"{API}/event", "set")
    hit = wait_line(api, r"event: flag=1, (\d+) jiffies left")
    assert 200 < int(hit[1]) < 500 - 240


# ------------------------------------------------------------------ mutexes

def test_mutex_waiter_sleeps_until_unlock(api: Machine) -> None:
    """A contended mutex_lock() sleeps in the slow path (no spinning: the
    task is off the CPU, TASK_UNINTERRUPTIBLE) and gets the lock when the
    owner unlocks it."""
    api.write_file(f"{API}/mutex", "hold")
    wait_line(api, "holder: locked")
    api.write_file(f"{API}/mutex", "lock")
    wait_line(api, r"locker: waiting, locked=1")
    api.run_until(lambda: asleep_in(api, "kapi_locker", "__mutex_lock_slowpath"), 1, "the locker to sleep")
    api.run(1)
    assert "locker: locked" not in lines(api)
    api.write_file(f"{API}/mutex", "release")
    api.run_until(lambda: "locker: locked" in lines(api), 1, "the locker to get the mutex")
    log = lines(api)
    assert log.index("holder: unlocked") < log.index("locker: locked")


# ------------------------------------------------------------------ proc_remove

def test_proc_remove_takes_the_directory_and_its_files(api: Machine) -> None:
    assert api.is_dir("/proc/klpemu_kernel_api")
    assert api.read_file("/proc/klpemu_kernel_api/state") == "threads 0\n"
    api.rmmod("klpemu_kernel_api")
    assert not api.exists("/proc/klpemu_kernel_api/state")
    assert not api.exists("/proc/klpemu_kernel_api")


def test_module_target_proc_file_goes_with_the_module(machine: Machine) -> None:
    """test_klp_mod_target's exit calls proc_remove() on its entry (and the
    look at the guest's table sees each change of it)."""
    assert not machine.exists("/proc/test_klp_mod_target")
    machine.insmod(MODULES / "test_klp_mod_target.ko")
    assert machine.exists("/proc/test_klp_mod_target") and "test_klp_mod_target" in machine.listdir("/proc")
    assert machine.read_file("/proc/test_klp_mod_target") == "test_klp_mod_target: original output\n"
    machine.rmmod("test_klp_mod_target")
    assert not machine.exists("/proc/test_klp_mod_target")


# ------------------------------------------------------------------ %p

def _ptr_pair(m: Machine) -> tuple[str, int]:
    hashed, raw = m.read_file(f"{API}/ptr").split()
    return hashed, int(raw, 16)


def test_plain_p_is_the_siphash_of_the_pointer_under_the_boot_key(api: Machine) -> None:
    """lib/vsprintf.c ptr_to_id(): the low 32 bits of siphash_1u64(ptr,
    ptr_key), the key filled from the random pool at boot."""
    assert api.mem.read(api.symbol_address("ptr_key"), 16) != bytes(16)
    assert api.mem.read(api.symbol_address("filled_random_ptr_key"), 1) == b"\x01"
    hashed, raw = _ptr_pair(api)
    assert HASHED.match(hashed) and hashed == hashed_pointer(api, raw)


def test_before_the_key_is_filled_p_prints_ptrval_on_the_guest_and_the_host() -> None:
    m = api_machine()
    m.mem.write(m.symbol_address("filled_random_ptr_key"), b"\x00")
    hashed, raw = m.read_file(f"{API}/ptr").split()
    assert hashed == "(____ptrval____)" == hashed_pointer(m, int(raw, 16))


def test_the_hash_is_the_same_for_the_same_boot() -> None:
    """The key comes from what the boot gives the pool (here: the command
    line), so a run replays; another command line, another key."""
    a, b = api_machine(), api_machine()
    c = api_machine(cmdline="console=ttyS0 klpemu quiet")
    assert _ptr_pair(a) == _ptr_pair(b)
    assert _ptr_pair(c)[1] == _ptr_pair(a)[1] and _ptr_pair(c)[0] != _ptr_pair(a)[0]


NOTICE = [
    "**********************************************************",
    "**   NOTICE NOTICE NOTICE NOTICE NOTICE NOTICE NOTICE   **",
    "**                                                      **",
    "** This system shows unhashed kernel memory addresses   **",
    "** via the console, logs, and other interfaces. This    **",
    "** might reduce the security of your system.            **",
    "**                                                      **",
    "** If you see this message and you are not debugging    **",
    "** the kernel, report this immediately to your system   **",
    "** administrator!                                       **",
    "**                                                      **",
    "**   NOTICE NOTICE NOTICE NOTICE NOTICE NOTICE NOTICE   **",
    "**********************************************************",
]


def test_no_hash_pointers_prints_addresses_and_warns() -> None:
    """`no_hash_pointers` (an early parameter): the kernel's notice, as
    warnings, right after the command line; then %p prints the address."""
    m = api_machine(cmdline="console=ttyS0 klpemu no_hash_pointers")
    records = m.dmesg_log.records()
    at = next(i for i, r in enumerate(records) if r.text.startswith("Command line:"))
    banner = records[at + 1:at + 1 + len(NOTICE)]
    assert [r.text for r in banner] == NOTICE
    assert {r.level for r in banner} == {4}
    hashed, raw = _ptr_pair(m)
    assert hashed == f"{raw:016x}" == hashed_pointer(m, raw)      # the host's reports follow the guest


def test_debug_boot_weak_hash() -> None:
    """`debug_boot_weak_hash`: hash_long(ptr, 32) instead of SipHash."""
    m = api_machine(cmdline="console=ttyS0 klpemu debug_boot_weak_hash")
    assert "debug_boot_weak_hash enabled" in m.dmesg_lines()
    hashed, raw = _ptr_pair(m)
    assert int(hashed, 16) == ((raw * 0x61C8864680B583EB) & (2**64 - 1)) >> 32
    assert hashed == hashed_pointer(m, raw)
    assert not any(line.startswith("**") for line in m.dmesg_lines())


# ------------------------------------------------------------------ the samples

def wait_patch(m: Machine, name: str, timeout_s: float = 5.0) -> None:
    m.run_until(lambda: m.read_file(f"{SYSFS}/{name}/transition") == "0\n", timeout_s, f"{name} to finish")


def disable(m: Machine, name: str) -> None:
    m.write_file(f"{SYSFS}/{name}/enabled", "0")
    m.run_until(lambda: not m.exists(f"{SYSFS}/{name}"), 5, f"{name} to be freed")


def sample_lines(m: Machine) -> list[str]:
    """The samples' own lines and the livepatch core's (not the taints')."""
    return [t for t in m.dmesg_lines()
            if (t.startswith(("livepatch_callbacks_", "livepatch: ", "livepatch_shadow_"))
                or re.match(r"(dummy_|cleanup_work_func)", t)) and "taint" not in t]


def test_livepatch_sample_patches_cmdline(machine: Machine) -> None:
    """samples/livepatch/livepatch-sample.c: module livepatch_sample (the
    file's name with '-' made '_'), cmdline_proc_show() replaced."""
    Livepatch.attach(machine)
    original = machine.read_file("/proc/cmdline")
    machine.insmod(MODULES / "livepatch-sample.ko")
    wait_patch(machine, "livepatch_sample")
    assert machine.read_file("/proc/cmdline") == "this has been live patched\n"
    disable(machine, "livepatch_sample")
    machine.rmmod("livepatch_sample")
    assert machine.read_file("/proc/cmdline") == original


def test_shadow_variable_demo() -> None:
    """samples/livepatch/livepatch-shadow-{mod,fix1,fix2}.c: the module
    allocates a dummy a second (leaking an int each time) and frees the
    expired ones every three seconds, with delayed work; fix1 keeps the
    leaked pointer in a shadow variable and frees it, and reports the
    dummies from before it as leaked; fix2 counts each dummy's checks in
    a second shadow variable. %p prints hashed pointers."""
    m = Machine(cpus=2, seed=1).boot()
    Livepatch.attach(m)
    m.insmod(MODULES / "livepatch-shadow-mod.ko")
    m.run(14)
    before = sample_lines(m)
    allocs = [re.fullmatch(r"dummy_alloc: dummy @ (\w+), expires @ (\w+)", t) for t in before
              if t.startswith("dummy_alloc")]
    assert len(allocs) == 14 and all(a and HASHED.match(a[1]) for a in allocs)
    expiry = [int(a[2], 16) for a in allocs]
    assert all(b - a == HZ for a, b in zip(expiry, expiry[1:]))       # one a second
    assert sum(t.startswith("cleanup_work_func: jiffies = ") for t in before) == 4
    assert not any(t.startswith("dummy_free:") for t in before)        # the first expires at 13 s

    m.insmod(MODULES / "livepatch-shadow-fix1.ko")
    wait_patch(m, "livepatch_shadow_fix1")
    m.run(7)
    m.insmod(MODULES / "livepatch-shadow-fix2.ko")
    wait_patch(m, "livepatch_shadow_fix2")
    m.run(14)
    log = sample_lines(m)[len(before):]
    old = {a[1] for a in allocs}
    leaked = [re.fullmatch(r"livepatch_shadow_fix\d: livepatch_fix\d_dummy_free: dummy @ (\w+) leaked!", t)
              for t in log if t.endswith("leaked!")]
    assert leaked and {x[1] for x in leaked} <= old
    fixed = {re.search(r"dummy @ (\w+)", t)[1] for t in log if "fix1_dummy_alloc: dummy @" in t}
    prevented = [re.fullmatch(r"livepatch_shadow_fix2: livepatch_fix2_dummy_leak_dtor: dummy @ (\w+), "
                              r"prevented leak @ (\w+)", t) for t in log if "fix2_dummy_leak_dtor" in t]
    assert prevented and {p[1] for p in prevented} <= fixed
    counters = [int(t.rsplit("= ", 1)[1]) for t in log if "check counter =" in t]
    assert counters and max(counters) >= 4

    disable(m, "livepatch_shadow_fix2")
    disable(m, "livepatch_shadow_fix1")
    for mod in ("livepatch_shadow_fix2", "livepatch_shadow_fix1", "livepatch_shadow_mod"):
        m.rmmod(mod)
    tail = sample_lines(m)
    assert any("livepatch_fix1_dummy_leak_dtor" in t for t in tail)   # klp_shadow_free_all at exit
    assert not m.oopses


CALLBACKS = """\
livepatch_callbacks_busymod: livepatch_callbacks_mod_init
livepatch_callbacks_busymod: busymod_work_func, sleeping 3 seconds ...
livepatch: enabling patch 'livepatch_callbacks_demo'
livepatch: 'livepatch_callbacks_demo': initializing patching transition
livepatch_callbacks_demo: pre_patch_callback: vmlinux
livepatch_callbacks_demo: pre_patch_callback: livepatch_callbacks_busymod -> [MODULE_STATE_LIVE] Normal state
livepatch: 'livepatch_callbacks_demo': starting patching transition
livepatch: applying patch 'livepatch_callbacks_demo' to loading module 'livepatch_callbacks_mod'
livepatch_callbacks_demo: pre_patch_callback: livepatch_callbacks_mod -> [MODULE_STATE_COMING] Full formed, running module_init
livepatch_callbacks_mod: livepatch_callbacks_mod_init
livepatch_callbacks_busymod: busymod_work_func exit
livepatch: 'livepatch_callbacks_demo': completing patching transition
livepatch_callbacks_demo: post_patch_callback: vmlinux
livepatch_callbacks_demo: post_patch_callback: livepatch_callbacks_mod -> [MODULE_STATE_LIVE] Normal state
livepatch_callbacks_demo: post_patch_callback: livepatch_callbacks_busymod -> [MODULE_STATE_LIVE] Normal state
livepatch: 'livepatch_callbacks_demo': patching complete
livepatch_callbacks_mod: livepatch_callbacks_mod_exit
livepatch_callbacks_demo: pre_unpatch_callback: livepatch_callbacks_mod -> [MODULE_STATE_GOING] Going away
livepatch: reverting patch 'livepatch_callbacks_demo' on unloading module 'livepatch_callbacks_mod'
livepatch_callbacks_demo: post_unpatch_callback: livepatch_callbacks_mod -> [MODULE_STATE_GOING] Going away
livepatch: applying patch 'livepatch_callbacks_demo' to loading module 'livepatch_callbacks_mod'
livepatch_callbacks_demo: pre_patch_callback: livepatch_callbacks_mod -> [MODULE_STATE_COMING] Full formed, running module_init
livepatch: pre-patch callback failed for object 'livepatch_callbacks_mod'
livepatch: patch 'livepatch_callbacks_demo' failed for module 'livepatch_callbacks_mod', refusing to load module 'livepatch_callbacks_mod'
livepatch: 'livepatch_callbacks_demo': initializing unpatching transition
livepatch_callbacks_demo: pre_unpatch_callback: vmlinux
livepatch_callbacks_demo: pre_unpatch_callback: livepatch_callbacks_busymod -> [MODULE_STATE_LIVE] Normal state
livepatch: 'livepatch_callbacks_demo': starting unpatching transition
livepatch: 'livepatch_callbacks_demo': completing unpatching transition
livepatch_callbacks_demo: post_unpatch_callback: vmlinux
livepatch_callbacks_demo: post_unpatch_callback: livepatch_callbacks_busymod -> [MODULE_STATE_LIVE] Normal state
livepatch: 'livepatch_callbacks_demo': unpatching complete
livepatch_callbacks_busymod: livepatch_callbacks_mod_exit
"""


def test_callbacks_demo_with_its_two_target_modules(machine: Machine) -> None:
    """samples/livepatch/livepatch-callbacks-{demo,mod,busymod}.c, the
    demo's own walk-through: busymod parks a kworker in busymod_work_func()
    for sleep_secs, which holds the transition until it wakes; mod loads
    during the transition; pre_patch_ret=-19 then refuses mod's next load
    with -ENODEV."""
    m = machine
    Livepatch.attach(m)
    set_dynamic_debug(m)                          # the walk-through's transition lines
    m.insmod(MODULES / "livepatch-callbacks-busymod.ko", "sleep_secs=3")
    m.run(0.5)
    m.insmod(MODULES / "livepatch-callbacks-demo.ko")
    m.run(0.5)
    m.insmod(MODULES / "livepatch-callbacks-mod.ko")
    assert m.read_file(f"{SYSFS}/livepatch_callbacks_demo/transition") == "1\n"
    wait_patch(m, "livepatch_callbacks_demo")
    m.write_file("/sys/module/livepatch_callbacks_demo/parameters/pre_patch_ret", "-19")
    m.rmmod("livepatch_callbacks_mod")
    with pytest.raises(ShellError) as exc:
        m.insmod(MODULES / "livepatch-callbacks-mod.ko")
    assert exc.value.errno == 19
    disable(m, "livepatch_callbacks_demo")
    m.rmmod("livepatch_callbacks_demo")
    m.rmmod("livepatch_callbacks_busymod")
    assert "\n".join(sample_lines(m)) + "\n" == CALLBACKS


# ------------------------------------------------------------------ klpemu build

KERNEL_STYLE = sorted([*SOURCES.glob("test_klp_*.c"), *SOURCES.glob("livepatch-*.c")])


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_klpemu_build_compiles_the_kernel_style_fixtures(tmp_path: Path) -> None:
    """Every re-created selftest module and sample builds with `klpemu build`
    as it is, into the same code the fixtures' Makefile makes; and the
    result loads (livepatch_sample, built so, patches /proc/cmdline)."""
    from klpemu.build.compile import build_module

    assert len(KERNEL_STYLE) >= 20
    for src in KERNEL_STYLE:
        name = src.stem.replace("-", "_")
        built = build_module([src], tmp_path / f"{name}.ko")
        with built.open("rb") as a, (MODULES / f"{src.stem}.ko").open("rb") as b:
            text = [ELFFile(f).get_section_by_name(".text").data() for f in (a, b)]
        assert text[0] == text[1], src.name
    m = Machine(cpus=2, seed=0).boot()
    Livepatch.attach(m)
    m.insmod(tmp_path / "livepatch_sample.ko")
    wait_patch(m, "livepatch_sample")
    assert m.read_file("/proc/cmdline") == "this has been live patched\n"
