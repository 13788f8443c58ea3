"""The coreutils a script runs, in GNU's words and exit statuses: cat head
tail wc tr seq basename dirname mktemp rm mkdir touch ls sleep stat date
id uname getconf nproc timeout comm true false env. Files are the
namespace's (fs.py): the guest's for /sys, /proc and /dev; time is virtual.
"""
from __future__ import annotations

import datetime
import re
from typing import TYPE_CHECKING, Callable

from klpemu.scenario.fs import FsError
from klpemu.selftest.coreutils import cpulist_count, rfc3339_ns, rights_string

if TYPE_CHECKING:
    from klpemu.scenario.process import Proc

CPU_ONLINE = "/sys/devices/system/cpu/online"


def _read(proc: "Proc", name: str) -> str | None:
    """A file's text ('-' is standard input), or None and the command's message."""
    if name == "-":
        return proc.stdin()
    try:
        return proc.sh.ns.read(name)
    except FsError as exc:
        proc.error(f"{name}: {exc.reason}")
        return None


def _lines(text: str) -> list[str]:
    """A text's lines, each with its newline (the last may have none)."""
    return text.splitlines(keepends=True)


def cat(proc: "Proc") -> int:
    names = [a for a in proc.args if a != "--"] or ["-"]
    if any(n.startswith("-") and n != "-" for n in names):
        bad = next(n for n in names if n.startswith("-") and n != "-")
        raise proc.sh.unsupported(f"cat {bad}: options are not supported")
    status = 0
    for name in names:
        text = _read(proc, name)
        if text is None:
            status = 1
        elif text:
            proc.out(text)
    return status


def _count_option(proc: "Proc", default: int) -> tuple[int, bool, list[str]] | int:
    """-n N / -N / -n +N: (count, from the start, files)."""
    args = list(proc.args)
    count, from_start = default, False
    files: list[str] = []
    while args:
        a = args.pop(0)
        if a == "-n" or a.startswith("-n") or re.fullmatch(r"-\d+", a):
            value = a[2:] if a.startswith("-n") and len(a) > 2 else a[1:] if a[1:].isdigit() else \
                (args.pop(0) if args else "")
            from_start = value.startswith("+")
            try:
                count = int(value.lstrip("+"))
            except ValueError:
                return proc.error(f"invalid number of lines: ‘{value}’")
        elif a.startswith("-") and a != "-":
            raise proc.sh.unsupported(f"{proc.name} {a}: only -n N is supported")
        else:
            files.append(a)
    return count, from_start, files


def head(proc: "Proc") -> int:
    parsed = _count_option(proc, 10)
    if isinstance(parsed, int):
        return parsed
    count, _, files = parsed
    status = 0
    for k, name in enumerate(files or ["-"]):
        text = _read(proc, name)
        if text is None:
            status = 1
            continue
        if len(files) > 1:
            proc.out(("\n" if k else "") + f"==> {name} <==\n")
        lines = _lines(text)
        proc.out("".join(lines[:count] if count >= 0 else lines[:count]))
    return status


def tail(proc: "Proc") -> int:
    parsed = _count_option(proc, 10)
    if isinstance(parsed, int):
        return parsed
    count, from_start, files = parsed
    status = 0
    for name in files or ["-"]:
        text = _read(proc, name)
        if text is None:
            status = 1
            continue
        lines = _lines(text)
        proc.out("".join(lines[max(count - 1, 0):] if from_start else lines[-count:] if count else []))
    return status


def wc(proc: "Proc") -> int:
    flags = set()
    files = []
    for a in proc.args:
        if a.startswith("-") and a != "-":
            for letter in a[1:]:
                if letter not in "lwcm":
                    return proc.error(f"invalid option -- '{letter}'")
                flags.add("c" if letter == "m" else letter)
        else:
            files.append(a)
    flags = flags or {"l", "w", "c"}
    status = 0
    rows = []
    for name in files or ["-"]:
        text = _read(proc, name)
        if text is None:
            status = 1
            continue
        counts = {"l": text.count("\n"), "w": len(text.split()), "c": len(text.encode("utf-8", "surrogateescape"))}
        rows.append(([counts[f] for f in "lwc" if f in flags], "" if name == "-" else name))
    if len(rows) > 1:
        rows.append(([sum(r[0][k] for r in rows) for k in range(len(rows[0][0]))], "total"))
    width = 1 if len(flags) == 1 and not files else max(len(str(max(v for r in rows for v in r[0]) if rows else 0)),
                                                         7 if not files else 1)
    for values, name in rows:
        proc.out(" ".join(f"{v:>{width}}" for v in values) + (f" {name}" if name else "") + "\n")
    return status


def _tr_set(spec: str) -> str:
    """A tr SET: characters, \\n \\t \\\\ escapes, ranges a-z and [:class:]."""
    classes = {"[:digit:]": "0123456789", "[:lower:]": "abcdefghijklmnopqrstuvwxyz",
               "[:upper:]": "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "[:space:]": " \t\n\r\f\v", "[:blank:]": " \t"}
    classes["[:alpha:]"] = classes["[:lower:]"] + classes["[:upper:]"]
    classes["[:alnum:]"] = classes["[:alpha:]"] + classes["[:digit:]"]
    out: list[str] = []
    i = 0
    while i < len(spec):
        cls = next((c for c in classes if spec.startswith(c, i)), None)
        if cls:
            out.append(classes[cls])
            i += len(cls)
            continue
        c = spec[i]
        if c == "\\" and i + 1 < len(spec):
            c = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}.get(spec[i + 1], spec[i + 1])
            i += 1
        i += 1
        if spec[i:i + 1] == "-" and i + 1 < len(spec):
            out.extend(chr(x) for x in range(ord(c), ord(spec[i + 1]) + 1))
            i += 2
        else:
            out.append(c)
    return "".join(out)


def tr(proc: "Proc") -> int:
    args = list(proc.args)
    delete = squeeze = False
    while args and args[0].startswith("-") and len(args[0]) > 1:
        opt = args.pop(0)
        for letter in opt[1:]:
            if letter == "d":
                delete = True
            elif letter == "s":
                squeeze = True
            else:
                raise proc.sh.unsupported(f"tr -{letter} is not supported (only -d and -s)")
    text = proc.stdin()
    if delete:
        if len(args) != 1:
            return proc.error(("missing operand" if not args else f"extra operand ‘{args[1]}’")
                              + "\nTry 'tr --help' for more information.")
        gone = set(_tr_set(args[0]))
        proc.out("".join(c for c in text if c not in gone))
        return 0
    if len(args) != 2 and not (squeeze and len(args) == 1):
        return proc.error(("missing operand" if len(args) < 2 else f"extra operand ‘{args[2]}’")
                          + "\nTry 'tr --help' for more information.")
    source = _tr_set(args[0])
    if len(args) == 2:
        target = _tr_set(args[1])
        if not target:
            return proc.error("when not truncating set1, string2 must be non-empty")
        target = target.ljust(len(source), target[-1])
        text = text.translate({ord(a): b for a, b in zip(source, target)})
        squeezed = set(target)
    else:
        squeezed = set(source)
    if squeeze:
        text = re.sub("|".join(f"{re.escape(c)}{{2,}}" for c in squeezed) or "(?!)", lambda m: m.group()[0], text)
    proc.out(text)
    return 0


def seq(proc: "Proc") -> int:
    args = list(proc.args)
    separator = "\n"
    while args and args[0].startswith("-s"):
        opt = args.pop(0)
        separator = opt[2:] if len(opt) > 2 else (args.pop(0) if args else "\n")
    try:
        numbers = [float(a) for a in args]
    except ValueError:
        bad = next(a for a in args if not re.fullmatch(r"[-+]?\d*\.?\d+(e[-+]?\d+)?", a))
        proc.err(f"seq: invalid floating point argument: ‘{bad}’\nTry 'seq --help' for more information.\n")
        return 1
    if not 1 <= len(numbers) <= 3:
        proc.err("seq: missing operand\nTry 'seq --help' for more information.\n" if not numbers else
                 f"seq: extra operand ‘{args[3]}’\nTry 'seq --help' for more information.\n")
        return 1
    first, step, last = ([1.0, 1.0] + numbers if len(numbers) == 1 else
                         [numbers[0], 1.0, numbers[1]] if len(numbers) == 2 else numbers)
    if step == 0:
        proc.err("seq: invalid Zero increment value: ‘0’\nTry 'seq --help' for more information.\n")
        return 1
    decimals = max((len(a.split(".")[1]) for a in args if "." in a and "e" not in a.lower()), default=0)
    values: list[str] = []
    k = 0
    wrote = False
    while True:
        v = first + k * step
        if (step > 0 and v > last + 1e-12) or (step < 0 and v < last - 1e-12):
            break
        values.append(f"{v:.{decimals}f}" if decimals else str(int(round(v))))
        k += 1
        if len(values) == 65536:                # written as it goes: a huge range meets the output limit
            proc.out((separator if wrote else "") + separator.join(values))
            values, wrote = [], True
    if values or wrote:
        proc.out((separator if wrote and values else "") + separator.join(values) + "\n")
    return 0


def basename(proc: "Proc") -> int:
    args = [a for a in proc.args if a != "--"]
    if not args:
        proc.err("basename: missing operand\nTry 'basename --help' for more information.\n")
        return 1
    name = args[0].rstrip("/") or "/"
    base = name.rsplit("/", 1)[-1] if name != "/" else "/"
    if len(args) > 1 and base.endswith(args[1]) and base != args[1]:
        base = base[:-len(args[1])]
    proc.out(base + "\n")
    return 0


def dirname(proc: "Proc") -> int:
    args = [a for a in proc.args if a != "--"]
    if not args:
        proc.err("dirname: missing operand\nTry 'dirname --help' for more information.\n")
        return 1
    for path in args:
        stripped = path.rstrip("/")
        if not stripped:
            proc.out("/\n" if path.startswith("/") else ".\n")
            continue
        head = stripped.rsplit("/", 1)[0] if "/" in stripped else "."
        proc.out((head.rstrip("/") or "/") + "\n")
    return 0


def mktemp(proc: "Proc") -> int:
    """mktemp [-d] [-p DIR | --tmpdir[=DIR]] [-t] [TEMPLATE]: a new /tmp file."""
    sh = proc.sh
    args = list(proc.args)
    directory = False
    where: str | None = None
    template = "tmp.XXXXXXXXXX"
    while args:
        a = args.pop(0)
        if a in ("-d", "--directory"):
            directory = True
        elif a in ("-t",):
            where = where or "/tmp"
        elif a == "--tmpdir" or a.startswith("--tmpdir="):
            where = a.split("=", 1)[1] if "=" in a else "/tmp"
        elif a == "-p" and args:
            where = args.pop(0)
        elif a in ("-q", "--quiet", "-u"):
            pass
        elif a.startswith("-"):
            raise sh.unsupported(f"mktemp {a} is not supported")
        else:
            template = a
            if "/" not in a and where is None:
                where = where or ("/tmp" if "-t" in proc.args else None)
    if not template.endswith("XXX"):
        return proc.error(f"too few X's in template ‘{template}’")
    xs = len(template) - len(template.rstrip("X"))
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    for _ in range(100):
        name = template[:-xs] + "".join(sh.random.choice(alphabet) for _ in range(xs))
        path = f"{where.rstrip('/')}/{name}" if where and "/" not in template else \
            (name if "/" in template else f"/tmp/{name}")
        if not sh.ns.exists(path):
            break
    try:
        if directory:
            sh.ns.make_dir(path)
        else:
            sh.ns.create(path)
    except FsError as exc:
        return proc.error(f"failed to create {'directory' if directory else 'file'} via template "
                          f"‘{template}’: {exc.reason}")
    proc.out(sh.ns.resolve(path) + "\n")
    return 0


def rm(proc: "Proc") -> int:
    force = recursive = False
    names = []
    for a in proc.args:
        if a.startswith("-") and len(a) > 1 and a != "--":
            for letter in a[1:]:
                if letter == "f":
                    force = True
                elif letter in "rR":
                    recursive = True
                elif letter != "v":
                    raise proc.sh.unsupported(f"rm -{letter} is not supported")
        elif a != "--":
            names.append(a)
    ns = proc.sh.ns
    status = 0
    for name in names:
        if ns.is_dir(name) and not recursive:
            status = proc.error(f"cannot remove '{name}': Is a directory")
            continue
        try:
            if ns.is_dir(name):
                for entry in ns.listdir(name):
                    ns.remove(f"{ns.resolve(name)}/{entry}")
            ns.remove(name)
        except FsError as exc:
            if force and exc.errno == 2:
                continue
            status = proc.error(f"cannot remove '{name}': {exc.reason}")
    return status


def mkdir(proc: "Proc") -> int:
    parents = "-p" in proc.args
    status = 0
    for name in (a for a in proc.args if not a.startswith("-")):
        if parents and proc.sh.ns.is_dir(name):
            continue
        try:
            proc.sh.ns.make_dir(name)
        except FsError as exc:
            status = proc.error(f"cannot create directory ‘{name}’: {exc.reason}")
    return status


def touch(proc: "Proc") -> int:
    ns = proc.sh.ns
    status = 0
    for name in (a for a in proc.args if not a.startswith("-")):
        if ns.exists(name):
            continue
        try:
            ns.create(name)
        except FsError as exc:
            status = proc.error(f"cannot touch '{name}': {exc.reason}")
    return status


def ls(proc: "Proc") -> int:
    ns = proc.sh.ns
    flags = {c for a in proc.args if a.startswith("-") and len(a) > 1 for c in a[1:]}
    if flags - {"1", "a", "A", "d"}:
        raise proc.sh.unsupported(f"ls -{''.join(sorted(flags - {'1', 'a', 'A', 'd'}))} is not supported "
                                  "(only -1, -a, -A, -d)")
    names = [a for a in proc.args if not (a.startswith("-") and len(a) > 1)] or ["."]
    status = 0
    files = [n for n in names if not ns.is_dir(n) or "d" in flags]
    dirs = [n for n in names if ns.is_dir(n) and "d" not in flags]
    out: list[str] = []
    for n in files:
        if not ns.exists(n) and not ns.is_device(n):
            status = 2
            proc.err(f"ls: cannot access '{n}': No such file or directory\n")
            continue
        out.append(n + "\n")
    for k, d in enumerate(dirs):
        try:
            entries = ns.listdir(d)
        except FsError as exc:
            status = 2
            proc.err(f"ls: cannot open directory '{d}': {exc.reason}\n")
            continue
        if len(names) > 1:
            out.append(("\n" if k or files else "") + f"{d}:\n")
        out.extend(e + "\n" for e in entries if "a" in flags or "A" in flags or not e.startswith("."))
    proc.out("".join(out))
    return status


_DURATION = re.compile(r"(\d+\.?\d*|\.\d+)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: str) -> float | None:
    m = _DURATION.fullmatch(text)
    if m is None:
        return None
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def sleep(proc: "Proc") -> int:
    """sleep DURATION…: virtual time passes (the machine runs)."""
    if not proc.args:
        proc.err("sleep: missing operand\nTry 'sleep --help' for more information.\n")
        return 1
    total = 0.0
    for a in proc.args:
        seconds = _seconds(a)
        if seconds is None:
            proc.err(f"sleep: invalid time interval ‘{a}’\nTry 'sleep --help' for more information.\n")
            return 1
        total += seconds
    return proc.sh.sleep(total)


def timeout(proc: "Proc") -> int:
    """timeout [-s SIGNAL] DURATION COMMAND…: COMMAND, stopped after DURATION
    of virtual time (124); the shell's commands only wait in sleep and wait."""
    args = list(proc.args)
    while args and args[0].startswith("-") and len(args[0]) > 1:
        opt = args.pop(0)
        if opt in ("-s", "-k") and args:
            args.pop(0)
        elif opt not in ("--preserve-status", "--foreground", "-v", "--verbose"):
            raise proc.sh.unsupported(f"timeout {opt} is not supported")
    if len(args) < 2:
        proc.err("timeout: missing operand\nTry 'timeout --help' for more information.\n")
        return 125
    seconds = _seconds(args[0])
    if seconds is None:
        proc.err(f"timeout: invalid time interval ‘{args[0]}’\nTry 'timeout --help' for more information.\n")
        return 125
    sh = proc.sh
    found = sh.lookup(args[1])
    if found is None or found[0] in ("function", "builtin", "helper"):
        proc.err(f"timeout: failed to run command ‘{args[1]}’: No such file or directory\n")
        return 127
    return sh.with_deadline(seconds, lambda: sh.call(args[1:], proc.fds, proc.line))


def stat(proc: "Proc") -> int:
    """stat --format/-c FORMAT FILE…: %A %a %n %s %F %U %G %u %g %%."""
    args = list(proc.args)
    fmt: str | None = None
    files = []
    while args:
        a = args.pop(0)
        if a in ("-c", "--format") and args:
            fmt = args.pop(0)
        elif a.startswith("--format=") or a.startswith("-c") and len(a) > 2:
            fmt = a.split("=", 1)[1] if a.startswith("--") else a[2:]
        elif a.startswith("-") and a != "-":
            raise proc.sh.unsupported(f"stat {a} is not supported (only --format/-c FORMAT)")
        else:
            files.append(a)
    if fmt is None:
        raise proc.sh.unsupported("stat without --format is not supported")
    if not files:
        proc.err("stat: missing operand\nTry 'stat --help' for more information.\n")
        return 1
    ns = proc.sh.ns
    status = 0
    for name in files:
        try:
            mode, is_dir = ns.mode(name)
            size = ns.size(name)
        except FsError as exc:
            proc.err(f"stat: cannot statx '{name}': {exc.reason}\n")
            status = 1
            continue
        kinds = {"A": rights_string(mode, is_dir), "a": f"{mode & 0o7777:o}", "n": name, "s": str(size),
                 "F": "directory" if is_dir else "character special file" if ns.is_device(name) or
                 ns.resolve(name) == "/dev/kmsg" else "regular file" if size else "regular empty file",
                 "U": "root", "G": "root", "u": "0", "g": "0", "%": "%"}
        out = re.sub(r"%(.)", lambda m: kinds.get(m.group(1), "?"), fmt)
        proc.out(out + "\n")
    return status


def date(proc: "Proc") -> int:
    """date [--rfc-3339=ns|seconds|date] [+FORMAT]: the virtual clock (the
    guest's time since the epoch, UTC)."""
    now = proc.sh.machine.clock_ns
    args = proc.args
    if not args:
        stamp = datetime.datetime.fromtimestamp(now // 1_000_000_000, datetime.timezone.utc)
        proc.out(stamp.strftime("%a %b %e %H:%M:%S UTC %Y") + "\n")
        return 0
    a = args[0]
    if a.startswith("--rfc-3339="):
        kind = a.split("=", 1)[1]
        full = rfc3339_ns(now)
        if kind == "ns":
            proc.out(full + "\n")
        elif kind == "seconds":
            proc.out(full[:19] + "+00:00\n")
        elif kind == "date":
            proc.out(full[:10] + "\n")
        else:
            proc.err(f"date: invalid argument ‘{kind}’ for ‘--rfc-3339’\n")
            return 1
        return 0
    if a.startswith("+"):
        secs, ns = divmod(now, 1_000_000_000)
        stamp = datetime.datetime.fromtimestamp(secs, datetime.timezone.utc)
        out = re.sub(r"%N", f"{ns:09d}", a[1:])
        out = re.sub(r"%s", str(secs), out)
        proc.out(stamp.strftime(out) + "\n")
        return 0
    raise proc.sh.unsupported(f"date {a} is not supported (only --rfc-3339=…, +FORMAT)")


def id_command(proc: "Proc") -> int:
    """id: the script runs as root."""
    args = proc.args
    if not args:
        proc.out("uid=0(root) gid=0(root) groups=0(root)\n")
        return 0
    flags = "".join(a[1:] for a in args if a.startswith("-"))
    names = "n" in flags
    value = "root" if names else "0"
    if any(c in flags for c in "ugG"):
        proc.out(value + "\n")
        return 0
    raise proc.sh.unsupported(f"id {' '.join(args)} is not supported (only -u, -g, -G, -n)")


def uname(proc: "Proc") -> int:
    release = proc.sh.ns.release
    fields = {"s": "Linux", "n": "klpemu", "r": release, "v": "#1 SMP klpemu", "m": "x86_64",
              "p": "x86_64", "i": "x86_64", "o": "GNU/Linux"}
    flags = "".join(a[1:] for a in proc.args if a.startswith("-")) or "s"
    if "a" in flags:
        flags = "snrvmo"
    unknown = set(flags) - set(fields)
    if unknown:
        return proc.error(f"invalid option -- '{sorted(unknown)[0]}'")
    proc.out(" ".join(fields[f] for f in "snrvmpio" if f in flags) + "\n")
    return 0


def _online_cpus(proc: "Proc") -> int | None:
    try:
        return cpulist_count(proc.sh.ns.read(CPU_ONLINE))
    except FsError:
        return None


def nproc(proc: "Proc") -> int:
    count = _online_cpus(proc)
    proc.out(f"{count or 1}\n")
    return 0


GETCONF = {"PAGESIZE": "4096", "PAGE_SIZE": "4096", "LONG_BIT": "64", "CLK_TCK": "100"}


def getconf(proc: "Proc") -> int:
    if len(proc.args) != 1:
        raise proc.sh.unsupported("getconf takes one system variable")
    name = proc.args[0]
    if name in ("_NPROCESSORS_ONLN", "_NPROCESSORS_CONF"):
        proc.out(f"{_online_cpus(proc) or 1}\n")
        return 0
    if name in GETCONF:
        proc.out(GETCONF[name] + "\n")
        return 0
    proc.err(f"getconf: Unrecognized variable `{name}'\n")
    return 1


def comm(proc: "Proc") -> int:
    """comm [-123] [--nocheck-order] FILE1 FILE2 (either may be -)."""
    hide = set()
    check = True
    files = []
    for a in proc.args:
        if a == "--nocheck-order":
            check = False
        elif a == "--check-order":
            check = True
        elif re.fullmatch(r"-[123]+", a):
            hide.update(a[1:])
        elif a.startswith("-") and a != "-":
            raise proc.sh.unsupported(f"comm {a} is not supported")
        else:
            files.append(a)
    if len(files) != 2:
        proc.err("comm: missing operand\nTry 'comm --help' for more information.\n")
        return 1
    texts = []
    for name in files:
        text = _read(proc, name)
        if text is None:
            return 1
        texts.append([ln.rstrip("\n") for ln in _lines(text)])
    a, b = texts
    i = j = 0
    out: list[str] = []
    unsorted = False
    indent = {"1": 0, "2": 0 if "1" in hide else 1, "3": (0 if "1" in hide else 1) + (0 if "2" in hide else 1)}

    def emit(column: str, line: str) -> None:
        if column not in hide:
            out.append("\t" * indent[column] + line + "\n")
    while i < len(a) or j < len(b):
        if check and ((i and i < len(a) and a[i] < a[i - 1]) or (j and j < len(b) and b[j] < b[j - 1])):
            unsorted = True
        if j >= len(b) or (i < len(a) and a[i] < b[j]):
            emit("1", a[i])
            i += 1
        elif i >= len(a) or b[j] < a[i]:
            emit("2", b[j])
            j += 1
        else:
            emit("3", a[i])
            i, j = i + 1, j + 1
    proc.out("".join(out))
    if unsorted:
        proc.err("comm: input is not in sorted order\n")
        return 1
    return 0


def env(proc: "Proc") -> int:
    if proc.args:
        raise proc.sh.unsupported("env COMMAND is not supported (run the command itself)")
    for name, value in sorted(proc.sh.vars.exported().items()):
        proc.out(f"{name}={value}\n")
    return 0


COMMANDS: dict[str, Callable[["Proc"], int]] = {
    "cat": cat, "head": head, "tail": tail, "wc": wc, "tr": tr, "seq": seq, "basename": basename,
    "dirname": dirname, "mktemp": mktemp, "rm": rm, "mkdir": mkdir, "touch": touch, "ls": ls, "sleep": sleep,
    "timeout": timeout, "stat": stat, "date": date, "id": id_command, "uname": uname, "nproc": nproc,
    "getconf": getconf, "comm": comm, "env": env,
}
