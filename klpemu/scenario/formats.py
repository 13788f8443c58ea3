"""Text formats the shell's commands share: echo -e's and printf's backslash
escapes, printf's conversions (%s %d %i %u %x %X %o %c %e %f %g %b %q %%
with flags, width and precision, `*` included), and `%q` quoting.
"""
from __future__ import annotations

import re
from typing import Callable

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r",
                   "t": "\t", "v": "\v", "\\": "\\"}
_ESCAPE = re.compile(r"\\(?:([abeEfnrtv\\])|0([0-7]{0,3})|([0-7]{1,3})|x([0-9a-fA-F]{1,2})|"
                     r"u([0-9a-fA-F]{1,4})|U([0-9a-fA-F]{1,8})|(c)|(\"))")
_CONVERSION = re.compile(r"%([-+ #0]*)(\*|\d+)?(?:\.(\*|\d*))?([diouxXeEfFgGcsbq%])")


def byte_char(value: int) -> str:
    """A byte escape's byte (\\xHH, \\0NNN) as text: ASCII as itself, a byte
    of 0x80 and above as Python's surrogateescape code for it, so that it is
    written out as that one byte (encode(..., "surrogateescape")), as bash
    writes it, not as a UTF-8 character."""
    return chr(value) if value < 0x80 else chr(0xDC00 + value)


def backslash_escapes(text: str, *, echo: bool) -> tuple[str, bool]:
    """TEXT with its escapes replaced, and whether a \\c stopped the output.
    echo -e reads \\0NNN as octal; printf reads \\NNN (and \\" as ")."""
    out: list[str] = []
    pos = 0
    for m in _ESCAPE.finditer(text):
        out.append(text[pos:m.start()])
        pos = m.end()
        simple, oct0, oct_, hex_, u4, u8, stop, quote = m.groups()
        if simple:
            out.append(_SIMPLE_ESCAPES[simple])
        elif oct0 is not None:
            out.append(byte_char(int(oct0 or "0", 8) & 0xFF))
        elif oct_ is not None:
            if echo:
                out.append(m.group(0))
            else:
                out.append(byte_char(int(oct_, 8) & 0xFF))
        elif hex_:
            out.append(byte_char(int(hex_, 16)))
        elif u4 or u8:
            out.append(chr(int(u4 or u8, 16)))
        elif stop:
            return "".join(out), True
        elif quote:
            out.append('"' if not echo else '\\"')
    out.append(text[pos:])
    return "".join(out), False


def shell_quote(text: str) -> str:
    """printf %q: TEXT quoted so that bash reads it back as one word."""
    if text == "":
        return "''"
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", text):
        return text
    if any(c in text for c in "\n\t\r\x1b\a"):
        return "$'" + "".join({"\n": "\\n", "\t": "\\t", "\r": "\\r", "\x1b": "\\E", "\a": "\\a",
                               "'": "\\'", "\\": "\\\\"}.get(c, c) for c in text) + "'"
    return re.sub(r"([^A-Za-z0-9_@%+=:,./-])", r"\\\1", text)


def _integer(arg: str, complain: Callable[[str], None]) -> int:
    text = arg.strip()
    if text[:1] in ("'", '"'):
        return ord(text[1]) if len(text) > 1 else 0
    try:
        if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", text):
            return int(text, 16)
        if re.fullmatch(r"[-+]?0[0-7]+", text):
            return int(text, 8)
        return int(text) if text else 0
    except ValueError:
        m = re.match(r"[-+]?\d+", text)
        complain(f"{arg}: invalid number")
        return int(m.group()) if m else 0


def _float(arg: str, complain: Callable[[str], None]) -> float:
    try:
        return float(arg) if arg.strip() else 0.0
    except ValueError:
        complain(f"{arg}: invalid number")
        return 0.0


def printf(fmt: str, args: list[str], complain: Callable[[str], None]) -> str:
    """printf's output for FMT and ARGS (the format reused while arguments remain)."""
    out: list[str] = []
    args = list(args)
    first = True
    while first or args:
        first = False
        consumed = False
        pos = 0
        for m in _CONVERSION.finditer(fmt):
            text, stop = backslash_escapes(fmt[pos:m.start()], echo=False)
            out.append(text)
            if stop:
                return "".join(out)
            pos = m.end()
            flags, width, precision, conv = m.groups()
            if conv == "%":
                out.append("%")
                continue
            if width == "*":
                width = str(_integer(args.pop(0), complain)) if args else "0"
                consumed = True
            if precision == "*":
                precision = str(_integer(args.pop(0), complain)) if args else "0"
                consumed = True
            arg: str | None = args.pop(0) if args else None
            consumed = consumed or arg is not None
            spec = f"%{flags}{width or ''}{'.' + precision if precision is not None else ''}"
            if conv in "di":
                out.append((spec + "d") % _integer(arg or "0", complain))
            elif conv in "ouxX":
                value = _integer(arg or "0", complain)
                if value < 0:
                    value &= (1 << 64) - 1
                out.append((spec + ("d" if conv == "u" else conv)) % value)
            elif conv in "eEfFgG":
                out.append((spec + conv) % _float(arg or "0", complain))
            elif conv == "c":
                out.append((spec + "s") % (arg or "")[:1])
            elif conv == "s":
                out.append((spec + "s") % (arg or ""))
            elif conv == "b":
                text, stop = backslash_escapes(arg or "", echo=True)
                out.append((spec + "s") % text)
                if stop:
                    return "".join(out)
            elif conv == "q":
                out.append((spec + "s") % shell_quote(arg or ""))
        text, stop = backslash_escapes(fmt[pos:], echo=False)
        out.append(text)
        if stop or not consumed:
            break
    return "".join(out)
