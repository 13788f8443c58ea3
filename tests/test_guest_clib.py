"""Tests for the guest kernel's freestanding C library.

fixtures/kernel/lib/{string,vsprintf,kstrtox}.c are compiled for the host
into a shared library (-nostdlib, so every symbol in it is ours and not
libc's) and called through ctypes.  Formatting is checked against glibc's
snprintf where the kernel agrees with C, and against a small model of the
kernel's rules where it does not.  A second group compiles the sources
with the exact guest flags.
"""

import ctypes
import errno
import itertools
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from emu.kernel import kstrtox as py_kstrtox
from ptr_hash import siphash24

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = ROOT / "fixtures" / "include"
LIBDIR = ROOT / "fixtures" / "kernel" / "lib"
SOURCES = [LIBDIR / "string.c", LIBDIR / "vsprintf.c", LIBDIR / "kstrtox.c",
           LIBDIR / "siphash.c"]
HEADERS = sorted(p.name for p in (INCLUDE / "linux").glob("*.h"))

GUEST_CFLAGS = [
    "-O2", "-ffreestanding", "-nostdinc", "-nostdlib", "-fno-pic", "-fno-pie",
    "-mcmodel=kernel", "-mno-red-zone", "-mno-sse", "-mno-mmx", "-mno-avx",
    "-pg", "-mfentry", "-mrecord-mcount", "-fno-omit-frame-pointer",
    "-fno-jump-tables", "-fcf-protection=none", "-fasynchronous-unwind-tables",
    "-fno-stack-protector", "-fno-builtin", f"-I{INCLUDE}",
]
WARN_FLAGS = ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
              "-Werror=implicit-function-declaration"]

EINVAL, ERANGE, E2BIG = -22, -34, -7

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

# Extra host-only code: wrappers for the va_list entry points and the
# header-only helpers, plus compile-time checks of <linux/types.h>.
HARNESS_C = r"""
#include <linux/types.h>
#include <linux/compiler.h>
#include <linux/stdarg.h>
#include <linux/err.h>
#include <linux/errno.h>
#include <linux/sprintf.h>

_Static_assert(sizeof(u8) == 1 && sizeof(s8) == 1, "8");
_Static_assert(sizeof(u16) == 2 && sizeof(s16) == 2, "16");
_Static_assert(sizeof(u32) == 4 && sizeof(s32) == 4, "32");
_Static_assert(sizeof(u64) == 8 && sizeof(s64) == 8, "64");
_Static_assert(sizeof(size_t) == 8 && sizeof(ssize_t) == 8, "size");
_Static_assert(sizeof(uintptr_t) == sizeof(void *), "uintptr");
_Static_assert(sizeof(loff_t) == 8 && sizeof(pid_t) == 4, "loff/pid");
_Static_assert(sizeof(gfp_t) == 4 && sizeof(bool) == 1, "gfp/bool");
_Static_assert((s8)-1 < 0 && (u64)-1 > 0, "signedness");

struct outer { int a; char b; long member; };

int h_vsnprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap, ap2;
	int n, m;

	va_start(ap, fmt);
	va_copy(ap2, ap);
	n = vsnprintf(buf, size, fmt, ap);
	/* The callee must not consume our va_list: run it twice. */
	m = vsnprintf(buf, size, fmt, ap2);
	va_end(ap2);
	va_end(ap);
	return n == m ? n : -1000;
}

int h_vscnprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vscnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n;
}

int h_vsprintf(char *buf, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsprintf(buf, fmt, ap);
	va_end(ap);
	return n;
}

void *h_err_ptr(long e) { return ERR_PTR(e); }
long h_ptr_err(const void *p) { return PTR_ERR(p); }
int h_is_err(const void *p) { return IS_ERR(p); }
int h_is_err_or_null(const void *p) { return IS_ERR_OR_NULL(p); }
int h_ptr_err_or_zero(const void *p) { return PTR_ERR_OR_ZERO(p); }

int h_misc(void)
{
	struct outer o;
	int arr[7];
	long x = 5;

	WRITE_ONCE(x, READ_ONCE(x) + 1);
	barrier();
	if (container_of(&o.member, struct outer, member) != &o)
		return 1;
	if (offsetof(struct outer, member) != 8 || ARRAY_SIZE(arr) != 7)
		return 2;
	if (!likely(x == 6) || unlikely(x != 6) || NULL != (void *)0)
		return 3;
	return true + false + 41;
}
"""

# A symbol table with two entries, one formatted into the caller's buffer
# and one returned as a constant string.
HOOK_C = r"""
#include <linux/types.h>
#include <linux/sprintf.h>

const char *vsprintf_symbol_hook(unsigned long addr, char *buf, size_t len)
{
	if (addr >= 0x1000 && addr < 0x1100) {
		snprintf(buf, len, "my_func+0x%lx/0x100", addr - 0x1000);
		return buf;
	}
	if (addr == 0x2004)
		return "mod_func+0x4/0x40 [klp_mod]";
	return NULL;
}
"""


def _gcc(args, cwd=None):
    res = subprocess.run(["gcc", *map(str, args)], capture_output=True,
                         text=True, cwd=cwd)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "", res.stderr   # no warnings either
    return res


def _build_host(tmp, name, extra_sources):
    srcs = list(SOURCES)
    for i, text in enumerate(extra_sources):
        p = tmp / f"{name}_{i}.c"
        p.write_text(text)
        srcs.append(p)
    out = tmp / f"{name}.so"
    _gcc(["-O1", "-ffreestanding", "-fno-builtin", "-fno-stack-protector",
          f"-I{INCLUDE}", "-fPIC", "-shared", "-nostdlib", "-Wl,-Bsymbolic",
          "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
          "-o", out, *srcs])
    return _declare(ctypes.CDLL(str(out)))


def _declare(lib):
    c_char_p, c_void_p, c_size_t = ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t
    c_int, c_uint = ctypes.c_int, ctypes.c_uint
    sigs = {
        "memcpy": (c_void_p, [c_void_p, c_void_p, c_size_t]),
        "memmove": (c_void_p, [c_void_p, c_void_p, c_size_t]),
        "memset": (c_void_p, [c_void_p, c_int, c_size_t]),
        "memcmp": (c_int, [c_void_p, c_void_p, c_size_t]),
        "memchr": (c_void_p, [c_void_p, c_int, c_size_t]),
        "strlen": (c_size_t, [c_char_p]),
        "strnlen": (c_size_t, [c_char_p, c_size_t]),
        "strcmp": (c_int, [c_char_p, c_char_p]),
        "strncmp": (c_int, [c_char_p, c_char_p, c_size_t]),
        "strcasecmp": (c_int, [c_char_p, c_char_p]),
        "strncasecmp": (c_int, [c_char_p, c_char_p, c_size_t]),
        "strcpy": (c_void_p, [c_void_p, c_char_p]),
        "strncpy": (c_void_p, [c_void_p, c_char_p, c_size_t]),
        "strscpy": (ctypes.c_ssize_t, [c_void_p, c_char_p, c_size_t]),
        "strcat": (c_void_p, [c_void_p, c_char_p]),
        "strncat": (c_void_p, [c_void_p, c_char_p, c_size_t]),
        "strchr": (c_void_p, [c_void_p, c_int]),
        "strrchr": (c_void_p, [c_void_p, c_int]),
        "strstr": (c_void_p, [c_void_p, c_char_p]),
        "strspn": (c_size_t, [c_char_p, c_char_p]),
        "strcspn": (c_size_t, [c_char_p, c_char_p]),
        "strsep": (c_void_p, [c_void_p, c_char_p]),
        "skip_spaces": (c_void_p, [c_void_p]),
        "strim": (c_void_p, [c_void_p]),
        "sysfs_streq": (ctypes.c_bool, [c_char_p, c_char_p]),
        "kstrtobool": (c_int, [c_char_p, c_void_p]),
        "simple_strtoull": (ctypes.c_ulonglong, [c_void_p, c_void_p, c_uint]),
        "simple_strtoul": (ctypes.c_ulong, [c_void_p, c_void_p, c_uint]),
        "simple_strtoll": (ctypes.c_longlong, [c_void_p, c_void_p, c_uint]),
        "simple_strtol": (ctypes.c_long, [c_void_p, c_void_p, c_uint]),
        "h_err_ptr": (c_void_p, [ctypes.c_long]),
        "h_ptr_err": (ctypes.c_long, [c_void_p]),
        "h_is_err": (c_int, [c_void_p]),
        "h_is_err_or_null": (c_int, [c_void_p]),
        "h_ptr_err_or_zero": (c_int, [c_void_p]),
        "h_misc": (c_int, []),
    }
    for name in KSTRTO_TYPES:
        sigs[name] = (c_int, [c_char_p, c_uint, c_void_p])
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    # Variadic: no argtypes, every argument passed as an explicit ctypes type.
    for name in ("snprintf", "scnprintf", "sprintf", "h_vsnprintf",
                 "h_vscnprintf", "h_vsprintf"):
        getattr(lib, name).restype = c_int
    return lib


KSTRTO_TYPES = {
    "kstrtoull": ctypes.c_ulonglong, "kstrtoll": ctypes.c_longlong,
    "kstrtoul": ctypes.c_ulong, "kstrtol": ctypes.c_long,
    "kstrtouint": ctypes.c_uint, "kstrtoint": ctypes.c_int,
    "kstrtou16": ctypes.c_uint16, "kstrtos16": ctypes.c_int16,
    "kstrtou8": ctypes.c_uint8, "kstrtos8": ctypes.c_int8,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guest_clib")
    return {
        "plain": _build_host(tmp, "plain", [HARNESS_C]),
        "hook": _build_host(tmp, "hook", [HARNESS_C, HOOK_C]),
    }


@pytest.fixture(scope="module")
def lib(built):
    return built["plain"]


@pytest.fixture(scope="module")
def libc():
    c = ctypes.CDLL("libc.so.6")
    c.snprintf.restype = ctypes.c_int
    return c


def fmt(fn, f, *args, size=512):
    """Call a snprintf-like fn; return (return value, buffer contents)."""
    buf = ctypes.create_string_buffer(b"\x7f" * size, size) if size else None
    ret = fn(buf, ctypes.c_size_t(size), f.encode(), *args)
    return ret, (buf.value.decode("latin-1") if size else None)


def ours(lib, f, *args):
    ret, s = fmt(lib.snprintf, f, *args)
    assert ret == len(s), (f, args, ret, s)
    return s


# ---------------------------------------------------------------- vsprintf

def _kernel_int(flags, width, prec, conv, val):
    """The kernel's integer layout (see the comment in vsprintf.c)."""
    base = {"o": 8, "x": 16, "X": 16}.get(conv, 10)
    left = "-" in flags
    zero = "0" in flags and not left
    sign = ""
    if conv in "di":
        if val < 0:
            sign, val = "-", -val
        elif "+" in flags:
            sign = "+"
        elif " " in flags:
            sign = " "
    prefix = ""
    if "#" in flags and base == 16:
        prefix = "0" + conv
    elif "#" in flags and base == 8 and val:
        prefix = "0"
    digits = format(val, {8: "o", 10: "d", 16: conv}[base])
    body = digits.rjust(max(prec if prec is not None else -1, len(digits)), "0")
    pad = (width or 0) - len(body) - len(sign) - len(prefix)
    if left:
        return sign + prefix + body + " " * pad
    if zero:
        return sign + prefix + "0" * pad + body
    return " " * pad + sign + prefix + body


def _c_agrees(flags, prec, conv, val):
    """False for the combinations where the kernel deliberately differs."""
    if "0" in flags and "-" not in flags and prec is not None:
        return False        # kernel: '0' still pads when a precision is given
    if prec == 0 and val == 0:
        return False        # kernel prints "0", C prints nothing
    if "#" in flags and conv in "xX" and val == 0:
        return False        # kernel prints "0x0", C prints "0"
    if "#" in flags and conv == "o" and prec is not None:
        return False        # C folds the '0' prefix into the precision
    return True


def _check_int_matrix(lib, libc, quals, ctype, bits, flag_set, widths, precs,
                      convs, values):
    count = 0
    for flags, width, prec, conv, v in itertools.product(
            flag_set, widths, precs, convs, values):
        f = "%" + flags + (str(width) if width is not None else "")
        if prec is not None:
            # Precision 0 is written alternately as ".0" and as a bare ".".
            f += "." + (str(prec) if prec or (count & 1) else "")
        f += quals + conv
        mask = (1 << bits) - 1
        val = v & mask
        if conv in "di" and val >> (bits - 1):
            val -= 1 << bits
        got = ours(lib, f, ctype(v))
        assert got == _kernel_int(flags, width, prec, conv, val), (f, v)
        if libc and _c_agrees(flags, prec, conv, val):
            assert got == fmt(libc.snprintf, f, ctype(v))[1], (f, v)
        count += 1
    return count


INT_FLAGS = ["", "-", "0", "+", " ", "#", "-+", "0+", "0 ", "-#", "0#",
             "+ ", "-0", "#0-+ "]


def test_int_conversions_matrix(lib, libc):
    values = [0, 1, 7, 8, -1, 42, -42, 255, 65535, 2**31 - 1, -2**31,
              123456789]
    n = _check_int_matrix(lib, libc, "", ctypes.c_int, 32, INT_FLAGS,
                          [None, 1, 6, 12], [None, 0, 1, 4], "diuxXo", values)
    assert n > 10000


@pytest.mark.parametrize("quals,ctype,bits", [
    ("hh", ctypes.c_int, 8), ("h", ctypes.c_int, 16),
    ("l", ctypes.c_long, 64), ("ll", ctypes.c_longlong, 64),
    ("L", ctypes.c_longlong, 64), ("z", ctypes.c_size_t, 64),
    ("t", ctypes.c_ssize_t, 64),
])
def test_int_length_modifiers(lib, libc, quals, ctype, bits):
    values = [0, 1, -1, 127, 128, 300, -129, 70000, -70000, 2**63 - 1,
              -2**63, 2**64 - 1, 0x123456789ABCDEF]
    if quals == "L":        # glibc's L is for long double only
        libc = None
    _check_int_matrix(lib, libc, quals, ctype, bits,
                      ["", "-", "0", "+", "#", " "], [None, 25], [None, 0, 20],
                      "diuxXo", values)


def test_kernel_specific_integer_output(lib):
    i = ctypes.c_int
    assert ours(lib, "%#x|%#X|%#o", i(0), i(0), i(0)) == "0x0|0X0|0"
    assert ours(lib, "%.0d|%.d|%.0x", i(0), i(0), i(0)) == "0|0|0"
    assert ours(lib, "%06.3d|%-06.3d|", i(5), i(5)) == "000005|005   |"
    assert ours(lib, "%#.3o|%#o", i(8), i(8)) == "0010|010"
    assert ours(lib, "%#10x|%#010x", i(255), i(255)) == "      0xff|0x000000ff"
    assert ours(lib, "%lld %llu", ctypes.c_longlong(-2**63),
                ctypes.c_ulonglong(2**64 - 1)) == \
        "-9223372036854775808 18446744073709551615"
    assert ours(lib, "%llo", ctypes.c_ulonglong(2**64 - 1)) == "1" + "7" * 21
    assert ours(lib, "%zd %zu %zx", ctypes.c_ssize_t(-3), ctypes.c_size_t(3),
                ctypes.c_size_t(0xabc)) == "-3 3 abc"


def test_strings_chars_and_percent(lib, libc):
    strs = [b"", b"a", b"hello world", b"\xe9t\xe9"]
    for flags, width, prec, s in itertools.product(
            ["", "-"], [None, 0, 3, 15], [None, 0, 2, 20], strs):
        f = "%" + flags + (str(width) if width is not None else "") + \
            (f".{prec}" if prec is not None else "") + "s"
        assert ours(lib, f, s) == fmt(libc.snprintf, f, s)[1], f
    for f in ["%c", "%5c", "%-5c|", "%c%c%c"]:
        args = [ctypes.c_int(c) for c in b"xyz"]
        assert ours(lib, f, *args) == fmt(libc.snprintf, f, *args)[1]
    assert ours(lib, "%c", ctypes.c_int(0x141)) == "A"
    assert ours(lib, "100%% sure, %s%%", b"50") == "100% sure, 50%"
    assert ours(lib, "%05s|%-05s|", b"ab", b"ab") == "   ab|ab   |"
    assert ours(lib, "plain text") == "plain text"
    assert ours(lib, "") == ""


def test_bad_string_pointers(lib):
    assert ours(lib, "%s", None) == "(null)"
    assert ours(lib, "[%8s]", None) == "[  (null)]"
    assert ours(lib, "[%.3s]", None) == "[(nu]"
    assert ours(lib, "%s", ctypes.c_void_p(16)) == "(efault)"
    assert ours(lib, "%s", ctypes.c_void_p(2**64 - 22)) == "(efault)"


def test_star_width_and_precision(lib, libc):
    i = ctypes.c_int
    cases = [
        ("%*d|", i(6), i(42)), ("%*d|", i(-6), i(42)), ("%-*d|", i(-6), i(42)),
        ("%0*d|", i(6), i(-42)), ("%.*s|", i(3), b"abcdef"),
        ("%.*s|", i(-1), b"abcdef"), ("%.*d|", i(-1), i(5)),
        ("%.*d|", i(4), i(5)), ("%*.*s|", i(8), i(2), b"abc"),
        ("%-*.*x|", i(8), i(6), i(0xbeef)),
    ]
    for f, *args in cases:
        assert ours(lib, f, *args) == fmt(libc.snprintf, f, *args)[1], f


PTRVAL = "(____ptrval____)"


def test_pointers(lib):
    """Before the boot fills the hashing key, plain %p prints the kernel's
    placeholder in a 16-char field; %px always prints the value; NULL and
    error pointers are no addresses and print as they are."""
    p = ctypes.c_void_p
    assert ours(lib, "%p", p(0x1234)) == PTRVAL
    assert ours(lib, "%px", p(0xffffffff81000000)) == "ffffffff81000000"
    assert ours(lib, "%p", None) == "0" * 16
    assert ours(lib, "%p", p(-22 & (2**64 - 1))) == "ffffffffffffffea"
    assert ours(lib, "[%20px]", p(0x1234)) == "[" + " " * 16 + "1234]"
    assert ours(lib, "[%-20px]", p(0xabc)) == "[abc" + " " * 17 + "]"
    assert ours(lib, "[%-20p]", p(0xabc)) == f"[{PTRVAL}]"     # the width is 16
    # Alphanumerics after %p select an extension and are all consumed; %pK
    # (kptr_restrict 0) and extensions we do not know are hashed like %p.
    assert ours(lib, "%pK|%pabc9!", p(1), p(2)) == f"{PTRVAL}|{PTRVAL}!"
    assert ours(lib, "%px %s", p(1), b"x") == "0000000000000001 x"


def _key() -> tuple[ctypes.Array, bytes]:
    """The key 00..0f, as siphash_key_t and as bytes."""
    raw = bytes(range(16))
    return (ctypes.c_uint64 * 2)(int.from_bytes(raw[:8], "little"),
                                 int.from_bytes(raw[8:], "little")), raw


def test_siphash_matches_the_specification(lib):
    """The reference vector of the SipHash paper (key 00..0f, message 00..0e:
    a129ca6149be45e5), every length across the block boundaries, and the
    fixed-width forms against the byte form."""
    key, raw = _key()
    lib.siphash.restype = ctypes.c_uint64
    lib.siphash.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
    assert siphash24(raw, bytes(range(15))) == 0xA129CA6149BE45E5
    for n in range(0, 65):
        msg = bytes((7 * i + n) & 0xFF for i in range(n))
        assert lib.siphash(msg, n, key) == siphash24(raw, msg), n
    for name, count in (("siphash_1u64", 1), ("siphash_2u64", 2), ("siphash_3u64", 3)):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_uint64
        fn.argtypes = [ctypes.c_uint64] * count + [ctypes.c_void_p]
        words = [0xFFFFFFFF81000000 + 0x1111 * i for i in range(count)]
        msg = b"".join(w.to_bytes(8, "little") for w in words)
        assert fn(*words, key) == siphash24(raw, msg), name


class _PointerPolicy:
    """Sets vsprintf.c's %p policy variables in the host library and puts
    them back (the library is shared by the module's tests)."""

    NAMES = ("no_hash_pointers", "debug_boot_weak_hash", "filled_random_ptr_key")

    def __init__(self, lib):
        self.flags = {n: ctypes.c_bool.in_dll(lib, n) for n in self.NAMES}
        self.key = (ctypes.c_uint64 * 2).in_dll(lib, "ptr_key")

    def __enter__(self):
        self.saved = ({n: f.value for n, f in self.flags.items()}, tuple(self.key))
        return self

    def __exit__(self, *exc):
        flags, key = self.saved
        for n, v in flags.items():
            self.flags[n].value = v
        self.key[0], self.key[1] = key


def test_plain_p_prints_the_keyed_hash(lib):
    """lib/vsprintf.c: once the key is filled, %p prints the low 32 bits of
    siphash_1u64(ptr, key), zero-padded to 16 digits; %px the value."""
    p = ctypes.c_void_p
    with _PointerPolicy(lib) as pol:
        pol.key[0], pol.key[1] = 0x0706050403020100, 0x0F0E0D0C0B0A0908
        pol.flags["filled_random_ptr_key"].value = True
        for addr in (0x1234, 0xFFFF888000123450, 0xFFFFFFFFA0001620):
            want = siphash24(bytes(range(16)), addr.to_bytes(8, "little")) & 0xFFFFFFFF
            assert ours(lib, "%p", p(addr)) == f"{want:016x}"
            assert ours(lib, "%pK", p(addr)) == f"{want:016x}"
            assert ours(lib, "%px", p(addr)) == f"{addr:016x}"
        assert ours(lib, "%p", None) == "0" * 16
        # a field width of its own: space-padded, as pointer_string() does
        want = siphash24(bytes(range(16)), (0x1234).to_bytes(8, "little")) & 0xFFFFFFFF
        assert ours(lib, "[%20p]", p(0x1234)) == f"[{want:>20x}]"


def test_no_hash_pointers_and_weak_hash(lib):
    """no_hash_pointers prints every %p as %px; debug_boot_weak_hash uses
    hash_long(ptr, 32): the top 32 bits of ptr * GOLDEN_RATIO_64."""
    p = ctypes.c_void_p
    addr = 0xFFFF888000123450
    with _PointerPolicy(lib) as pol:
        pol.flags["no_hash_pointers"].value = True
        assert ours(lib, "%p|%pK", p(addr), p(addr)) == f"{addr:016x}|{addr:016x}"
        pol.flags["no_hash_pointers"].value = False
        pol.flags["debug_boot_weak_hash"].value = True
        weak = ((addr * 0x61C8864680B583EB) & (2**64 - 1)) >> 32
        assert ours(lib, "%p", p(addr)) == f"{weak:016x}"


def test_gfp_flag_names(lib):
    """%pGg: composite masks first, in the kernel's table order."""
    def gfp(value):
        flags = ctypes.c_uint(value)
        return ours(lib, "%pGg", ctypes.byref(flags))
    assert gfp(0xCC0) == "GFP_KERNEL"
    assert gfp(0x820) == "GFP_ATOMIC"
    assert gfp(0x800) == "GFP_NOWAIT"
    assert gfp(0x2800) == "GFP_NOWAIT|__GFP_NOWARN"
    assert gfp(0xDC0) == "GFP_KERNEL|__GFP_ZERO"
    assert gfp(0x400CC0) == "GFP_KERNEL_ACCOUNT"
    assert gfp(0xCC0 | 0x200) == "GFP_KERNEL|0x200"      # a bit with no name


def test_symbol_pointers_without_hook(lib):
    p = ctypes.c_void_p
    assert ours(lib, "%pS", p(0xffffffff81000010)) == "0xffffffff81000010"
    assert ours(lib, "%ps|", p(0x1010)) == "0x1010|"
    assert ours(lib, "%pS", None) == "0x0"


def test_symbol_pointers_with_hook(built):
    lib, p = built["hook"], ctypes.c_void_p
    assert ours(lib, "%pS", p(0x1010)) == "my_func+0x10/0x100"
    assert ours(lib, "%ps", p(0x1010)) == "my_func"
    assert ours(lib, "%pS", p(0x2004)) == "mod_func+0x4/0x40 [klp_mod]"
    assert ours(lib, "%ps", p(0x2004)) == "mod_func [klp_mod]"
    assert ours(lib, "[%10ps]", p(0x1000)) == "[   my_func]"
    assert ours(lib, "[%-10ps]", p(0x1000)) == "[my_func   ]"
    assert ours(lib, "%pS", p(0x3000)) == "0x3000"        # hook says unknown
    assert ours(lib, "at %pS in", p(0x10ff)) == "at my_func+0xff/0x100 in"


def test_invalid_conversion_stops_output(lib):
    assert fmt(lib.snprintf, "ab%yc%d", ctypes.c_int(1)) == (2, "ab")
    assert fmt(lib.snprintf, "ab%") == (2, "ab")


@pytest.mark.parametrize("fn", ["snprintf", "h_vsnprintf"])
def test_vsnprintf_truncation(lib, fn):
    f = getattr(lib, fn)
    assert fmt(f, "hello world", size=5) == (11, "hell")
    assert fmt(f, "hello world", size=1) == (11, "")
    assert fmt(f, "hello world", size=11) == (11, "hello worl")
    assert fmt(f, "hello world", size=12) == (11, "hello world")
    assert fmt(f, "%d-%s", ctypes.c_int(-12345), b"abc", size=4) == (10, "-12")
    assert fmt(f, "%20d", ctypes.c_int(1), size=8) == (20, " " * 7)
    # size 0: nothing is written at all.
    buf = ctypes.create_string_buffer(b"XYZ", 4)
    assert f(buf, ctypes.c_size_t(0), b"abc") == 3 and buf.value == b"XYZ"
    assert f(None, ctypes.c_size_t(0), b"%d", ctypes.c_int(12345)) == 5
    # A size above INT_MAX is refused (most likely a negative length).
    assert f(buf, ctypes.c_size_t(2**63), b"abc") == 0 and buf.value == b"XYZ"


@pytest.mark.parametrize("fn", ["scnprintf", "h_vscnprintf"])
def test_scnprintf(lib, fn):
    f = getattr(lib, fn)
    assert fmt(f, "hello world", size=5) == (4, "hell")
    assert fmt(f, "hello world", size=1) == (0, "")
    assert fmt(f, "hello world", size=11) == (10, "hello worl")
    assert fmt(f, "hello world", size=12) == (11, "hello world")
    assert fmt(f, "hello %s", b"you", size=64) == (9, "hello you")
    assert f(None, ctypes.c_size_t(0), b"abc") == 0


@pytest.mark.parametrize("fn", ["sprintf", "h_vsprintf"])
def test_sprintf(lib, fn):
    buf = ctypes.create_string_buffer(64)
    n = getattr(lib, fn)(buf, b"%s=%04d %#x", b"val", ctypes.c_int(42),
                         ctypes.c_int(255))
    assert (n, buf.value) == (13, b"val=0042 0xff")


# ----------------------------------------------------------------- kstrtox

def kstrto(lib, name, s, base=0):
    """Returns (ret, value); value is None when *res was left untouched."""
    ctype = KSTRTO_TYPES[name]
    sentinel = {1: 0x5a, 2: 0x5a5a, 4: 0x5a5a5a5a}.get(ctypes.sizeof(ctype),
                                                     0x5a5a5a5a5a5a5a5a)
    res = ctype(sentinel)
    ret = getattr(lib, name)(s.encode() if s is not None else None, base,
                             ctypes.byref(res))
    if ret:
        assert res.value == ctype(sentinel).value, "written on error"
        return ret, None
    return 0, res.value


U64_CASES = [
    ("0", 0, 0), ("123", 10, 123), ("0x1f", 0, 31), ("0X1F", 16, 31),
    ("1f", 16, 31), ("0x1f", 16, 31), ("017", 0, 15), ("017", 8, 15),
    ("017", 10, 17), ("+5", 10, 5), ("5\n", 10, 5), ("0\n", 0, 0),
    ("18446744073709551615", 10, 2**64 - 1), ("0xffffffffffffffff", 0, 2**64 - 1),
    ("01777777777777777777777", 0, 2**64 - 1),
    ("18446744073709551616", 10, ERANGE), ("0x10000000000000000", 0, ERANGE),
    ("99999999999999999999x", 10, ERANGE),
    ("-5", 10, EINVAL), ("-0", 10, EINVAL), ("08", 0, EINVAL), ("0x", 0, EINVAL),
    ("0x", 16, EINVAL), ("0xg", 0, EINVAL), ("", 10, EINVAL), ("\n", 10, EINVAL),
    ("+", 10, EINVAL), ("++5", 10, EINVAL), (" 5", 10, EINVAL),
    ("5 ", 10, EINVAL), ("5\n\n", 10, EINVAL), ("1\n\n", 0, EINVAL),
    ("12a", 10, EINVAL), ("0b101", 0, EINVAL), ("5\n6", 10, EINVAL),
    ("9", 8, EINVAL), ("z", 16, EINVAL),
]

S64_CASES = [
    ("-5", 10, -5), ("-5\n", 10, -5), ("-0", 10, 0), ("+7", 10, 7),
    ("-0x10", 0, -16), ("-0x10", 16, -16), ("-010", 0, -8),
    ("9223372036854775807", 10, 2**63 - 1),
    ("-9223372036854775808", 10, -2**63),
    ("9223372036854775808", 10, ERANGE), ("-9223372036854775809", 10, ERANGE),
    ("-18446744073709551616", 10, ERANGE), ("18446744073709551615", 10, ERANGE),
    ("--5", 10, EINVAL), ("-+5", 10, EINVAL), ("+-5", 10, EINVAL),
    ("-", 10, EINVAL), ("- 5", 10, EINVAL), ("-5\n\n", 10, EINVAL),
]


@pytest.mark.parametrize("name", ["kstrtoull", "kstrtoul"])
@pytest.mark.parametrize("s,base,want", U64_CASES)
def test_kstrto_u64(lib, name, s, base, want):
    expected = (want, None) if want in (EINVAL, ERANGE) else (0, want)
    assert kstrto(lib, name, s, base) == expected, (s, base)


@pytest.mark.parametrize("name", ["kstrtoll", "kstrtol"])
@pytest.mark.parametrize("s,base,want", S64_CASES + [
    c for c in U64_CASES if c[2] in (EINVAL, ERANGE) and c[0] not in
    ("-0", "-5")] + [("123", 10, 123), ("0x1f", 0, 31), ("017", 0, 15)])
def test_kstrto_s64(lib, name, s, base, want):
    expected = (want, None) if want in (EINVAL, ERANGE) else (0, want)
    assert kstrto(lib, name, s, base) == expected, (s, base)


@pytest.mark.parametrize("name,s,want", [
    ("kstrtouint", "4294967295", 2**32 - 1), ("kstrtouint", "0xffffffff", 2**32 - 1),
    ("kstrtouint", "4294967296", ERANGE), ("kstrtouint", "-1", EINVAL),
    ("kstrtouint", "+0\n", 0),
    ("kstrtoint", "2147483647", 2**31 - 1), ("kstrtoint", "-2147483648", -2**31),
    ("kstrtoint", "2147483648", ERANGE), ("kstrtoint", "-2147483649", ERANGE),
    ("kstrtoint", "0x7fffffff", 2**31 - 1), ("kstrtoint", "-0x80000000", -2**31),
    ("kstrtoint", "0x80000000", ERANGE), ("kstrtoint", "12\n", 12),
    ("kstrtoint", "1\n\n", EINVAL), ("kstrtoint", "x", EINVAL),
    ("kstrtou16", "65535", 65535), ("kstrtou16", "65536", ERANGE),
    ("kstrtos16", "-32768", -32768), ("kstrtos16", "32768", ERANGE),
    ("kstrtou8", "255", 255), ("kstrtou8", "256", ERANGE),
    ("kstrtou8", "-1", EINVAL),
    ("kstrtos8", "-128", -128), ("kstrtos8", "127", 127),
    ("kstrtos8", "128", ERANGE), ("kstrtos8", "-129", ERANGE),
])
def test_kstrto_narrow(lib, name, s, want):
    expected = (want, None) if want in (EINVAL, ERANGE) else (0, want)
    assert kstrto(lib, name, s) == expected



def _python_kstrto(name, s, base):
    """emu.kernel.kstrtox's answer, in kstrto()'s (ret, value) form."""
    try:
        return 0, getattr(py_kstrtox, name)(s.encode(), base)
    except py_kstrtox.ParseError as exc:
        return -exc.errno, None


@pytest.mark.parametrize("name", sorted(KSTRTO_TYPES))
def test_python_kstrtox_agrees_with_the_guest(lib, name):
    """The host's parser (emu.kernel.kstrtox, for files served from Python)
    and the guest's C kstrtox answer every row alike, in every base."""
    rows = {(s, base) for s, base, _ in U64_CASES + S64_CASES}
    rows |= {(s, base) for s, _, _ in U64_CASES + S64_CASES for base in (0, 8, 10, 16)}
    rows |= {(s, 0) for s in ("127", "128", "255", "256", "-129", "32768", "65536",
                               "4294967296", "-2147483649", "0x", "1_0", " 1", "1\n\n")}
    for s, base in sorted(rows):
        assert _python_kstrto(name, s, base) == kstrto(lib, name, s, base), (name, s, base)


@pytest.mark.parametrize("s", [b"y", b"Y", b"1", b"on", b"ON", b"On\n", b"t", b"True", b"n", b"0",
                               b"off", b"oF", b"f", b"", b"o", b"ox", b"x", b"2", b" y", b"\n"])
def test_python_kstrtobool_agrees_with_the_guest(lib, s):
    res = ctypes.c_uint8(0)
    ret = lib.kstrtobool(s, ctypes.byref(res))
    try:
        assert (0, py_kstrtox.kstrtobool(s)) == (ret, bool(res.value))
    except py_kstrtox.ParseError as exc:
        assert -exc.errno == ret


def test_kstrtobool(lib):
    def kb(s):
        res = ctypes.c_uint8(0x5a)
        ret = lib.kstrtobool(s, ctypes.byref(res))
        return (ret, None) if ret else (0, bool(res.value))

    for s in [b"y", b"Y", b"1", b"yes", b"on", b"ON", b"oN", b"On\n", b"t",
              b"True", b"1\n"]:
        assert kb(s) == (0, True), s
    for s in [b"n", b"N", b"0", b"no", b"off", b"OFF", b"oF", b"f", b"false"]:
        assert kb(s) == (0, False), s
    for s in [b"", b"o", b"ox", b"x", b"2", b" y", b"\n", None]:
        assert kb(s) == (EINVAL, None), s


def test_simple_strto(lib):
    def call(name, s, base):
        buf = ctypes.create_string_buffer(s)
        end = ctypes.c_void_p()
        val = getattr(lib, name)(buf, ctypes.byref(end), base)
        # Also works with endp == NULL.
        assert getattr(lib, name)(buf, None, base) == val
        return val, end.value - ctypes.addressof(buf)

    assert call("simple_strtoul", b"123abc", 10) == (123, 3)
    assert call("simple_strtoul", b"0x1fz", 0) == (31, 4)
    assert call("simple_strtoul", b"0x", 0) == (0, 1)
    assert call("simple_strtoul", b"0x", 16) == (0, 2)
    assert call("simple_strtoul", b"017", 0) == (15, 3)
    assert call("simple_strtoul", b"  5", 10) == (0, 0)
    assert call("simple_strtoul", b"-5", 10) == (0, 0)
    assert call("simple_strtoull", b"ff\n", 16) == (255, 2)
    assert call("simple_strtoull", b"18446744073709551616", 10) == (0, 20)
    assert call("simple_strtol", b"-5", 10) == (-5, 2)
    assert call("simple_strtol", b"42 rest", 0) == (42, 2)
    assert call("simple_strtoll", b"-0x10", 0) == (-16, 5)
    assert call("simple_strtoll", b"-9223372036854775808", 10) == (-2**63, 20)


# ------------------------------------------------------------------ string

def _buf(data, size=64):
    b = ctypes.create_string_buffer(size)
    b.raw = data.ljust(size, b"\0")
    return b, ctypes.addressof(b)


def test_mem_functions(lib):
    b, a = _buf(b"0123456789")
    assert lib.memmove(a + 2, a, 6) == a + 2          # overlap, dest above
    assert b.raw[:10] == b"0101234589"
    b, a = _buf(b"0123456789")
    lib.memmove(a, a + 3, 7)                          # overlap, dest below
    assert b.raw[:10] == b"3456789789"
    b, a = _buf(b"abcdef")
    assert lib.memcpy(a + 10, a, 4) == a + 10 and b.raw[10:15] == b"abcd\0"
    assert lib.memset(a, 0x1ff, 3) == a and b.raw[:4] == b"\xff\xff\xffd"
    lib.memset(a, 0, 0)
    assert b.raw[:1] == b"\xff"
    x, xa = _buf(b"abc\x80")
    y, ya = _buf(b"abc\x01")
    assert lib.memcmp(xa, ya, 3) == 0
    assert lib.memcmp(xa, ya, 4) > 0 and lib.memcmp(ya, xa, 4) < 0
    assert lib.memcmp(xa, ya, 0) == 0
    assert lib.memchr(xa, 0x80, 4) == xa + 3
    assert lib.memchr(xa, ord("c"), 2) is None


def test_length_and_compare(lib):
    assert lib.strlen(b"") == 0 and lib.strlen(b"hello") == 5
    assert lib.strnlen(b"hello", 3) == 3 and lib.strnlen(b"hi", 10) == 2
    assert lib.strnlen(b"hi", 0) == 0
    assert lib.strcmp(b"abc", b"abc") == 0
    assert lib.strcmp(b"abc", b"abd") < 0 < lib.strcmp(b"abd", b"abc")
    assert lib.strcmp(b"ab", b"abc") < 0 < lib.strcmp(b"abc", b"ab")
    assert lib.strcmp(b"\xff", b"a") > 0                # unsigned chars
    assert lib.strncmp(b"abcX", b"abcY", 3) == 0
    assert lib.strncmp(b"abcX", b"abcY", 4) < 0
    assert lib.strncmp(b"a", b"b", 0) == 0
    assert lib.strcasecmp(b"HeLLo", b"hello") == 0
    assert lib.strcasecmp(b"a", b"B") < 0
    assert lib.strncasecmp(b"ABCx", b"abcy", 3) == 0


def test_copy_and_concat(lib):
    b, a = _buf(b"\x7f" * 16)
    assert lib.strcpy(a, b"hi") == a and b.raw[:4] == b"hi\0\x7f"
    b, a = _buf(b"\x7f" * 16)
    assert lib.strncpy(a, b"hi", 5) == a and b.raw[:6] == b"hi\0\0\0\x7f"
    b, a = _buf(b"\x7f" * 16)
    lib.strncpy(a, b"hello", 3)
    assert b.raw[:4] == b"hel\x7f"                      # no terminator
    b, a = _buf(b"foo")
    assert lib.strcat(a, b"bar") == a and b.value == b"foobar"
    assert lib.strncat(a, b"bazqux", 3) == a and b.value == b"foobarbaz"
    lib.strncat(a, b"!", 10)
    assert b.value == b"foobarbaz!"


def test_strscpy(lib):
    def scpy(src, size):
        b, a = _buf(b"\x7f" * 16)
        return lib.strscpy(a, src, size), b.raw[:size + 1]

    assert scpy(b"hello", 10) == (5, b"hello\0\x7f\x7f\x7f\x7f\x7f")
    assert scpy(b"hello", 6) == (5, b"hello\0\x7f")
    assert scpy(b"hello", 5) == (E2BIG, b"hell\0\x7f")
    assert scpy(b"hello", 1) == (E2BIG, b"\0\x7f")
    assert scpy(b"hello", 0) == (E2BIG, b"\x7f")
    assert scpy(b"", 1) == (0, b"\0\x7f")


def test_search(lib):
    b, a = _buf(b"hello world")
    assert lib.strchr(a, ord("o")) == a + 4
    assert lib.strrchr(a, ord("o")) == a + 7
    assert lib.strchr(a, 0) == a + 11 and lib.strrchr(a, 0) == a + 11
    assert lib.strchr(a, ord("z")) is None and lib.strrchr(a, ord("z")) is None
    assert lib.strchr(a, ord("h") + 256) == a          # c converts to char
    assert lib.strstr(a, b"world") == a + 6
    assert lib.strstr(a, b"") == a
    assert lib.strstr(a, b"worlds") is None
    b2, a2 = _buf(b"aaab")
    assert lib.strstr(a2, b"aab") == a2 + 1
    e, ea = _buf(b"")
    assert lib.strstr(ea, b"") == ea and lib.strstr(ea, b"a") is None
    assert lib.strspn(b"  \tx ", b" \t") == 3
    assert lib.strcspn(b"key=val", b"=:") == 3
    assert lib.strcspn(b"key", b"=") == 3


def test_strsep(lib):
    b, a = _buf(b"a,b,,c")
    p = ctypes.c_void_p(a)
    toks = []
    while True:
        t = lib.strsep(ctypes.byref(p), b",")
        if t is None:
            break
        toks.append(ctypes.string_at(t))
    assert toks == [b"a", b"b", b"", b"c"]
    assert p.value is None


@pytest.mark.parametrize("src,skipped,start,trimmed", [
    (b"  hi there \n\t", 2, 2, b"hi there"), (b"x", 0, 0, b"x"),
    (b"", 0, 0, b""), (b"\n\v\f\rab", 4, 4, b"ab"), (b"ab  ", 0, 0, b"ab"),
    # All blank: the trailing cut empties the string at its first byte.
    (b"   ", 3, 0, b""),
])
def test_skip_spaces_and_strim(lib, src, skipped, start, trimmed):
    b, a = _buf(src)
    assert lib.skip_spaces(a) == a + skipped
    assert lib.strim(a) == a + start
    assert ctypes.string_at(a + start) == trimmed
    assert b.raw[:start] == src[:start]                 # leading part kept


@pytest.mark.parametrize("x,y,eq", [
    (b"on", b"on", True), (b"on\n", b"on", True), (b"on", b"on\n", True),
    (b"on\n", b"on\n", True), (b"", b"\n", True), (b"", b"", True),
    (b"on\n\n", b"on", False), (b"o", b"on", False), (b"on ", b"on", False),
    (b"on\nx", b"on", False), (b"off", b"on", False),
])
def test_sysfs_streq(lib, x, y, eq):
    assert lib.sysfs_streq(x, y) is eq


# ------------------------------------------------------------- err / types

def test_err_h(lib):
    e = lib.h_err_ptr(-22)
    assert e == 2**64 - 22 and lib.h_ptr_err(e) == -22
    assert lib.h_is_err(e) and lib.h_is_err_or_null(e)
    assert lib.h_is_err(lib.h_err_ptr(-4095))
    assert not lib.h_is_err(lib.h_err_ptr(-4096))
    assert not lib.h_is_err(None) and lib.h_is_err_or_null(None)
    assert not lib.h_is_err(0x1000) and not lib.h_is_err_or_null(0x1000)
    assert lib.h_ptr_err_or_zero(e) == -22 and lib.h_ptr_err_or_zero(0x1000) == 0


def test_types_and_compiler_h(lib):
    assert lib.h_misc() == 42


def test_errno_values_match_linux():
    text = (INCLUDE / "linux" / "errno.h").read_text()
    defs = dict(re.findall(r"^#define\s+(E\w+)\s+(\w+)", text, re.M))
    values = {}
    for name, v in defs.items():
        values[name] = int(v) if v.isdigit() else None
    for name, v in defs.items():
        if values[name] is None:
            values[name] = values[v]
    checked = 0
    for name, v in values.items():
        if hasattr(errno, name):
            assert getattr(errno, name) == v, name
            checked += 1
    assert checked > 70
    assert values["ENOTSUP"] == values["EOPNOTSUPP"] == 95
    assert values["ENOTSUPP"] == 524


# ------------------------------------------------------------ guest build

@pytest.fixture(scope="module")
def guest_objs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guest_objs")
    objs = {}
    for src in SOURCES:
        obj = tmp / (src.stem + ".o")
        _gcc([*GUEST_CFLAGS, *WARN_FLAGS, "-c", src, "-o", obj])
        objs[src.stem] = obj
    return objs


def _undefined(obj):
    out = subprocess.run(["nm", "-u", obj], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[-1]: line.split()[0] for line in out.splitlines()}


def _functions(obj):
    """Disassembly split per function: {name: [lines]}."""
    out = subprocess.run(["objdump", "-dr", "--no-show-raw-insn", obj],
                         capture_output=True, text=True, check=True).stdout
    funcs, cur = {}, None
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ <([\w.]+)>:$", line)
        if m:
            cur = funcs.setdefault(m.group(1), [])
        elif cur is not None and line.strip():
            cur.append(line)
    return funcs


def _globals(obj):
    out = subprocess.run(["nm", "-g", "--defined-only", obj],
                         capture_output=True, text=True, check=True).stdout
    return {l.split()[-1] for l in out.splitlines() if l.split()[1] == "T"}


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils")
def test_guest_build_symbols(guest_objs):
    assert set(_undefined(guest_objs["string"])) == {"__fentry__"}
    assert set(_undefined(guest_objs["kstrtox"])) == {"__fentry__"}
    assert set(_undefined(guest_objs["siphash"])) == {"__fentry__"}
    und = _undefined(guest_objs["vsprintf"])
    assert und.pop("vsprintf_symbol_hook") == "w"
    assert set(und) <= {"__fentry__", "memcpy", "memset", "memmove", "strlen",
                        "strnlen", "strchr", "strcspn", "strscpy", "siphash_1u64"}
    expected = {
        "string": {"memcpy", "memmove", "memset", "memcmp", "strlen",
                   "strnlen", "strcmp", "strncmp", "strcpy", "strncpy",
                   "strscpy", "strchr", "strrchr", "strstr", "strcat",
                   "skip_spaces", "strim", "sysfs_streq"},
        "vsprintf": {"vsnprintf", "snprintf", "vscnprintf", "scnprintf",
                     "sprintf", "vsprintf"},
        "kstrtox": {"kstrtoint", "kstrtouint", "kstrtol", "kstrtoul",
                    "kstrtoll", "kstrtoull", "kstrtobool", "simple_strtoul",
                    "simple_strtol", "simple_strtoull"},
        "siphash": {"siphash", "siphash_1u64", "siphash_2u64", "siphash_3u64"},
    }
    for stem, obj in guest_objs.items():
        names = _globals(obj)
        assert expected[stem] <= names
        funcs = _functions(obj)
        for name in names:
            # Every exported function starts with its __fentry__ call site.
            first_reloc = next(l for l in funcs[name] if "R_X86_64" in l)
            assert "__fentry__" in first_reloc, (stem, name)


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils")
def test_guest_mem_functions_do_not_recurse(guest_objs):
    # gcc may turn a copy loop into a memcpy call: fatal inside memcpy.
    funcs = _functions(guest_objs["string"])
    for name in ("memcpy", "memmove", "memset", "memcmp"):
        relocs = [l for l in funcs[name] if "R_X86_64" in l]
        assert all("__fentry__" in l for l in relocs), (name, relocs)


def test_guest_headers_standalone(tmp_path):
    for h in HEADERS:
        src = tmp_path / "h.c"
        src.write_text(f"#include <linux/{h}>\n#include <linux/{h}>\n")
        _gcc([*GUEST_CFLAGS, *WARN_FLAGS, "-c", src, "-o", tmp_path / "h.o"])


def test_array_size_rejects_pointers(tmp_path):
    src = tmp_path / "a.c"
    src.write_text("#include <linux/types.h>\n"
                   "unsigned long f(int *p) { return ARRAY_SIZE(p); }\n")
    res = subprocess.run(["gcc", *GUEST_CFLAGS, "-c", str(src), "-o",
                          str(tmp_path / "a.o")], capture_output=True)
    assert res.returncode != 0
