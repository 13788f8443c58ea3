"""Dynamic debug (lib/dynamic_debug.c): pr_debug() call sites that print
only once the control file enables them.

A site is a `struct _ddebug`: module, function, source file, format, line
and flags. Sites come in tables, one per module (vmlinux's built-in
"modules" first, in the order they are added). The control file
(`/sys/kernel/debug/dynamic_debug/control`, `/proc/dynamic_debug/control`)
lists them as the kernel does and takes the kernel's queries
(`file kernel/livepatch/* +p`, `func klp_try_switch_task -p`,
`module m format "x" line 1-20 =pmf`, several per write separated by `;`
or newlines); `dyndbg=` on the command line is applied at boot, and
`MODULE.dyndbg=` when that module's table is added. Everything is off by
default, as in a kernel without DEBUG.
"""
from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from emu.arch.memory import AddressSpace
from emu.kernel.cmdline import from_bytes, split_args
from emu.kernel.ctype import SPACE_CHARS, SPACES
from emu.kernel.hypercalls import hypercall
from emu.kernel.printk import KernelLog

if TYPE_CHECKING:
    from emu.arch.cpu import Cpu

KERN_DEBUG = 7
FLAGS_PRINT, FLAGS_MODNAME, FLAGS_FUNCNAME, FLAGS_LINENO, FLAGS_TID, FLAGS_SOURCENAME = 1, 2, 4, 8, 16, 32
# the kernel's opt_array: the order describe_flags writes them in
_OPT = (("p", FLAGS_PRINT), ("m", FLAGS_MODNAME), ("f", FLAGS_FUNCNAME), ("s", FLAGS_SOURCENAME),
        ("l", FLAGS_LINENO), ("t", FLAGS_TID), ("_", 0))
# struct _ddebug (fixtures/include/linux/dynamic_debug.h): four pointers,
# then lineno:18, class_id:6 and flags:8 in one word: flags is its top byte
DDEBUG_FLAGS_BYTE = 35
MAXWORDS = 9
USER_BUF_PAGE = 4096


@dataclass
class DebugSite:
    """One pr_debug() call site (struct _ddebug)."""
    modname: str
    function: str
    filename: str
    format: str                 # the C format string, as written (before pr_fmt)
    lineno: int
    flags: int = 0
    # the guest's struct _ddebug (0: a site of the emulator's own code)
    address: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.flags & FLAGS_PRINT)


def describe_flags(flags: int) -> str:
    return "".join(c for c, bit in _OPT if bit and flags & bit) or "_"


def _escape(text: str) -> str:
    """seq_escape_str(ESCAPE_SPACE, "\\t\\r\\n\\""): the control file's format column."""
    table = {"\t": "\\t", "\r": "\\r", "\n": "\\n", '"': '\\"', "\v": "\\v", "\f": "\\f", " ": " "}
    return "".join(table.get(c, c) for c in text)


def _unescape(text: str) -> str:
    """string_unescape(UNESCAPE_SPACE | UNESCAPE_OCTAL | UNESCAPE_SPECIAL) of a format query."""
    named = {"n": "\n", "t": "\t", "r": "\r", "v": "\v", "f": "\f", "\\": "\\", '"': '"', "a": "\a", "e": "\x1b"}
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            if text[i + 1] in named:
                out.append(named[text[i + 1]])
                i += 2
                continue
            octal = re.match(r"[0-7]{1,3}", text[i + 1:])
            if octal:
                out.append(chr(int(octal.group(0), 8) & 0xFF))
                i += 1 + len(octal.group(0))
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def _match_wildcard(pattern: str, text: str) -> bool:
    """match_wildcard: `*` any run, `?` any one character, nothing else special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.S) is not None


def _tokenize(query: str, err: Callable[[str], None]) -> list[str] | None:
    """ddebug_tokenize: words split on blanks, '…' or "…" quoted, `#` starts a comment."""
    words, i = [], 0
    while i < len(query):
        while i < len(query) and query[i] in SPACES:
            i += 1
        if i >= len(query) or query[i] == "#":
            break
        if query[i] in "\"'":
            end = query.find(query[i], i + 1)
            if end < 0:
                err(f"unclosed quote: {query[i + 1:]}")
                return None
            words.append(query[i + 1:end])
            i = end + 1
        else:
            start = i
            while i < len(query) and query[i] not in SPACES:
                i += 1
            words.append(query[start:i])
        if len(words) > MAXWORDS:
            err(f"too many words, legal max <={MAXWORDS}")
            return None
    return words


@dataclass
class _Query:
    filename: str | None = None
    module: str | None = None
    function: str | None = None
    format: str | None = None
    first_lineno: int = 0
    last_lineno: int = 0


class DynamicDebug:
    def __init__(self, log: KernelLog, mem: AddressSpace, cmdline: str = "") -> None:
        """`mem`: where guest sites keep their flags and printed text lies."""
        self.log = log
        self.mem = mem
        self.tables: list[tuple[str, list[DebugSite]]] = []
        self._guest_sites: dict[int, DebugSite] = {}      # by struct _ddebug address
        self._boot_queries = [(name, value) for name, value in split_args(from_bytes(cmdline.encode()))
                              if name == "dyndbg" or name.endswith(".dyndbg")]

    # ------------------------------------------------------------ tables
    def add_module(self, modname: str, sites: list[DebugSite]) -> None:
        """ddebug_add_module: a module's sites; `dyndbg=` and `MODULE.dyndbg=` apply to them."""
        if not sites:
            return
        self.tables.append((modname, sites))
        self._guest_sites.update((site.address, site) for site in sites if site.address)
        for name, value in self._boot_queries:
            if name == "dyndbg":
                self.exec_queries(value or "+p", only=sites)
            elif name == f"{modname}.dyndbg":
                self.exec_queries(value or "+p", modname, only=sites)

    def remove_module(self, modname: str) -> None:
        for name, sites in self.tables:
            if name == modname:
                for site in sites:
                    self._guest_sites.pop(site.address, None)
        self.tables = [(name, sites) for name, sites in self.tables if name != modname]

    # ------------------------------------------------------------ printing
    def printk(self, site: DebugSite, text: str, pid: int | None) -> None:
        """__dynamic_pr_debug of an already formatted message (pr_fmt included),
        if the site prints; `pid` None means interrupt context."""
        if site.flags & FLAGS_PRINT:
            self.log.log(self.prefix(site, pid) + text, level=KERN_DEBUG)

    @staticmethod
    def prefix(site: DebugSite, pid: int | None) -> str:
        """dynamic_emit_prefix: [tid] module:function:file:line: (those enabled), then a blank."""
        out = ""
        if site.flags & FLAGS_TID:
            out += "<intr> " if pid is None else f"[{pid}] "
        decorated = ""
        if site.flags & FLAGS_MODNAME:
            decorated += f"{site.modname}:"
        if site.flags & FLAGS_FUNCNAME:
            decorated += f"{site.function}:"
        if site.flags & FLAGS_SOURCENAME:
            decorated += f"{site.filename}:"
        if site.flags & FLAGS_LINENO:
            decorated += f"{site.lineno}:"
        return out + decorated + (" " if decorated else "")

    @hypercall("HC_DYNDBG_PRINTK")
    def hc_dyndbg_printk(self, cpu: "Cpu", descriptor: int, text: int, length: int, pid: int) -> int:
        """void __dynamic_pr_debug(struct _ddebug *, const char *fmt, ...): an
        enabled guest site, its message formatted; `pid` -1 in interrupt context."""
        site = self._guest_sites.get(descriptor)
        if site is not None:
            message = self.mem.read(text, length).decode("utf-8", "replace")
            self.printk(site, message, None if pid >> 63 else pid)     # -1: interrupt context
        return 0

    # ------------------------------------------------------------ the control file
    def show(self) -> str:
        lines = ["# filename:lineno [module]function flags format\n"]
        for modname, sites in self.tables:
            for site in reversed(sites):        # ddebug_iter walks each table from its end
                lines.append(f"{site.filename}:{site.lineno} [{modname}]{site.function} "
                             f"={describe_flags(site.flags)} \"{_escape(site.format)}\"\n")
        return "".join(lines)

    def store(self, text: str) -> int:
        """ddebug_proc_write: len, or -errno."""
        raw = text.encode("latin-1")       # the bytes written (emu.fs.vfs)
        if not raw:
            return 0
        if len(raw) > USER_BUF_PAGE - 1:
            self._err(f"expected <{USER_BUF_PAGE} bytes into control", level=4)
            return -errno.E2BIG
        ret = self.exec_queries(text)
        return ret if ret < 0 else len(raw)

    def exec_queries(self, text: str, modname: str | None = None, only: list[DebugSite] | None = None) -> int:
        """ddebug_exec_queries: each query of `text`, going on after a bad one;
        the last error, or the number of matching sites."""
        exitcode, nfound = 0, 0
        for query in text.replace(";", "\n").split("\n"):
            query = query.strip(SPACE_CHARS)
            if not query or query.startswith("#"):
                continue
            rc = self._exec_query(query, modname, only)
            if rc < 0:
                exitcode = rc
            else:
                nfound += rc
        return exitcode or nfound

    def _exec_query(self, text: str, modname: str | None, only: list[DebugSite] | None) -> int:
        words = _tokenize(text, self._err)
        if not words:
            self._err("tokenize failed")
            return -errno.EINVAL
        parsed = self._parse_flags(words[-1])
        if parsed is None:
            self._err("flags parse failed")
            return -errno.EINVAL
        query = self._parse_query(words[:-1], modname)
        if query is None:
            self._err("query parse failed")
            return -errno.EINVAL
        flags, mask = parsed
        return self._change(query, flags, mask, only)

    def _parse_flags(self, word: str) -> tuple[int, int] | None:
        if not word or word[0] not in "+-=":
            self._err(f"bad flag-op {word[:1]}, at start of {word}")
            return None
        op, flags = word[0], 0
        for c in word[1:]:
            bit = next((b for ch, b in _OPT if ch == c), None)
            if bit is None:
                self._err(f"unknown flag '{c}'")
                return None
            flags |= bit
        if op == "=":
            return flags, 0
        if op == "+":
            return flags, ~0
        return 0, ~flags

    def _parse_query(self, words: list[str], modname: str | None) -> _Query | None:
        if len(words) % 2:
            self._err("expecting pairs of match-spec <value>")
            return None
        q = _Query()
        for keyword, arg in zip(words[::2], words[1::2]):
            if keyword == "func":
                if q.function is not None:
                    return self._overridden("func", q.function, arg)
                q.function = arg
            elif keyword == "file":
                if q.filename is not None:
                    return self._overridden("file", q.filename, arg)
                name, sep, tail = arg.partition(":")
                q.filename = name
                if sep and (tail[:1].isalpha() or tail[:1] in "*?"):
                    if q.function is not None:
                        return self._overridden("func", q.function, tail)
                    q.function = tail
                elif sep and not self._parse_linerange(q, tail):
                    return None
            elif keyword == "module":
                if q.module is not None:
                    return self._overridden("module", q.module, arg)
                q.module = arg
            elif keyword == "format":
                if q.format is not None:
                    return self._overridden("format", q.format, arg)
                q.format = _unescape(arg)
            elif keyword == "line":
                if not self._parse_linerange(q, arg):
                    return None
            else:
                self._err(f"unknown keyword \"{keyword}\"")
                return None
        if q.module is None and modname:
            q.module = modname
        return q

    def _overridden(self, name: str, old: str, new: str) -> None:
        self._err(f"match-spec:{name} val:{old} overridden by {new}")
        return None

    def _parse_linerange(self, q: _Query, text: str) -> bool:
        if q.first_lineno or q.last_lineno:
            self._err("match-spec: line used 2x")
            return False
        first, sep, last = text.partition("-")
        try:
            q.first_lineno = int(first) if first else 0
            q.last_lineno = (int(last) if last else 0xFFFFFFFF) if sep else q.first_lineno
        except ValueError:
            self._err(f"bad line-number: {last if sep and first.isdigit() else first}")
            return False
        if q.last_lineno < q.first_lineno:
            self._err(f"last-line:{q.last_lineno} < 1st-line:{q.first_lineno}")
            return False
        return True

    def _change(self, q: _Query, flags: int, mask: int, only: list[DebugSite] | None) -> int:
        nfound = 0
        for modname, sites in self.tables:
            if q.module is not None and not _match_wildcard(q.module, modname):
                continue
            for site in sites:
                if only is not None and site not in only:
                    continue
                if q.filename is not None and not (
                        _match_wildcard(q.filename, site.filename)
                        or _match_wildcard(q.filename, site.filename.rsplit("/", 1)[-1])):
                    continue
                if q.function is not None and not _match_wildcard(q.function, site.function):
                    continue
                if q.format is not None:
                    if q.format.startswith("^"):
                        if not site.format.startswith(q.format[1:]):
                            continue
                    elif q.format not in site.format:
                        continue
                if q.first_lineno and site.lineno < q.first_lineno:
                    continue
                if q.last_lineno and site.lineno > q.last_lineno:
                    continue
                nfound += 1
                new = (site.flags & mask) | flags
                if new != site.flags:
                    site.flags = new
                    if site.address:
                        self.mem.write(site.address + DDEBUG_FLAGS_BYTE, bytes([new]))
        return nfound

    def _err(self, text: str, level: int = 3) -> None:
        self.log.log(f"dyndbg: {text}", level=level)
