"""Module parameters as the kernel splits, matches and stores them (issue #19
point 6): lib/cmdline.c next_arg and kernel/params.c parse_args/parameq for
init_module's args and the command line, param_set_charp/param_get_charp
through sysfs, and how kmod's insmod and modprobe join their argv.
"""
import errno

import pytest
from test_module_loader import mods  # noqa: F401  (a fixture)

from emu import Machine, ShellError
from emu.kernel.cmdline import insmod_args, modprobe_args, parameq, split_args

TEXT = "/sys/module/modparam/parameters/text"
DRY_RUN = "/sys/module/modparam/parameters/dry_run"


# lib/cmdline.c next_arg: quotes group blanks and cannot be escaped; a
# leading quote and a value's leading quote go, each with the word's last
# character if it is a quote; '=' at a word's start does not split it; a
# word without '=' has no value (None); "--" alone ends parse_args.
@pytest.mark.parametrize("args,want", [
    ('a=1 b=2', [("a", "1"), ("b", "2")]),
    ('  a \t\n b  ', [("a", None), ("b", None)]),
    ('b="x y" c', [("b", "x y"), ("c", None)]),
    ('"b=x y" c', [("b", "x y"), ("c", None)]),
    ('b=x"y z" c', [("b", 'x"y z"'), ("c", None)]),
    ('b="x"y', [("b", 'x"y')]),
    ('"b"=x', [('b"', "x")]),
    ('"bare word"', [("bare word", None)]),
    ('b="x', [("b", "x")]),
    ('b="', [("b", "")]),
    ('b=', [("b", "")]),
    ('b==x', [("b", "=x")]),
    ('=x', [("=x", None)]),
    ('=a=b', [("=a", "b")]),
    ('""', [("", None)]),
    ('"', [("", None)]),
    ('b="x y', [("b", "x y")]),
    ('a -- b=1', [("a", None)]),
    ('a --=1 b', [("a", None), ("--", "1"), ("b", None)]),
    ('', []),
    # lib/ctype.c: isspace(0xa0) (the Latin-1 no-break space, _S|_SP), so
    # the byte ends a word inside a UTF-8 character too; quotes hold it
    ('a=x\xc3\xa0b', [("a", "x\xc3"), ("b", None)]),
    ('\xa0a\xa0\xa0b=\xa0', [("a", None), ("b", "")]),
    ('a="x\xa0y"', [("a", "x\xa0y")]),
])
def test_next_arg(args, want):
    assert split_args(args) == want


def test_parameq_takes_dash_for_underscore():
    assert parameq("dry-run", "dry_run") and parameq("dry_run", "dry-run")
    assert not parameq("dryrun", "dry_run") and not parameq("dry_run2", "dry_run")


# kmod tools/insmod.c joins its options with spaces as they are; modprobe
# (options_from_array) quotes a value holding a space unless it starts with
# a quote.
@pytest.mark.parametrize("argv,insmod,modprobe", [
    (["a=1", "b=x y"], 'a=1 b=x y', 'a=1 b="x y"'),
    (["b='x y'"], "b='x y'", "b='x y'"),
    (['b="x y"'], 'b="x y"', 'b="x y"'),
    (["x y"], "x y", "x y"),
    (["b=x\ty"], "b=x\ty", "b=x\ty"),
])
def test_kmod_joins_argv(argv, insmod, modprobe):
    assert (insmod_args(argv), modprobe_args(argv)) == (insmod, modprobe)


@pytest.fixture(scope="module")
def machine() -> Machine:
    return Machine(cpus=1, seed=0).boot()


@pytest.fixture
def load(machine, mods, tmp_path):  # noqa: F811
    """insmod modparam with ARGS (raising ShellError), rmmod after the test."""
    path = tmp_path / "modparam.ko"
    path.write_bytes(mods["modparam"])
    yield lambda args="": machine.insmod(path, args)
    if machine.exists("/sys/module/modparam"):
        machine.rmmod("modparam")


@pytest.mark.parametrize("args,text,dry_run", [
    ('text="hello world" dry-run', "hello world", "Y"),
    ('"text=a b" dry_run=n', "a b", "N"),
    ('text=x"y z"', 'x"y z"', "N"),
    ('text= dry-run=on', "", "Y"),
    ('dry_run -- text=ignored', "init", "Y"),
])
def test_insmod_args_reach_the_parameters(machine, load, args, text, dry_run):
    load(args)
    assert machine.read_file(TEXT) == text + "\n"
    assert machine.read_file(DRY_RUN) == dry_run + "\n"
    assert machine.dmesg_lines()[-1] == f"modparam: text=<{text}> dry_run={int(dry_run == 'Y')}"


def test_a_utf8_character_holding_the_byte_0xa0_splits_the_args(machine, load):
    """lib/cmdline.c next_arg breaks a word at isspace(args[i]), and the
    kernel's isspace takes the byte 0xa0 (lib/ctype.c _ctype[160] = _S|_SP):
    "text=àdry_run" is text="\xc3" (à is c3 a0) and dry_run; "text=a b" with
    U+00A0 (c2 a0) is text="a\xc2" and an unknown parameter b."""
    load("text=\u00e0dry_run")
    assert machine.dmesg_lines()[-1] == "modparam: text=<\ufffd> dry_run=1"
    assert machine.read_file(DRY_RUN) == "Y\n"
    machine.rmmod("modparam")
    load("text=a\u00a0b")
    assert machine.dmesg_lines()[-2:] == ["modparam: unknown parameter 'b' ignored",
                                          "modparam: text=<a\ufffd> dry_run=0"]


def test_args_longer_than_the_shells_mailbox_reach_the_kernel(machine, load):
    """init_module takes uargs with strndup_user, no page or mailbox limit:
    20,000 spaces between two parameters are only spaces to next_arg."""
    load("text=end" + " " * 20000 + "dry_run")
    assert machine.dmesg_lines()[-1] == "modparam: text=<end> dry_run=1"


def test_unknown_parameters(machine, load):
    """unknown_module_param_cb: async_probe taken silently; any other name a
    warning naming what precedes its '.' (ddebug_dyndbg_param_cb cut it)."""
    before = len(machine.dmesg_lines())
    load("async_probe a.b=1 nosuch")
    new = machine.dmesg_lines()[before:]
    assert "modparam: unknown parameter 'a' ignored" in new
    assert "modparam: unknown parameter 'nosuch' ignored" in new
    assert not any("async_probe" in line for line in new)


def test_a_bare_non_bool_and_a_long_charp_fail_the_load(machine, load):
    with pytest.raises(ShellError) as info:
        load("text")
    assert info.value.errno == errno.EINVAL
    assert machine.dmesg_lines()[-1] == "modparam: `' invalid for parameter `text'"
    with pytest.raises(ShellError) as info:
        load("text=" + "x" * 1025)
    assert info.value.errno == errno.ENOSPC
    assert machine.dmesg_lines()[-2:] == ["text: string parameter too long",
                                          f"modparam: `{'x' * 1025}' too large for parameter `text'"]
    load("text=" + "x" * 1024)
    assert machine.read_file(TEXT) == "x" * 1024 + "\n"


def test_a_charp_written_through_sysfs_keeps_its_newline(machine, load):
    """param_set_charp copies the string whole (echo's newline too) and
    param_get_charp prints "%s\\n": cat shows the newline twice."""
    load()
    assert machine.shell.write(TEXT, b"new\n") == 4
    assert machine.read_file(TEXT) == "new\n\n"
    assert machine.shell.write(TEXT, b"two words") == 9
    assert machine.read_file(TEXT) == "two words\n"
    assert machine.shell.write(TEXT, "caf\u00e9") == 5             # the bytes as written
    assert machine.read_file(TEXT) == "caf\u00e9\n"
    with pytest.raises(ShellError) as info:
        machine.shell.write(TEXT, b"y" * 1025)
    assert info.value.errno == errno.ENOSPC
    assert machine.read_file(TEXT) == "caf\u00e9\n"


def test_a_bool_parameter_follows_the_kernels_kstrtobool(machine, load):
    """Before 5.19 (a livepatch profile sets it) "t" is no bool: -EINVAL."""
    machine.modules.kstrtobool_true_false = False
    try:
        with pytest.raises(ShellError) as info:
            load("dry_run=t")
        assert info.value.errno == errno.EINVAL
    finally:
        machine.modules.kstrtobool_true_false = True
    load("dry_run=t")
    assert machine.read_file(DRY_RUN) == "Y\n"
