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
