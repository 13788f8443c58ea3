"""The kernel's parsers of what user space writes: the strict kstrto*() family
(lib/kstrtox.c), kstrtobool, the *_from_user wrappers, and the sysctl integer
vector writer (kernel/sysctl.c: proc_get_long under __do_proc_dointvec).

Every function takes the bytes the kernel would see, so that a file served
from Python accepts, refuses and counts exactly what Linux does. The kstrto*()
functions read a C string (they stop at a NUL); the sysctl writer reads a
counted buffer. A refusal raises ParseError carrying the kernel's errno
(-EINVAL for a malformed string, -ERANGE for a value that does not fit).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Callable

from emu.errors import EmuError
from emu.kernel.ctype import SPACE_BYTES

PAGE_SIZE = 4096
ULLONG_MAX = (1 << 64) - 1
_HEX = b"0123456789abcdefABCDEF"


class ParseError(EmuError):
    """A kstrto*()/proc_get_long refusal; .errno is EINVAL or ERANGE."""

    def __init__(self, err: int) -> None:
        super().__init__(errno.errorcode.get(err, str(err)))
        self.errno = err


def _cstr(s: bytes) -> bytes:
    """What a C string function sees of a buffer: up to the first NUL."""
    return s.split(b"\0", 1)[0]


def _fixup_radix(s: bytes, base: int) -> tuple[int, int]:
    """_parse_integer_fixup_radix: (offset of the digits, base). Base 0 is
    16 after "0x" followed by a hex digit, 8 after a "0", else 10."""
    lower_x = s[1:2].lower() == b"x"
    if base == 0:
        if s[:1] == b"0":
            base = 16 if lower_x and s[2:3] and s[2:3] in _HEX else 8
        else:
            base = 10
    return (2 if base == 16 and s[:1] == b"0" and lower_x else 0), base


def _parse_integer(s: bytes, base: int) -> tuple[int, int, bool]:
    """_parse_integer: (value mod 2^64, digits consumed, overflowed)."""
    value, n, overflow = 0, 0, False
    for c in s:
        if 0x30 <= c <= 0x39:                # '0'-'9'
            digit = c - 0x30
        elif 0x61 <= c | 0x20 <= 0x66:       # 'a'-'f', either case
            digit = (c | 0x20) - 0x61 + 10
        else:
            break
        if digit >= base:
            break
        value = value * base + digit
        n += 1
    if value > ULLONG_MAX:
        overflow, value = True, value & ULLONG_MAX
    return value, n, overflow


def _kstrtoull(s: bytes, base: int) -> int:
    """_kstrtoull: digits, then at most one "\\n", then the end."""
    start, base = _fixup_radix(s, base)
    value, n, overflow = _parse_integer(s[start:], base)
    if overflow:
        raise ParseError(errno.ERANGE)
    if n == 0:
        raise ParseError(errno.EINVAL)
    rest = s[start + n:]
    if rest not in (b"", b"\n"):
        raise ParseError(errno.EINVAL)
    return value


def kstrtoull(s: bytes, base: int) -> int:
    """kstrtoull: an optional '+' (no '-'), no leading space, one trailing
    newline at most."""
    s = _cstr(s)
    return _kstrtoull(s[1:] if s[:1] == b"+" else s, base)


def kstrtoll(s: bytes, base: int) -> int:
    """kstrtoll: kstrtoull with an optional '-' ("-+1" is refused)."""
    s = _cstr(s)
    if s[:1] == b"-":
        value = _kstrtoull(s[1:], base)
        if value > 1 << 63:
            raise ParseError(errno.ERANGE)
        return -value
    value = kstrtoull(s, base)
    if value >> 63:
        raise ParseError(errno.ERANGE)
    return value


Parser = Callable[[bytes, int], int]


def _unsigned(bits: int) -> Parser:
    def parse(s: bytes, base: int) -> int:
        value = kstrtoull(s, base)
        if value >> bits:
            raise ParseError(errno.ERANGE)
        return value
    return parse


def _signed(bits: int) -> Parser:
    def parse(s: bytes, base: int) -> int:
        value = kstrtoll(s, base)
        if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
            raise ParseError(errno.ERANGE)
        return value
    return parse


kstrtoul = kstrtoull                    # unsigned long is 64 bits on x86-64
kstrtol = kstrtoll
kstrtouint, kstrtoint = _unsigned(32), _signed(32)
kstrtou16, kstrtos16 = _unsigned(16), _signed(16)
kstrtou8, kstrtos8 = _unsigned(8), _signed(8)


def kstrtobool(s: bytes, true_false: bool = True) -> bool:
    """kstrtobool: the first byte one of 1yY (true) or 0nN (false), and
    since 5.19 (`true_false`) tT or fF, or "on"/"off" by their first two
    bytes; the rest is ignored."""
    s = _cstr(s)
    first = s[:1]
    if first and first in (b"1yYtT" if true_false else b"1yY"):
        return True
    if first and first in (b"0nNfF" if true_false else b"0nN"):
        return False
    if first in (b"o", b"O") and s[1:2]:
        if s[1:2] in b"nN":
            return True
        if s[1:2] in b"fF":
            return False
    raise ParseError(errno.EINVAL)


def kstrtobool_from_user(buf: bytes) -> bool:
    """kstrtobool_from_user: only the first 3 bytes are copied."""
    return kstrtobool(buf[:3])


def kstrtoul_from_user(buf: bytes, base: int) -> int:
    """kstrtoul_from_user: the first 66 bytes (sign, 64 binary digits and a
    newline) are copied, the rest never read."""
    return kstrtoul(buf[:1 + 64 + 1], base)


# ---------------------------------------------------------------- sysctl
INT_MAX = (1 << 31) - 1
_TMPBUFLEN = 22
_WSPACE_SEP = b" \t\n"                    # proc_wspace_sep: what may follow a number


@dataclass(frozen=True)
class IntvecWrite:
    """What a proc_dointvec write did: the ints stored (in table order, also
    those stored before a later error), its error (0 or -errno), and the
    count write(2) returns when there is no error."""
    values: tuple[int, ...]
    err: int
    count: int


def _skip_spaces(buf: bytes, p: int, left: int) -> tuple[int, int]:
    while left and buf[p] in SPACE_BYTES:
        p, left = p + 1, left - 1
    return p, left


def proc_get_long(buf: bytes, p: int, size: int) -> tuple[int, bool, int]:
    """proc_get_long with proc_wspace_sep as the allowed trailers: (value,
    negative, bytes used). A '-' may lead, '+' may not; base 0 (010 is 8,
    0x1 is 1); at most 21 bytes are looked at; the number must be followed by
    a space, tab or newline, or end the buffer."""
    if size <= 0:
        raise ParseError(errno.EINVAL)
    tmp = _cstr(buf[p:p + min(size, _TMPBUFLEN - 1)])
    neg = tmp[:1] == b"-" and size > 1
    digits = tmp[1:] if neg else tmp
    if not digits[:1].isdigit():
        raise ParseError(errno.EINVAL)
    start, base = _fixup_radix(digits, 0)
    value, n, overflow = _parse_integer(digits[start:], base)
    if overflow:                          # strtoul_lenient's -ERANGE, made -EINVAL
        raise ParseError(errno.EINVAL)
    used = int(neg) + start + n
    if used == _TMPBUFLEN - 1:
        raise ParseError(errno.EINVAL)
    if used < size and buf[p + used] not in _WSPACE_SEP:
        raise ParseError(errno.EINVAL)
    return value, neg, used


def _dointvec_conv(value: int, neg: bool) -> int:
    """do_proc_dointvec_conv: the long read must fit an int."""
    if value > (INT_MAX + 1 if neg else INT_MAX):
        raise ParseError(errno.EINVAL)
    return -value if neg else value


def proc_dointvec_write(buf: bytes, nr_ints: int = 1) -> IntvecWrite:
    """__do_proc_dointvec's write of up to nr_ints ints at file position 0.

    An empty write stores nothing and returns 0. Leading whitespace is
    skipped; only the first PAGE_SIZE - 1 bytes are parsed; what follows the
    last int the table holds is left unread, so the count written falls
    short ("1 2" into one int: 1 is stored, 2 of 3 bytes written), though
    trailing whitespace counts as read. A buffer with no int is -EINVAL."""
    count = len(buf)
    if not count:
        return IntvecWrite((), 0, 0)
    left = min(count, PAGE_SIZE - 1)
    p, values, err = 0, [], 0
    while left and len(values) < nr_ints:
        p, left = _skip_spaces(buf, p, left)
        if not left:
            break
        try:
            value, neg, used = proc_get_long(buf, p, left)
            values.append(_dointvec_conv(value, neg))
        except ParseError as exc:
            err = -exc.errno
            break
        p, left = p + used, left - used
    if not err and left:
        p, left = _skip_spaces(buf, p, left)
    if not values:
        return IntvecWrite((), err or -errno.EINVAL, 0)
    return IntvecWrite(tuple(values), err, count - left)
