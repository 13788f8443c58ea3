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

from emu import ImageError, Machine, ShellError
from emu.kernel.shell import Mailbox
from emu.machine import MAILBOX_BASE, MAILBOX_SIZE, MAX_SHELLS, USER_STACKS_BASE
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
    """What one write(2) of DATA returns: a count or -errno."""
    try:
        return m.shell.write_once(path, data)
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
    # proc_skip_spaces is isspace(), which takes 0xa0 (lib/ctype.c); what
    # may follow the number is proc_wspace_sep's " \t\n" only
    (b"\xa01\n\xa0", 4, "1"), (b"1\xa0", -errno.EINVAL, "0"),
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


# kernel/trace/trace.c tracing_set_trace_write: the first MAX_TRACER_SIZE
# (100) bytes, strim()med with the kernel's isspace (0xa0 in, 0x1c out), a C
# string; the whole count returned.
@pytest.mark.parametrize("data,ret,after", [
    (b"\xa0 function\t\xa0\n", 13, "function"), (b"nop\0function", 12, "nop"),
    (b"function" + b" " * 200, 208, "function"), (b" " * 100 + b"function", -errno.EINVAL, "nop"),
    (b"function\x1c", -errno.EINVAL, "nop"), (b"", -errno.EINVAL, "nop"),
])
def test_current_tracer(m, data, ret, after):
    tracer = "/sys/kernel/tracing/current_tracer"
    reset(m, tracer, b"nop\n")
    assert write(m, tracer, data) == ret
    assert m.read_file(tracer) == after + "\n"
    reset(m, tracer, b"nop\n")


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


def run_script(m: Machine, text: str) -> list[str]:
    out = io.StringIO()
    assert ScenarioRunner(m, out).run_text(text).ok, out.getvalue()
    return out.getvalue().splitlines()


KiB = 1024
TRACE = "/sys/kernel/tracing/trace"


# Writes larger than the shell's buffer go as echo's stdio writes them:
# write(2) after write(2) at the advancing position. fs/kernfs/file.c
# kernfs_fop_write_iter gives each sysfs store at most PAGE_SIZE: 102399
# digits and a newline are 25 stores of 4096, the last "0…07\n", which
# param_set_int takes; 102400 digits and a newline are 25 stores, the last
# "0…05", and then "\n" alone, which kstrtoint refuses (EINVAL);
# tracing_write_stub (kernel/trace/trace.c) takes every count; a /proc/sys
# int (kernel/sysctl.c __do_proc_dointvec) parses the first PAGE_SIZE-1
# bytes of the first write(2) and ignores every later one
# (proc_first_pos_non_zero_ignore), which still counts as written.
@pytest.mark.parametrize("size", [100 * KiB, 1024 * KiB])
def test_a_write_larger_than_the_shell_buffer(m, size):
    reset(m, COUNT, b"3\n")
    lines = run_script(m, (
        f"printf '%0{size - 1}d\\n' 7 > {COUNT}; echo rc=$? $(cat {COUNT})\n"
        f"echo $(printf '%0{size}d' 5) > {COUNT}; echo rc=$? $(cat {COUNT})\n"
        f"printf '%0{size}d\\n' 1 > {TRACE}; echo rc=$?\n"
        f"printf '0%{size}s\\n' '' > {FTRACE_ENABLED}; echo rc=$? $(cat {FTRACE_ENABLED})\n"
        f"echo \"1 $(printf '%{size}s' 2)\" > {FTRACE_ENABLED}; echo rc=$? $(cat {FTRACE_ENABLED})\n"
        f"printf '%0{size}d\\n' 0 > {FTRACE_ENABLED}; echo rc=$? $(cat {FTRACE_ENABLED})\n"))
    rcs = [line for line in lines if line.startswith("rc=")]
    assert rcs == ["rc=0 7", "rc=1 5", "rc=0", "rc=0 0", "rc=0 1", "rc=1 1"], lines
    assert sum("write error: Invalid argument" in line for line in lines) == 2, lines
    assert m.shell.write(TRACE, b"x" * size) == size


# The position moves with each write(2) on an open file: a second write on
# /proc/sys/kernel/ftrace_enabled is past position 0 and ignored (returning
# its count), a fresh open starts at 0 again; kernfs hands every store its
# bytes whatever the position (sysfs_kf_write never looks at it).
def test_a_second_write_on_an_open_file_goes_on_at_its_position(m):
    shell = m.shell
    fd = shell.open(FTRACE_ENABLED)
    assert shell.write_fd(fd, "0 2\n") == 2
    assert shell.write_fd(fd, "1\n") == 2
    assert shell.write_fd(fd, "oops\n") == 5
    assert shell.close(fd) == 0
    assert m.read_file(FTRACE_ENABLED) == "0\n"
    reset(m, FTRACE_ENABLED, b"1\n")
    fd = shell.open(COUNT)
    assert [shell.write_fd(fd, value) for value in ("4\n", "5\n", "x\n")] == [2, 2, -errno.EINVAL]
    assert shell.close(fd) == 0
    assert m.read_file(COUNT) == "5\n"


def test_each_shell_has_a_mailbox_of_its_own(m):
    """Shells' mailboxes lie MAILBOX_SIZE apart: a struct mailbox larger than
    that is refused, and full write buffers in two shells do not meet."""
    offsets = m.user.offsets()
    with pytest.raises(ImageError, match="struct mailbox is .* bytes, more than the 4096"):
        Mailbox.from_offsets(offsets, 4096)
    assert Mailbox.from_offsets(offsets, MAILBOX_SIZE) == m.mailbox_layout
    assert MAILBOX_BASE + MAX_SHELLS * MAILBOX_SIZE <= USER_STACKS_BASE
    second = m.spawn_shell()
    full = m.mailbox_layout.data_max
    assert m.shell.write(TRACE, b"a" * 3 * full) == 3 * full
    assert second.write(TRACE, b"b" * full) == full
    assert second.cat("/proc/cmdline") == m.read_file("/proc/cmdline")
