"""Writes from the guest shell to files served from Python: what the kernel
accepts, refuses and counts, byte for byte (issue #19 point 6). Each row is
(bytes written, what write(2) returns: a count or -errno, what reads back);
the comment over each table names the kernel function whose rule it is.
The rules themselves are tested in test_kstrtox.py; here they are reached
through a real write(2) of the guest's shell task.
"""
import errno
import io

import pytest
from test_module_loader import mods  # noqa: F401  (a fixture)

from emu import Machine, ShellError
from klpemu.scenario import ScenarioRunner

FTRACE_ENABLED = "/proc/sys/kernel/ftrace_enabled"
TRACING_ON = "/sys/kernel/tracing/tracing_on"
COUNT = "/sys/module/modtest/parameters/count"


@pytest.fixture(scope="module")
def m(mods, tmp_path_factory) -> Machine:  # noqa: F811
    machine = Machine(cpus=1, seed=0).boot()
    path = tmp_path_factory.mktemp("mod") / "modtest.ko"
    path.write_bytes(mods["modtest"])
    machine.insmod(path)
    return machine


def write(m: Machine, path: str, data: bytes) -> int:
    try:
        return m.shell.write(path, data)
    except ShellError as exc:
        return -exc.errno


def reset(m: Machine, path: str, value: bytes) -> None:
    assert write(m, path, value) == len(value)


# kernel/sysctl.c __do_proc_dointvec/proc_get_long (ftrace_enable_sysctl):
# leading space skipped, 0x and 0 prefixes, no '+', the second int of
# "1 2" left unread (a short count), an empty write a no-op returning 0.
@pytest.mark.parametrize("data,ret,after", [
    (b"0x1\n", 4, "1"), (b"010\n", 4, "8"), (b"  0\n", 4, "0"), (b"1 2\n", 2, "1"),
    (b"+1\n", -errno.EINVAL, "0"), (b"", 0, "0"), (b"\n", -errno.EINVAL, "0"),
    (b"1x\n", -errno.EINVAL, "0"), (b"2147483648\n", -errno.EINVAL, "0"),
])
def test_ftrace_enabled(m, data, ret, after):
    reset(m, FTRACE_ENABLED, b"0\n")
    assert write(m, FTRACE_ENABLED, data) == ret
    assert m.read_file(FTRACE_ENABLED) == after + "\n"
    reset(m, FTRACE_ENABLED, b"1\n")


# kernel/trace/trace.c rb_simple_write: kstrtoul_from_user(…, 10), the
# whole count returned; 010 is ten (nonzero), " 1" and "1\n\n" refused.
TRACING_ON_ROWS = [
    (b"1\n", 2, "1"), (b"010", 3, "1"), (b"00\n", 3, "0"), (b"+1", 2, "1"),
    (b" 1", -errno.EINVAL, "0"), (b"1\n\n", -errno.EINVAL, "0"), (b"0x1", -errno.EINVAL, "0"),
    (b"-1", -errno.EINVAL, "0"), (b"", -errno.EINVAL, "0"),
    (b"18446744073709551616", -errno.ERANGE, "0"),
]
# kernel/params.c param_set_int (kstrtoint(…, 0)) behind fs/sysfs/file.c
# sysfs_kf_write: an empty write returns 0 and stores nothing.
COUNT_ROWS = [
    (b"010\n", 4, "8"), (b"0x10", 4, "16"), (b"-5\n", 3, "-5"), (b"", 0, "3"),
    (b"1_0", -errno.EINVAL, "3"), (b" 1", -errno.EINVAL, "3"), (b"1\n\n", -errno.EINVAL, "3"),
    (b"2147483648", -errno.ERANGE, "3"), (b"1 2", -errno.EINVAL, "3"),
]
# each file: (the value it is reset to before a row, the one it is left with)
RESETS = {TRACING_ON: (b"0\n", b"1\n"), COUNT: (b"3\n", b"3\n")}


@pytest.mark.parametrize("path,data,ret,after", [(TRACING_ON, *row) for row in TRACING_ON_ROWS]
                         + [(COUNT, *row) for row in COUNT_ROWS])
def test_kstrto_store(m, path, data, ret, after):
    before, restore = RESETS[path]
    reset(m, path, before)
    assert write(m, path, data) == ret
    assert m.read_file(path) == after + "\n"
    reset(m, path, restore)


def test_write_returns_bytes_not_characters(m):
    """write(2) returns the bytes consumed: ff fe 00 01 to `trace` is 4."""
    assert write(m, "/sys/kernel/tracing/trace", b"\xff\xfe\x00\x01") == 4


def test_bad_insmod_parameter_fails_with_its_errno(m, mods, tmp_path):  # noqa: F811
    """parse_args: a value out of an int's range fails the load with
    -ERANGE after params.c's KERN_ERR line."""
    path = tmp_path / "modtest2.ko"
    path.write_bytes(mods["modtest"])
    m.rmmod("modtest")
    with pytest.raises(ShellError) as info:
        m.insmod(path, "count=2147483648")
    assert info.value.errno == errno.ERANGE
    assert "modtest: `2147483648' invalid for parameter `count'" in m.dmesg_lines()
    m.insmod(path, "count=010")
    assert m.read_file(COUNT) == "8\n"


# fs/kernfs/file.c kernfs_fop_write_iter: a sysfs store is given at most
# PAGE_SIZE and write(2) returns that (a short write); proc_dointvec reads
# at most PAGE_SIZE-1 and a number longer than its 22-byte buffer is -EINVAL.
def test_a_write_above_page_size(m):
    reset(m, COUNT, b"3\n")
    assert write(m, COUNT, b"0" * 4095 + b"7" + b"9" * 100) == 4096
    assert m.read_file(COUNT) == "7\n"
    assert write(m, FTRACE_ENABLED, b"0" * 4999 + b"1\n") == -errno.EINVAL
    assert m.read_file(FTRACE_ENABLED) == "1\n"


def test_a_scripts_byte_escapes_are_bytes(tmp_path):
    """printf's \\xHH and \\NNN are one byte each, as bash writes them: to a
    kernel file, through a capture, to the terminal."""
    import subprocess
    import sys
    script = tmp_path / "raw.sh"
    script.write_text("printf '\\xff\\xfe\\x00\\x01' > /sys/kernel/tracing/trace; echo rc=$?\n"
                      "printf 'a\\xffb\\n'\nprintf '\\303\\251\\n'\n"
                      "x=$(printf '\\xff\\xfe'); printf '%s' \"$x\" | wc -c\n")
    cli = subprocess.run([sys.executable, "-m", "klpemu.cli", "run", str(script)], capture_output=True)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.split(b"\n--- kernel log ---")[0] == b"rc=0\na\xffb\n\xc3\xa9\n2\n"


def test_the_scenario_shell_writes_again_what_a_short_write_left(m):
    """bash's echo writes through stdio, which writes again what a short
    write(2) left: to sysfs a store of its own (kernfs gives each at most
    PAGE_SIZE), so 4096 zeros-and-7 then a too-large 99…9 is 7 stored and a
    write error; 4096 then "01" stores 1. proc_dointvec's "1 2" leaves "2"
    unread and counts a write past position 0 as written: 1 stays."""
    reset(m, COUNT, b"3\n")
    out = io.StringIO()
    head = "0" * 4095 + "7"
    result = ScenarioRunner(m, out).run_text(
        f"echo {head}{'9' * 100} > {COUNT}; echo rc=$? $(cat {COUNT})\n"
        f"echo {head}01 > {COUNT}; echo rc=$? $(cat {COUNT})\n"
        f"echo '1 2' > {FTRACE_ENABLED}; echo rc=$? $(cat {FTRACE_ENABLED})\n")
    lines = out.getvalue().splitlines()
    assert "rc=1 7" in lines and "rc=0 1" in lines and lines.count("rc=0 1") == 2, out.getvalue()
    assert any("write error: Numerical result out of range" in line for line in lines), out.getvalue()
    assert result.ok
