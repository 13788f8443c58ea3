"""How the kernel splits a parameter string (lib/cmdline.c next_arg, as
parse_args in kernel/params.c calls it): the kernel command line and the
args of init_module(2) alike.

Words are separated by isspace() (emu.kernel.ctype: the byte 0xa0 too)
outside double quotes; quotes cannot be
escaped. A word is NAME or NAME=VALUE (the first '=' not at the word's start
splits it: a word without one has no value, None, which bool parameters take
as true). A leading quote is dropped, and with it the word's last character if
that is a quote; a value's leading quote is dropped, and with it the word's
last character if that is a quote. Every other quote stays.

The kernel splits bytes: a string here holds one character per byte
(from_bytes, latin-1), and printable() makes a word text again for a message.
"""
from __future__ import annotations

from emu.kernel.ctype import SPACES as _SPACES


def from_bytes(raw: bytes) -> str:
    """What next_arg splits: RAW, one character per byte."""
    return raw.decode("latin-1")


def printable(word: str) -> str:
    """A word of from_bytes() text as the log shows it: its bytes as UTF-8."""
    return word.encode("latin-1").decode("utf-8", "replace")


def _skip_spaces(s: str, i: int) -> int:
    while i < len(s) and s[i] in _SPACES:
        i += 1
    return i


def next_arg(args: str, start: int = 0) -> tuple[str, str | None, int]:
    """next_arg from `start` (not a space): (param, value or None, where the
    next word starts, trailing spaces chewed)."""
    quoted = args[start:start + 1] == '"'
    begin = start + quoted
    in_quote, equals, i = quoted, 0, begin
    while i < len(args):
        c = args[i]
        if c in _SPACES and not in_quote:
            break
        if not equals and c == "=" and i > begin:
            equals = i
        if c == '"':
            in_quote = not in_quote
        i += 1
    end = i                                   # the word is args[begin:end]
    last_is_quote = end > begin and args[end - 1] == '"'
    if not equals:
        # a quoted word's closing quote is cut; "" and a lone quote are empty
        param = args[begin:end - 1] if quoted and last_is_quote else args[begin:end]
        value = None
    else:
        param = args[begin:equals]
        vstart = equals + 1
        cut = end - 1 if last_is_quote and (quoted or args[vstart:vstart + 1] == '"') else end
        if args[vstart:vstart + 1] == '"':
            vstart += 1
        value = args[vstart:max(cut, vstart)]
    nxt = end + 1 if end < len(args) else end
    return param, value, _skip_spaces(args, nxt)


def split_args(args: str) -> list[tuple[str, str | None]]:
    """parse_args's walk over `args`: every (param, value) in order. "--"
    alone (no value) ends the walk, as it ends the kernel's."""
    out: list[tuple[str, str | None]] = []
    i = _skip_spaces(args, 0)
    while i < len(args):
        param, value, i = next_arg(args, i)
        if value is None and param == "--":
            break
        out.append((param, value))
    return out


def parameq(a: str, b: str) -> bool:
    """parameq: names equal with '-' and '_' the same."""
    return a.replace("-", "_") == b.replace("-", "_")


def insmod_args(options: list[str] | tuple[str, ...]) -> str:
    """kmod's insmod: the options after the file joined with single spaces,
    as they are (`insmod m.ko 's=x y'` gives the kernel s=x and a bare y)."""
    return " ".join(options)


def modprobe_args(options: list[str] | tuple[str, ...]) -> str:
    """kmod's modprobe (options_from_array): joined with spaces, a value
    holding a space put in double quotes unless it starts with a quote, so
    that next_arg gives it back whole."""
    out = []
    for opt in options:
        name, eq, value = opt.partition("=")
        if eq and " " in value and value[:1] not in ('"', "'"):
            opt = f'{name}="{value}"'
        out.append(opt)
    return " ".join(out)
