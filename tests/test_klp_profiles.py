"""Kernel version profiles (klp/profiles.py): the seed scenarios of
scenarios/history/ and the kernel selftests that existed in a generation,
each under the profiles where it applies, with the output that kernel
printed."""
import errno
import io
import re
import shutil
from pathlib import Path

import pytest

from emu import Machine, ShellError
from klp import Livepatch
from klp_helpers import set_dynamic_debug
from klp.errors import LivepatchError
from klp.profiles import PROFILES, get_profile
from klpemu.scenario import ScenarioRunner

ROOT = Path(__file__).resolve().parent.parent
HISTORY = ROOT / "scenarios" / "history"
SELFTESTS = ROOT / "scenarios" / "selftests"

# the selftests (new in 5.1) whose modules and API each profile has
APPLICABLE = {
    "4.15": ["test-shadow-vars"],
    "5.1": ["test-livepatch", "test-callbacks", "test-shadow-vars"],
}


def run(text: str, version: str, cpus: int = 2, script: Path | None = None) -> tuple[int, str, Machine]:
    """TEXT (SCRIPT's, when given: it sources the functions.sh beside it)."""
    m = Machine(cpus=cpus, seed=0).boot()
    out = io.StringIO()
    result = ScenarioRunner(m, out, klp_version=version).run_text(text, script=script)
    return result.exit_code, out.getvalue(), m


def beside_5x_helpers(tmp_path: Path, name: str, text: str) -> Path:
    """NAME.sh with TEXT, next to the functions.sh of the kernels before 6.9 (modprobe)."""
    shutil.copy(HISTORY / "functions.sh", tmp_path / "functions.sh")
    script = tmp_path / f"{name}.sh"
    script.write_text(text)
    return script


def before_6_9(script: str) -> str:
    """The script as the selftests before 6.9 wrote it: modules loaded with
    modprobe, so its log lines and error text are modprobe's."""
    script = re.sub(r"% insmod test_modules/(\S+?)\.ko", r"% modprobe \1", script)
    script = re.sub(r"insmod: ERROR: could not insert module test_modules/(\S+?)\.ko:",
                    r"modprobe: ERROR: could not insert '\1':", script)
    return re.sub(r"(modprobe: ERROR: could not insert '\S+': )Invalid parameters", r"\1Invalid argument", script)


def passed(report: str) -> int:
    """check_result's `ok`s (a command's output may come before one)."""
    return len(re.findall(r"(?:^|\.\.\. )ok$", report, re.M))


@pytest.mark.parametrize("script, version", [
    ("stacking-4.15", "4.15"), ("stacking-5.1", "5.1"),
    ("immediate-4.12", "4.12"), ("replace-callbacks-5.1", "5.1"),
])
def test_seed_scenario(script: str, version: str) -> None:
    text = (HISTORY / f"{script}.sh").read_text()
    code, report, m = run(text, version, script=HISTORY / f"{script}.sh")
    assert code == 0, report + "\n" + m.dmesg()
    assert passed(report) == text.count("\nstart_test ")


@pytest.mark.parametrize("version, name", [(v, n) for v, names in APPLICABLE.items() for n in names])
def test_selftest_under_profile(version: str, name: str, tmp_path: Path) -> None:
    text = before_6_9((SELFTESTS / f"{name}.sh").read_text())
    code, report, m = run(text, version, script=beside_5x_helpers(tmp_path, name, text))
    assert code == 0, report + "\n" + m.dmesg()
    assert " ... not ok" not in report
    assert passed(report) == text.count("\nstart_test ")


def test_current_is_default() -> None:
    m = Machine(cpus=1, seed=0).boot()
    assert Livepatch.attach(m).profile == get_profile("current") == PROFILES["6.13"]
    with pytest.raises(LivepatchError, match="already reproduces"):
        Livepatch.attach(m, klp_version="4.15")


@pytest.mark.parametrize("version", ["5.1", "6.13"])
def test_register_api_is_an_unknown_symbol_from_5_1(version: str, tmp_path: Path) -> None:
    text = ". $(dirname $0)/functions.sh\nload_failing_mod klpemu_old_test_klp\n" if version == "5.1" else \
        "load_failing_mod klpemu_old_test_klp\n"
    code, report, m = run(text, version, script=beside_5x_helpers(tmp_path, "t", text))
    assert code == 0, report
    assert "klpemu_old_test_klp: Unknown symbol klp_register_patch (err -2)" in m.dmesg()
    expected = ("modprobe: ERROR: could not insert 'klpemu_old_test_klp': Unknown symbol in module, "
                "or unknown parameter (see dmesg)") if version == "5.1" else \
        "insmod: ERROR: could not insert module test_modules/klpemu_old_test_klp.ko: Unknown symbol in module"
    assert expected in m.dmesg()


def test_4_11_switches_at_once_and_reenables() -> None:
    """No consistency model: enable and disable switch every task at once;
    `enabled` is writable both ways; only `enabled` in sysfs."""
    P = "klpemu_old_test_klp"
    code, report, m = run(f"""load_lp {P}
cat /proc/cmdline
disable_lp {P}
cat /proc/cmdline
echo 1 > /sys/kernel/livepatch/{P}/enabled
cat /proc/cmdline
""", "4.11")
    assert code == 0, report
    assert report.split("\n")[:3] == [f"{P}: this has been live patched", "console=ttyS0 klpemu",
                                      f"{P}: this has been live patched"]
    lines = [ln.split("] ", 1)[1] for ln in m.dmesg().splitlines() if "livepatch: " in ln]
    assert lines == [f"livepatch: enabling patch '{P}'", f"livepatch: disabling patch '{P}'",
                     f"livepatch: enabling patch '{P}'"]
    assert m.read_file(f"/sys/module/{P}/refcnt") == "1\n"   # taken at register, never dropped
    assert not m.exists("/proc/1/patch_state")


def test_sysfs_attributes_by_profile() -> None:
    """`transition` from 4.12, `force` from 4.15, `signal` only in 4.15-5.0."""
    assert "signal" in _attrs("4.15") and "signal" not in _attrs("5.1")
    assert "force" in _attrs("4.15") and "force" not in _attrs("4.12")
    assert "transition" not in _attrs("4.11")


def _attrs(version: str) -> list[str]:
    m = Machine(cpus=1, seed=0).boot()
    Livepatch.attach(m, klp_version=version)
    set_dynamic_debug(m)
    name = "klpemu_old_test_klp" if get_profile(version).register_api else "test_klp_livepatch"
    m.insmod(str(ROOT / "fixtures" / "build" / "modules" / f"{name}.ko"))
    return m.vfs.listdir(f"/sys/kernel/livepatch/{name}")


def test_4_15_signal_attribute_signals_the_waiting_tasks() -> None:
    """4.15-5.0: writing 1 to `signal` during a transition logs the notice
    (every time) and sends the fake signal; with no transition it is -EINVAL."""
    P = "klpemu_old_test_klp"
    m = Machine(cpus=2, seed=0).boot()
    Livepatch.attach(m, klp_version="4.15")
    m.insmod(str(ROOT / "fixtures" / "build" / "modules" / f"{P}.ko"))
    assert m.read_file(f"/sys/kernel/livepatch/{P}/transition") == "1\n"   # the other CPU's idle task runs
    m.write_file(f"/sys/kernel/livepatch/{P}/signal", "1")
    m.write_file(f"/sys/kernel/livepatch/{P}/signal", "1")
    notices = [line for line in m.dmesg_lines() if line == "livepatch: signaling remaining tasks"]
    assert len(notices) == 2
    m.run_until(lambda: m.read_file(f"/sys/kernel/livepatch/{P}/transition") == "0\n", 5, "the transition")
    with pytest.raises(ShellError) as err:
        m.write_file(f"/sys/kernel/livepatch/{P}/signal", "1")
    assert err.value.errno == errno.EINVAL


def test_before_5_5_ftrace_enabled_0_silently_unpatches() -> None:
    """Before PERMANENT ftrace ops (5.5), kernel.ftrace_enabled=0 was accepted
    under a livepatch and took it out of effect; from 5.5 it is -EBUSY."""
    P = "test_klp_livepatch"
    m = Machine(cpus=1, seed=0).boot()
    Livepatch.attach(m, klp_version="5.1")
    m.insmod(str(ROOT / "fixtures" / "build" / "modules" / f"{P}.ko"))
    m.run_until(lambda: m.read_file(f"/sys/kernel/livepatch/{P}/transition") == "0\n", 5, "the transition")
    assert m.read_file("/proc/cmdline") == f"{P}: this has been live patched\n"
    m.write_file("/proc/sys/kernel/ftrace_enabled", "0")
    assert m.read_file(f"/sys/kernel/livepatch/{P}/enabled") == "1\n"
    assert m.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n"          # silently unpatched
    m.write_file("/proc/sys/kernel/ftrace_enabled", "1")
    assert m.read_file("/proc/cmdline") == f"{P}: this has been live patched\n"


@pytest.mark.parametrize("version,takes_t_f", [("5.1", False), ("6.13", True)])
def test_kstrtobool_takes_t_and_f_from_5_19(version: str, takes_t_f: bool) -> None:
    """lib/kstrtox.c kstrtobool took t/T and f/F in 5.19 (6.12 and 6.13
    agree): before, "f" to `enabled` is -EINVAL, and so is "t" to a bool
    module parameter (the profile sets the module loader's rule) and to the
    guest's own kstrtobool (kernel/kprobes.c write_enabled_file_bool)."""
    P = "test_klp_livepatch"
    m = Machine(cpus=1, seed=0).boot()
    Livepatch.attach(m, klp_version=version)
    m.insmod(str(ROOT / "fixtures" / "build" / "modules" / f"{P}.ko"))
    m.run_until(lambda: m.read_file(f"/sys/kernel/livepatch/{P}/transition") == "0\n", 5, "the transition")
    try:
        m.write_file(f"/sys/kernel/livepatch/{P}/enabled", "f")
        err = 0
    except ShellError as exc:
        err = exc.errno
    assert err == (0 if takes_t_f else errno.EINVAL)        # "f": disabled (then freed), or refused
    assert m.modules.kstrtobool_true_false is takes_t_f
    kprobes = "/sys/kernel/debug/kprobes/enabled"
    for value, after in (("f", "0"), ("T", "1")):
        try:
            m.write_file(kprobes, value)
            err = 0
        except ShellError as exc:
            err = exc.errno
        assert (err, m.read_file(kprobes)) == ((0, after + "\n") if takes_t_f else (errno.EINVAL, "1\n"))
