"""Open flags reach a file's open handler, as the kernel's VFS hands
f_flags to it (issue #19): kernel/trace/trace.c tracing_open clears the
ring buffer when `trace` is opened for writing with O_TRUNC, and its write
handler (tracing_write_stub) does nothing; kernel/trace/ftrace.c
ftrace_regex_open starts `set_ftrace_filter` from an empty filter on O_TRUNC
and from the current one otherwise. So `> trace` and `echo -n > trace`
clear, `>> trace` keeps, `echo f > set_ftrace_filter` replaces and
`echo g >> set_ftrace_filter` adds; sysfs and procfs ignore the flags.
"""
import io

import pytest

from emu import Machine
from emu.abi import O_APPEND, O_CREAT, O_RDONLY, O_TRUNC, O_WRONLY
from klpemu.scenario import ScenarioRunner

TRACING = "/sys/kernel/tracing"
TRACE = f"{TRACING}/trace"
FILTER = f"{TRACING}/set_ftrace_filter"


@pytest.fixture()
def m() -> Machine:
    m = Machine(cpus=1, seed=0).boot()
    m.write_file(f"{TRACING}/set_ftrace_filter", "cmdline_proc_show")
    m.write_file(f"{TRACING}/current_tracer", "function")
    return m


def calls(m: Machine) -> int:
    return m.read_file(TRACE).count(" cmdline_proc_show <-")


def run(m: Machine, text: str) -> str:
    out = io.StringIO()
    assert ScenarioRunner(m, out).run_text(text).ok, out.getvalue()
    return out.getvalue()


def test_only_an_o_trunc_open_for_writing_clears_trace(m):
    m.read_file("/proc/cmdline")
    assert calls(m) == 1
    for flags in (O_RDONLY | O_TRUNC, O_WRONLY, O_WRONLY | O_APPEND, O_WRONLY | O_CREAT):
        fd = m.shell.open(TRACE, flags)
        assert fd >= 0 and m.shell.close(fd) == 0
        assert calls(m) == 1, oct(flags)
    assert m.shell.write(TRACE, "x\n", O_WRONLY | O_APPEND) == 2        # the stub: nothing cleared
    assert calls(m) == 1
    fd = m.shell.open(TRACE, O_WRONLY | O_TRUNC)
    assert calls(m) == 0                                                 # at the open, not a write
    assert m.shell.close(fd) == 0


def test_the_scenario_shells_redirections_clear_trace_as_bash_on_linux_does(m):
    out = run(m, f"""
cat /proc/cmdline > /dev/null
echo x >> {TRACE}
grep -c ' cmdline_proc_show <-' {TRACE}
echo -n > {TRACE}
grep -c ' cmdline_proc_show <-' {TRACE} || true
cat /proc/cmdline > /dev/null
: > {TRACE}
grep -c ' cmdline_proc_show <-' {TRACE} || true
cat /proc/cmdline > /dev/null
cat /proc/cmdline > /dev/null
echo > {TRACE}
grep -c ' cmdline_proc_show <-' {TRACE} || true
""")
    assert out.split() == ["1", "0", "0", "0"]
    assert m.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n" and calls(m) == 1


def test_set_ftrace_filter_is_replaced_by_gt_and_added_to_by_append(m):
    assert m.read_file(FILTER) == "cmdline_proc_show\n"
    run(m, f"echo meminfo_proc_show >> {FILTER}")
    assert m.read_file(FILTER).split() == sorted(["cmdline_proc_show", "meminfo_proc_show"],
                                                 key=lambda f: m.symbol_address(f))
    run(m, f"echo meminfo_proc_show > {FILTER}")
    assert m.read_file(FILTER) == "meminfo_proc_show\n"
    out = run(m, f"echo no_such_function > {FILTER} || echo refused")
    assert "refused" in out
    # the O_TRUNC open emptied the filter the refused write added nothing to
    assert m.read_file(FILTER) == "#### all functions enabled ####\n"
    run(m, f"echo cmdline_proc_show > {FILTER}")
    m.read_file("/proc/cmdline")
    assert calls(m) >= 1


def syscalls_of(m: Machine, script: str) -> list[str]:
    """The open/read/write/close syscalls the guest made for SCRIPT, in order
    (the function tracer on their handlers)."""
    m.shell.write(FILTER, "__x64_sys_open")
    for f in ("__x64_sys_read", "__x64_sys_write", "__x64_sys_close"):
        m.shell.write(FILTER, f, O_WRONLY | O_APPEND)
    m.shell.close(m.shell.open(TRACE, O_WRONLY | O_TRUNC))     # its close is the trace's first line
    run(m, script)
    names = [line.split()[-2].removeprefix("__x64_sys_") for line in m.read_file(TRACE).splitlines()
             if not line.startswith("#")]
    assert names[0] == "close" and names[-1] == "open"              # the clear's close, the read's open
    return names[1:-1]


def test_gt_makes_the_syscalls_bash_makes(m):
    """echo: open (O_TRUNC), write, close in one round trip; `:`: the open
    and the close alone; a command that reads: the open before it reads."""
    assert syscalls_of(m, "echo hi > /dev/kmsg") == ["open", "write", "close"]
    assert syscalls_of(m, ": > /dev/kmsg") == ["open", "close"]
    assert syscalls_of(m, "cat /proc/cmdline > /dev/kmsg")[:3] == ["open", "close", "open"]
    assert m.dmesg().count("] hi\n") == 1 and m.dmesg().count("console=ttyS0 klpemu") >= 1
    # a refused first write made the open all the same: no second one at the end
    assert syscalls_of(m, "echo bogus > /sys/kernel/tracing/current_tracer || :") == ["open", "write", "close"]


def test_gt_on_a_compound_command_opens_before_it_runs(m):
    m.read_file("/proc/cmdline")
    out = run(m, f"{{ grep -c ' cmdline_proc_show <-' {TRACE} || true; }} > /dev/stderr\n"
                 f"{{ grep -c ' cmdline_proc_show <-' {TRACE} >&2 || true; }} > {TRACE}\n")
    assert out.split() == ["1", "0"]            # bash: the open that clears comes before grep reads


def test_replacing_the_filter_never_traces_every_function_meanwhile(m):
    """The kernel edits a copy of the filter and installs it at release: the
    open and write paths of `echo f > set_ftrace_filter` run under the old
    filter or the new one, never under an empty one (every function)."""
    m.shell.close(m.shell.open(TRACE, O_WRONLY | O_TRUNC))
    run(m, f"echo meminfo_proc_show > {FILTER}")
    traced = {line.split()[-2] for line in m.read_file(TRACE).splitlines() if not line.startswith("#")}
    assert traced <= {"cmdline_proc_show", "meminfo_proc_show"}, traced
    assert m.read_file(FILTER) == "meminfo_proc_show\n"


def test_names_no_file_has_open_as_the_kernels_pseudo_filesystems_do(m):
    """No directory of sysfs, procfs or tracefs can create a file
    (lookup_open finds no i_op->create): O_CREAT of a missing name in one is
    EACCES, ENOENT where the directory is missing too; a directory opens
    read-only and its reads fail with EISDIR. Through the guest's own open
    and read, and as the scenario shell's redirections report them."""
    import errno
    from emu.abi import NR
    for path in (f"{TRACING}/newfile", "/sys/kernel/newfile", "/sys/devices/system/cpu/x", "/proc/sys/kernel/newfile"):
        assert m.shell.open(path, O_WRONLY | O_CREAT | O_TRUNC) == -errno.EACCES, path
        assert m.shell.open(path, O_WRONLY) == -errno.ENOENT, path
    assert m.shell.open("/sys/kernel/nodir/newfile", O_WRONLY | O_CREAT) == -errno.ENOENT
    for directory in (TRACING, "/proc", "/sys/kernel", "/sys/devices/system/cpu"):
        assert m.shell.open(directory, O_WRONLY) == -errno.EISDIR, directory
        fd = m.shell.open(directory, O_RDONLY)
        assert fd >= 0, directory
        assert m.shell.syscall(NR["__NR_read"], fd, m.shell.put_string(""), 16) == -errno.EISDIR
        assert m.shell.close(fd) == 0
    out = io.StringIO()
    ScenarioRunner(m, out).run_text(f"echo 1 > {TRACING}/newfile\necho 1 > /sys/kernel/nodir/x\ncat /proc\n")
    assert out.getvalue().splitlines()[:3] == [
        f"bash: line 1: {TRACING}/newfile: Permission denied",
        "bash: line 2: /sys/kernel/nodir/x: No such file or directory",
        "cat: /proc: Is a directory"]


def test_the_pending_truncation_belongs_to_the_open_file_not_to_other_openers(m):
    """ftrace_regex_open gives each open for writing its own iterator: with
    O_TRUNC an empty hash, else a copy of the filter; ftrace_regex_release
    installs that open's hash. A `>>` writer beside a pending `>` adds to
    the filter; a `>` whose release comes after another's write still
    empties what it never wrote to."""
    names = lambda: m.read_file(FILTER).split()  # noqa: E731
    replacing = m.shell.open(FILTER, O_WRONLY | O_CREAT | O_TRUNC)
    adding = m.shell.open(FILTER, O_WRONLY | O_CREAT | O_APPEND)
    assert m.shell.write_fd(adding, "meminfo_proc_show\n") == len("meminfo_proc_show\n")
    assert sorted(names()) == ["cmdline_proc_show", "meminfo_proc_show"]     # added, not replaced
    assert m.shell.close(adding) == 0 and sorted(names()) == ["cmdline_proc_show", "meminfo_proc_show"]
    assert m.shell.write_fd(replacing, "meminfo_proc_show\n") > 0
    assert names() == ["meminfo_proc_show"]                                   # its own '>' replaced
    assert m.shell.close(replacing) == 0 and names() == ["meminfo_proc_show"]

    first = m.shell.open(FILTER, O_WRONLY | O_TRUNC)
    second = m.shell.open(FILTER, O_WRONLY | O_TRUNC)
    assert m.shell.write_fd(second, "cmdline_proc_show\n") > 0 and m.shell.close(second) == 0
    assert names() == ["cmdline_proc_show"]
    assert m.shell.close(first) == 0                   # released with nothing written: the empty filter
    assert m.read_file(FILTER) == "#### all functions enabled ####\n"
