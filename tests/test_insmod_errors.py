"""Every loader error through the guest: insmod of a malformed, hostile or
clashing module fails with the kernel's errno and a message naming the
problem, and the machine goes on (a valid module loads afterwards)."""
import errno
import struct

import pytest
from test_module_loader import _file_off, _malformed, mods, patch  # noqa: F401  (mods: a fixture)

from emu import EmuError, Machine, ShellError
from klpemu.selftest import kmod

MODULES = "fixtures/build/modules"
CMDLINE = "console=ttyS0 klpemu\n"


@pytest.fixture(scope="module")
def booted() -> Machine:
    return Machine(cpus=2, seed=0).boot()


def insmod_bytes(m: Machine, tmp_path, data: bytes, args: str = "") -> ShellError:
    path = tmp_path / "bad.ko"
    path.write_bytes(data)
    with pytest.raises(ShellError) as info:
        m.insmod(path, args)
    return info.value


def test_every_malformed_image_is_refused_and_the_machine_goes_on(booted: Machine, mods, tmp_path) -> None:
    m = booted
    for what, (data, message) in _malformed(mods).items():
        before = len(m.dmesg_lines())
        err = insmod_bytes(m, tmp_path, data)
        assert err.errno == errno.ENOEXEC, what
        new = m.dmesg_lines()[before:]
        assert any(message in line for line in new), (what, new)
        assert m.read_file("/proc/cmdline") == CMDLINE
    assert not m.modules.modules
    m.insmod(f"{MODULES}/test_klp_mod_target.ko")
    assert m.read_file("/proc/test_klp_mod_target") == "test_klp_mod_target: original output\n"
    m.rmmod("test_klp_mod_target")


def test_unknown_relocation_type(booted: Machine, mods, tmp_path) -> None:
    d = mods["modtest"]
    info = _file_off(d, ".rela.text", 8)
    (old,) = struct.unpack_from("<Q", d, info)
    err = insmod_bytes(booted, tmp_path, patch(d, info, "<Q", (old & ~0xFFFFFFFF) | 9))
    assert err.errno == errno.ENOEXEC
    assert "modtest: Unknown rela relocation: 9" in booted.dmesg_lines()


def test_duplicate_module_name_is_eexist(booted: Machine) -> None:
    m = booted
    m.insmod(f"{MODULES}/test_klp_mod_target.ko")
    with pytest.raises(ShellError) as info:
        m.insmod(f"{MODULES}/test_klp_mod_target.ko")
    assert info.value.errno == errno.EEXIST
    assert m.read_file("/proc/test_klp_mod_target") == "test_klp_mod_target: original output\n"
    m.rmmod("test_klp_mod_target")
    m.insmod(f"{MODULES}/test_klp_mod_target.ko")          # and again, once it is gone
    m.rmmod("test_klp_mod_target")


def test_unknown_parameter_is_ignored_and_a_bad_value_refused(booted: Machine, mods, tmp_path) -> None:
    m = booted
    path = tmp_path / "modtest.ko"
    path.write_bytes(mods["modtest"])
    m.insmod(path, "nosuch=1")
    assert "modtest: unknown parameter 'nosuch' ignored" in m.dmesg_lines()
    m.rmmod("modtest")
    before = len(m.dmesg_lines())
    err = insmod_bytes(m, tmp_path, mods["modtest"], "count=abc")
    assert err.errno == errno.EINVAL
    # kernel/params.c parse_args: pr_err("%s: `%s' invalid for parameter `%s'\n")
    assert m.dmesg_lines()[before:] == ["modtest: `abc' invalid for parameter `count'"]
    assert [r.level for r in m.klog.records()][-1] == 3
    assert "modtest" not in m.modules.modules


def test_rmmod_errors(booted: Machine) -> None:
    with pytest.raises(ShellError) as info:
        booted.rmmod("no_such_module")
    assert info.value.errno == errno.ENOENT


def test_rmmod_words_tell_its_refcnt_check_from_delete_module() -> None:
    """kmod's rmmod: "is in use" comes only from its refcnt check before the
    call; an error of delete_module(2) itself, -EBUSY included, is "could
    not remove module X: <strerror>" (kmod tools/rmmod.c)."""
    assert kmod.rmmod_error("x", errno.EBUSY) == "rmmod: ERROR: Module x is in use"
    assert kmod.rmmod_remove_error("x", errno.EBUSY) == (
        "rmmod: ERROR: could not remove module x: Device or resource busy")


def test_a_livepatch_on_a_kernel_without_a_livepatch_core_is_an_unknown_symbol(booted: Machine) -> None:
    """Until a livepatch core attaches, the kernel is one built without
    CONFIG_LIVEPATCH: kernel/livepatch/'s exports do not resolve."""
    m = booted
    with pytest.raises(ShellError) as info:
        m.insmod(f"{MODULES}/test_klp_livepatch.ko")
    assert info.value.errno == errno.ENOENT
    assert m.dmesg_lines()[-1] == "test_klp_livepatch: Unknown symbol klp_enable_patch (err -2)"
    assert m.read_file("/proc/cmdline") == CMDLINE


def test_a_refused_module_takes_no_module_area(booted: Machine, mods, tmp_path) -> None:
    m = booted
    before = m.modules._next
    info = _file_off(mods["modtest"], ".rela.text", 8)
    (old,) = struct.unpack_from("<Q", mods["modtest"], info)
    insmod_bytes(m, tmp_path, patch(mods["modtest"], info, "<Q", (old & ~0xFFFFFFFF) | 9))
    # an __mcount_loc entry outside the module's text: refused, nothing read or written there
    addend = _file_off(mods["modtest"], ".rela__mcount_loc", 16)
    err = insmod_bytes(m, tmp_path, patch(mods["modtest"], addend, "<q", 1 << 40))
    assert err.errno == errno.ENOEXEC
    assert any("__mcount_loc entry" in line and "is not a call to __fentry__" in line
               for line in m.dmesg_lines())
    assert m.modules._next == before
    assert "modtest" not in m.modules.modules


def test_an_api_error_carries_what_the_kernel_logged() -> None:
    """The errno alone hides the reason; the kernel printed it."""
    m = Machine().boot()
    with pytest.raises(ShellError) as exc:
        m.insmod(f"{MODULES}/test_klp_livepatch.ko")          # no livepatch core: klp_enable_patch unknown
    assert exc.value.errno == errno.ENOENT
    assert str(exc.value).endswith(": No such file or directory "
                                   "(kernel: test_klp_livepatch: Unknown symbol klp_enable_patch (err -2))")
    with pytest.raises(ShellError, match=r"File exists$"):   # nothing logged: the errno is all there is
        m.insmod(f"{MODULES}/klpemu_test_target.ko")
        m.insmod(f"{MODULES}/klpemu_test_target.ko")


def test_an_image_larger_than_the_staging_area_is_refused_before_the_guest_sees_it(booted: Machine, tmp_path) -> None:
    big = tmp_path / "big.ko"
    big.write_bytes(b"\x7fELF" + bytes(2 << 20))
    with pytest.raises(EmuError, match=r"big\.ko and its arguments are larger than the 2 MiB staging area"):
        booted.insmod(big)
    small = tmp_path / "small.ko"
    small.write_bytes(b"\x7fELF" + bytes(1000))
    with pytest.raises(EmuError, match=r"and its arguments are larger"):
        booted.insmod(small, "x" * (2 << 20))
    assert booted.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n"
