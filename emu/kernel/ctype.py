"""The kernel's isspace(), which every parser of user input here shares.

include/linux/ctype.h looks a byte up, cast to unsigned char, in lib/ctype.c's
_ctype table, which marks _S (white space) at 9-13, 32 and 160: the Latin-1
no-break space 0xa0 is a space to the kernel, also as a byte inside a UTF-8
character (U+00A0 is c2 a0, U+00E0 c3 a0). Python's own notion differs (it
takes 0x1c-0x1f and 0x85 as well), so str.strip()/split() are not the kernel's.
Text here holds one character per byte (latin-1).
"""
from __future__ import annotations

import re

SPACE_BYTES = b"\t\n\v\f\r \xa0"
SPACE_CHARS = SPACE_BYTES.decode("latin-1")   # for str.strip()
SPACES = frozenset(SPACE_CHARS)
_RUN = re.compile(f"[{re.escape(SPACE_CHARS)}]+")


def strim(text: str) -> str:
    """lib/string.c strim: the C string (up to a NUL) without leading and
    trailing isspace() characters."""
    return text.split("\0", 1)[0].strip(SPACE_CHARS)


def split_words(text: str) -> list[str]:
    """TEXT cut at runs of isspace() characters, empty words dropped."""
    return [word for word in _RUN.split(text) if word]
