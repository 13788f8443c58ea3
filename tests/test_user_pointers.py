"""A bad pointer in a system call is the kernel's -EFAULT, never a write into
the kernel nor an oops (issue #19 point 1: "the kernel's error return where
the kernel validates"). read/write fail a copy_{to,from}_user() that would
touch anything but user memory; open, nanosleep, init_module and
delete_module copy their arguments with copy_from_user(),
strncpy_from_user() or strndup_user(); the shell goes on.
"""
import errno

import pytest

from emu import Machine
from emu.abi import NR, USER_END
from emu.machine import USER_STAGING

EFAULT = -errno.EFAULT
KERNEL = 0xffffffff81000000
UNMAPPED_USER = 0x20000000                 # below TASK_SIZE_MAX, but no user memory
COUNT = "/sys/module/test_klp_mod_target/parameters/count"


@pytest.fixture(scope="module")
def m() -> Machine:
    return Machine(cpus=1, seed=0).boot()


def test_a_read_into_the_kernel_is_efault_and_writes_nothing(m):
    text = m.symbol_address("cmdline_proc_show")
    before = m.mem.read(text, 16)
    for path in ("/proc/kallsyms", "/proc/cmdline"):          # a Python-served file, a guest one
        fd = m.shell.open(path, 0)
        assert m.shell.syscall(NR["__NR_read"], fd, text, 16) == EFAULT, path
        assert m.shell.close(fd) == 0
    assert m.mem.read(text, 16) == before
    assert m.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n" and not m.oopses


@pytest.mark.parametrize("path,buf", [
    ("/sys/kernel/tracing/trace", KERNEL),
    ("/dev/kmsg", UNMAPPED_USER),                    # the guest's own store: its copy faults
    ("/proc/sys/kernel/ftrace_enabled", USER_END - 1),  # the copy runs off user memory
])
def test_a_write_from_outside_user_memory_is_efault(m, path, buf):
    fd = m.shell.open(path)
    assert m.shell.syscall(NR["__NR_write"], fd, buf, 2) == EFAULT
    assert m.shell.close(fd) == 0
    assert m.read_file("/proc/sys/kernel/ftrace_enabled") == "1\n" and not m.oopses


def test_strings_from_outside_user_memory_are_efault(m):
    sh = m.shell
    assert sh.syscall(NR["__NR_open"], KERNEL, 0) == EFAULT
    m.mem.write(USER_END - 3, b"/pr")                          # no NUL before user memory ends
    assert sh.syscall(NR["__NR_open"], USER_END - 3, 0) == EFAULT
    assert sh.syscall(NR["__NR_nanosleep"], KERNEL) == EFAULT
    assert sh.syscall(NR["__NR_delete_module"], 0, 0) == EFAULT
    image = open("fixtures/build/modules/test_klp_mod_target.ko", "rb").read()
    m.mem.write(USER_STAGING, image)
    assert sh.syscall(NR["__NR_init_module"], KERNEL, len(image), sh.put_string("")) == EFAULT
    assert sh.syscall(NR["__NR_init_module"], USER_STAGING, len(image), 0) == EFAULT  # strndup_user(NULL)
    assert "test_klp_mod_target" not in m.modules.modules
    assert sh.syscall(NR["__NR_init_module"], USER_STAGING, len(image), sh.put_string("")) == 0
    assert not m.oopses


# fs/read_write.c vfs_write (and vfs_read): -EBADF, then access_ok() of the
# whole [buf, buf + count) below TASK_SIZE_MAX (arch/x86 __access_ok: the
# sum neither past USER_PTR_MAX nor wrapped), then the count cut to
# MAX_RW_COUNT, then the handler, which faults only on what it copies.
TASK_SIZE_MAX = 0x7ffffffff000
MAX_RW_COUNT = 0x7ffff000
TRACE = "/sys/kernel/tracing/trace"


@pytest.mark.parametrize("nr,path", [("__NR_write", TRACE), ("__NR_read", "/proc/cmdline"),
                                     ("__NR_read", "/proc/kallsyms"), ("__NR_write", "/dev/kmsg")])
def test_a_count_past_task_size_max_is_efault_before_the_handler(m, nr, path):
    """A range ending past TASK_SIZE_MAX, or wrapping, fails access_ok()
    even when the handler would copy nothing of it (trace's write stub, a
    read at the end of a file)."""
    flags = 1 if nr == "__NR_write" else 0
    for buf, count in ((TASK_SIZE_MAX - 10, 11), (UNMAPPED_USER, (1 << 64) - 1), (USER_END - 1, TASK_SIZE_MAX)):
        fd = m.shell.open(path, flags)
        assert m.shell.syscall(NR[nr], fd, buf, count) == EFAULT, (path, hex(buf), count)
        assert m.shell.close(fd) == 0
    assert m.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n" and not m.oopses


def test_trace_takes_any_count_from_any_user_address_without_reading_it(m):
    """kernel/trace/trace.c tracing_write_stub returns the count and never
    reads the buffer: an unmapped user buffer is no fault, a count up to
    TASK_SIZE_MAX is taken, cut to MAX_RW_COUNT by rw_verify_area's rule."""
    fd = m.shell.open(TRACE)
    assert m.shell.syscall(NR["__NR_write"], fd, UNMAPPED_USER, 5) == 5
    assert m.shell.syscall(NR["__NR_write"], fd, 0, 3) == 3                 # NULL is a user address
    assert m.shell.syscall(NR["__NR_write"], fd, TASK_SIZE_MAX - 4096, 4096) == 4096
    assert m.shell.syscall(NR["__NR_write"], fd, UNMAPPED_USER, 1 << 40) == MAX_RW_COUNT
    assert m.shell.close(fd) == 0
    assert not m.oopses and m.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n"


@pytest.mark.parametrize("path", [
    "/sys/kernel/tracing/tracing_on",                 # rb_simple_write: kstrtoul_from_user
    "/sys/kernel/tracing/current_tracer",             # tracing_set_trace_write: copy_from_user
    "/sys/kernel/tracing/set_ftrace_filter",          # ftrace_regex_write: trace_get_user
    "/proc/sys/kernel/ftrace_enabled",                # proc_sys_call_handler: copy_from_iter
    "/proc/dynamic_debug/control",                    # ddebug_proc_write: memdup_user_nul
    "/dev/kmsg",                                      # devkmsg_write: copy_from_iter
])
def test_every_other_write_handler_copies_and_faults(m, path):
    """Only trace's handler never reads the buffer: every other file's
    handler copies it, and an unmapped user buffer is -EFAULT."""
    fd = m.shell.open(path)
    assert fd >= 0, path
    assert m.shell.syscall(NR["__NR_write"], fd, UNMAPPED_USER, 2) == EFAULT, path
    assert m.shell.close(fd) == 0
    assert not m.oopses


# fs/namei.c getname_flags: strncpy_from_user() of at most PATH_MAX bytes; a
# name that fills them (length >= PATH_MAX) is -ENAMETOOLONG, an empty one
# -ENOENT.
PATH_MAX = 4096


def test_open_takes_names_up_to_path_max(m):
    sh = m.shell
    def open_name(name: str) -> int:
        fd = sh.syscall(NR["__NR_open"], sh.put_string(name), 0)
        if fd >= 0:
            sh.close(fd)
        return fd
    long = "/proc/" + "x" * (PATH_MAX - 1 - len("/proc/"))
    assert len(long) == PATH_MAX - 1 and open_name(long) == -errno.ENOENT
    assert open_name(long + "x") == -errno.ENAMETOOLONG                   # PATH_MAX bytes, no NUL
    assert open_name(long + "x" * 100) == -errno.ENAMETOOLONG
    assert open_name("") == -errno.ENOENT
    m.mem.write(USER_END - 10, b"/proc/cmdl")                             # runs off user memory
    assert sh.syscall(NR["__NR_open"], USER_END - 10, 0) == EFAULT
    assert m.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n" and not m.oopses
