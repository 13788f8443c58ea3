"""emu.kernel.kstrtox: the kernel's parsers of user writes, row by row.

Each row is (input bytes, expected value or errno). The rules are those of
lib/kstrtox.c (kstrto*, kstrtobool, the *_from_user copies) and
kernel/sysctl.c (__do_proc_dointvec with proc_get_long); the comment over
each table names the function. test_guest_clib.py checks the same kstrto*
rows against the guest's own C kstrtox, so Python and guest agree.
"""
import errno

import pytest

from emu.kernel import kstrtox
from emu.kernel.kstrtox import IntvecWrite, ParseError

EINVAL, ERANGE = -errno.EINVAL, -errno.ERANGE


def call(parse, *args):
    try:
        return parse(*args)
    except ParseError as exc:
        return -exc.errno


# lib/kstrtox.c kstrtoint(s, 0): the module `int` parameter rule
# (kernel/params.c param_set_int). A '+' or '-' may lead, nothing else;
# base 0 reads 0x as hex and a leading 0 as octal; one "\n" may end it.
KSTRTOINT_BASE0 = [
    (b"10", 10), (b"010", 8), (b"0x10", 16), (b"0X1f", 31), (b"-7", -7),
    (b"+7", 7), (b"7\n", 7), (b"0", 0), (b"-0", 0), (b"00", 0),
    (b"2147483647", 2**31 - 1), (b"-2147483648", -2**31),
    (b"2147483648", ERANGE), (b"-2147483649", ERANGE),
    (b"99999999999999999999", ERANGE), (b"0x80000000", ERANGE),
    (b"1_0", EINVAL), (b" 1", EINVAL), (b"1 ", EINVAL), (b"1\n\n", EINVAL),
    (b"", EINVAL), (b"\n", EINVAL), (b"08", EINVAL), (b"0x", EINVAL),
    (b"0xg", EINVAL), (b"--1", EINVAL), (b"-+1", EINVAL), (b"+-1", EINVAL),
    (b"++1", EINVAL), (b"1e3", EINVAL), (b"1.0", EINVAL), (b"\xef\xbc\x91", EINVAL),
    (b"\t1", EINVAL), (b"1\r\n", EINVAL), (b"1\0junk", 1),
]


@pytest.mark.parametrize("s,want", KSTRTOINT_BASE0)
def test_kstrtoint_base0(s, want):
    assert call(kstrtox.kstrtoint, s, 0) == want


# lib/kstrtox.c kstrtoul(s, 10): tracing_on's rule (kernel/trace/trace.c
# rb_simple_write, through kstrtoul_from_user); base 10 reads 010 as 10.
KSTRTOUL_BASE10 = [
    (b"1", 1), (b"0", 0), (b"010", 10), (b"+1", 1), (b"5\n", 5),
    (b"18446744073709551615", 2**64 - 1), (b"18446744073709551616", ERANGE),
    (b"-1", EINVAL), (b"0x1", EINVAL), (b" 1", EINVAL), (b"1 ", EINVAL),
    (b"", EINVAL), (b"1\n\n", EINVAL), (b"a", EINVAL),
]


@pytest.mark.parametrize("s,want", KSTRTOUL_BASE10)
def test_kstrtoul_base10(s, want):
    assert call(kstrtox.kstrtoul, s, 10) == want


# lib/kstrtox.c: the width of each kstrto*() (the module parameter types
# byte, short, ushort, int, uint, long, ulong, as kernel/params.c maps them).
@pytest.mark.parametrize("name,s,want", [
    ("kstrtou8", b"255", 255), ("kstrtou8", b"256", ERANGE), ("kstrtou8", b"-1", EINVAL),
    ("kstrtos16", b"-32768", -32768), ("kstrtos16", b"32768", ERANGE),
    ("kstrtou16", b"65535", 65535), ("kstrtou16", b"65536", ERANGE),
    ("kstrtouint", b"4294967295", 2**32 - 1), ("kstrtouint", b"4294967296", ERANGE),
    ("kstrtouint", b"-1", EINVAL),
    ("kstrtol", b"-9223372036854775808", -2**63), ("kstrtol", b"9223372036854775808", ERANGE),
    ("kstrtoul", b"0xffffffffffffffff", 2**64 - 1),
    ("kstrtoull", b"0x", EINVAL), ("kstrtoull", b"0x1", 1),
])
def test_kstrto_widths(name, s, want):
    assert call(getattr(kstrtox, name), s, 0) == want


def test_base16_skips_0x_even_without_digits():
    """_parse_integer_fixup_radix: with base 16 given, "0x" is skipped even
    when no hex digit follows (then nothing is left: -EINVAL)."""
    assert call(kstrtox.kstrtouint, b"0x1f", 16) == 31
    assert call(kstrtox.kstrtouint, b"1f", 16) == 31
    assert call(kstrtox.kstrtouint, b"0x", 16) == EINVAL


# lib/kstrtox.c kstrtobool (5.19+; 6.12 and 6.13 alike): the sysfs enabled/force/signal files of
# kernel/livepatch/core.c and module bool parameters.
KSTRTOBOOL = [
    (b"1", True), (b"1\n", True), (b"y", True), (b"Yes", True), (b"t", True), (b"True", True),
    (b"on", True), (b"ON\n", True), (b"oN", True), (b"12", True), (b"yikes", True),
    (b"0", False), (b"0\n", False), (b"n", False), (b"No", False), (b"f", False),
    (b"false", False), (b"off", False), (b"oF", False), (b"0x1", False),
    (b"", EINVAL), (b"\n", EINVAL), (b"o", EINVAL), (b"o\n", EINVAL), (b"ox", EINVAL),
    (b" 1", EINVAL), (b"2", EINVAL), (b"-1", EINVAL), (b"+1", EINVAL), (b"\xffy", EINVAL),
    (b"\0" b"1", EINVAL), (b"e", EINVAL), (b"d", EINVAL),
]


@pytest.mark.parametrize("s,want", KSTRTOBOOL)
def test_kstrtobool(s, want):
    assert call(kstrtox.kstrtobool, s) == want


@pytest.mark.parametrize("s", [b"t", b"True", b"f", b"false\n", b"T", b"F"])
def test_kstrtobool_before_5_19_refuses_t_and_f(s):
    assert call(kstrtox.kstrtobool, s, False) == EINVAL


@pytest.mark.parametrize("s,want", [(b"1", True), (b"Yes", True), (b"on", True), (b"0", False),
                                    (b"n", False), (b"oF", False)])
def test_kstrtobool_before_5_19(s, want):
    assert call(kstrtox.kstrtobool, s, False) == want


def test_from_user_copies_a_bounded_prefix():
    """kstrtobool_from_user copies 3 bytes, kstrtoul_from_user 66: what lies
    beyond is never read, so it cannot make the string invalid."""
    assert call(kstrtox.kstrtobool_from_user, b"1" + b"x" * 5000) is True
    assert call(kstrtox.kstrtoul_from_user, b"0" * 65 + b"7" + b"junk", 10) == 7
    assert call(kstrtox.kstrtoul_from_user, b"0" * 64 + b"7" + b"\n" + b"junk", 10) == 7
    assert call(kstrtox.kstrtoul_from_user, b"0" * 64 + b"7" + b"x", 10) == EINVAL


# kernel/sysctl.c __do_proc_dointvec + proc_get_long: a write of one int
# (kernel.ftrace_enabled and every proc_dointvec file): (bytes, ints stored,
# error, count write(2) returns).
PROC_DOINTVEC = [
    (b"1", (1,), 0, 1), (b"1\n", (1,), 0, 2), (b"0\n", (0,), 0, 2),
    (b"0x1\n", (1,), 0, 4), (b"010\n", (8,), 0, 4), (b"-1\n", (-1,), 0, 3),
    (b"  1\n", (1,), 0, 4), (b"\t\n 7 \n\n", (7,), 0, 7),
    (b"1 2\n", (1,), 0, 2), (b"1 2", (1,), 0, 2), (b"1\t2", (1,), 0, 2),
    (b"", (), 0, 0),
    (b"+1\n", (), EINVAL, 0), (b"\n", (), EINVAL, 0), (b"   ", (), EINVAL, 0),
    (b"1x\n", (), EINVAL, 0), (b"0x\n", (), EINVAL, 0), (b"08\n", (), EINVAL, 0),
    (b"1\r\n", (), EINVAL, 0), (b"-\n", (), EINVAL, 0), (b"-", (), EINVAL, 0),
    (b"--1", (), EINVAL, 0), (b"1\0", (), EINVAL, 0), (b"\xff", (), EINVAL, 0),
    (b"2147483647", (2**31 - 1,), 0, 10), (b"2147483648", (), EINVAL, 0),
    (b"-2147483648", (-2**31,), 0, 11), (b"-2147483649", (), EINVAL, 0),
    (b"18446744073709551616", (), EINVAL, 0),
    (b"0" * 20 + b"1", (), EINVAL, 0),            # 21 bytes: too long to trust
    (b"0" * 19 + b"1", (1,), 0, 20),
    (b"1" + b" " * 5000, (1,), 0, 5001),          # PAGE_SIZE - 1 parsed, all counted
    (b" " * 4095 + b"1", (), EINVAL, 0),          # the int lies beyond the window
    (b" " * 4094 + b"1", (1,), 0, 4095),
]


@pytest.mark.parametrize("buf,values,err,count", PROC_DOINTVEC)
def test_proc_dointvec_one_int(buf, values, err, count):
    assert kstrtox.proc_dointvec_write(buf) == IntvecWrite(values, err, count)


def test_proc_dointvec_vector_keeps_what_it_stored_before_an_error():
    """__do_proc_dointvec stores each int as it parses it: an error after the
    first leaves the earlier ones stored (kernel.printk's four ints)."""
    assert kstrtox.proc_dointvec_write(b"4 4 1 7\n", 4) == IntvecWrite((4, 4, 1, 7), 0, 8)
    assert kstrtox.proc_dointvec_write(b"4 x\n", 4) == IntvecWrite((4,), EINVAL, 2)
    assert kstrtox.proc_dointvec_write(b"4 5", 4) == IntvecWrite((4, 5), 0, 3)
