"""kmod's tools: insmod FILE (the namespace's file, or the built module a
missing NAME.ko stands for), modprobe NAME (the module directories play
/lib/modules/RELEASE; --dry-run, -r), rmmod, modinfo and lsmod, in kmod's
words. Loading and unloading are init_module(2) and delete_module(2) of
the guest shell.
"""
from __future__ import annotations

import errno as E
from typing import TYPE_CHECKING, Callable

from emu import EmuError, ShellError
from emu.kernel.cmdline import insmod_args, modprobe_args
from klpemu.scenario.fs import FsError
from klpemu.scenario.killed import check_killed
from klpemu.selftest import kmod
from klpemu.selftest.helpers import remove_module as _remove_module

if TYPE_CHECKING:
    from emu import Machine
    from klpemu.scenario.process import Proc


def insmod(proc: "Proc") -> int:
    args = [a for a in proc.args if a not in ("-f", "--force")]
    if len(args) != len(proc.args):
        raise proc.sh.unsupported("insmod -f (forcing a module in) is not supported")
    if not args:
        proc.err("insmod: ERROR: missing filename.\n")
        return 1
    filename, params = args[0], args[1:]
    ns = proc.sh.ns
    host = ns.host_file(ns.resolve(filename))
    if host is None:
        reason = E.EISDIR if ns.is_dir(filename) else E.ENOENT
        proc.err(kmod.insmod_load_error(filename, reason) + "\n")
        return 1
    try:
        proc.sh.machine.insmod(host, insmod_args(params))
    except ShellError as exc:
        check_killed(exc)
        proc.err(kmod.insmod_error(filename, exc.errno) + "\n")
        return 1
    except EmuError as exc:
        proc.err(f"insmod: ERROR: could not insert module {filename}: {exc}\n")
        return 1
    return 0


def modprobe(proc: "Proc") -> int:
    args = list(proc.args)
    dry_run = remove = quiet = False
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in ("-n", "--dry-run"):
            dry_run = True
        elif opt in ("-r", "--remove"):
            remove = True
        elif opt in ("-q", "--quiet"):
            quiet = True
        elif opt in ("-v", "--verbose"):
            pass
        else:
            raise proc.sh.unsupported(f"modprobe {opt} is not supported (only --dry-run, -r, -q, -v)")
    if not args:
        proc.err("modprobe: ERROR: missing parameters. See -h.\n")
        return 1
    name, params = args[0], args[1:]
    sh = proc.sh
    sysname = name.replace("-", "_")
    if remove:
        status = 0
        for module in args:
            error = _rmmod(sh.machine, module.replace("-", "_"))
            if error:
                proc.err(error.replace("rmmod:", "modprobe:") + "\n")
                status = 1
        return status
    path = sh.ns.find_module(name)
    if path is None:
        if not quiet:
            proc.err(kmod.modprobe_not_found(name, sh.ns.release) + "\n")
        return 1
    if dry_run or sh.machine.exists(f"/sys/module/{sysname}"):
        return 0                         # nothing to do: already loaded
    try:
        sh.machine.insmod(path, modprobe_args(params))
    except ShellError as exc:
        check_killed(exc)
        proc.err(kmod.modprobe_error(sysname, exc.errno) + "\n")
        return 1
    return 0


def _rmmod(machine: "Machine", name: str) -> str:
    """remove_module, with a task killed while at it the command's end."""
    try:
        return _remove_module(machine, name)
    except ShellError as exc:
        check_killed(exc)
        raise


def rmmod(proc: "Proc") -> int:
    names = [a for a in proc.args if not a.startswith("-")]
    if len(names) != len(proc.args):
        raise proc.sh.unsupported("rmmod options are not supported")
    if not names:
        proc.err("rmmod: ERROR: missing module name.\n")
        return 1
    status = 0
    for name in names:
        module = name.rsplit("/", 1)[-1].removesuffix(".ko").replace("-", "_")
        error = _rmmod(proc.sh.machine, module)
        if error:
            proc.err(error + "\n")
            status = 1
    return status


def modinfo(proc: "Proc") -> int:
    args = list(proc.args)
    field: str | None = None
    if args[:1] in (["-F"], ["--field"]) and len(args) > 1:
        field = args[1]
        args = args[2:]
    if not args:
        proc.err("modinfo: ERROR: missing module or filename.\n")
        return 1
    ns = proc.sh.ns
    status = 0
    for name in args:
        if "/" in name or name.endswith(".ko"):
            try:
                data = ns.read_bytes(name)
            except FsError as exc:
                proc.err(f"modinfo: ERROR: could not get modinfo from '{name}': {exc.reason}\n")
                status = 1
                continue
            shown = ns.resolve(name)
        else:
            path = ns.find_module(name)
            if path is None:
                proc.err(f"modinfo: ERROR: Module {name} not found.\n")
                status = 1
                continue
            data = path.read_bytes()
            shown = str(path)
        tags = kmod.modinfo_tags(data)
        if tags is None:
            proc.err(f"modinfo: ERROR: could not get modinfo from '{name}': Invalid argument\n")
            status = 1
            continue
        if field is not None:
            proc.out("".join(f"{v}\n" for k, v in tags if k == field))
        else:
            proc.out(kmod.modinfo_text(shown, tags))
    return status


def lsmod(proc: "Proc") -> int:
    machine = proc.sh.machine
    rows = ["Module                  Size  Used by"]
    for name in machine.listdir("/sys/module"):
        try:
            used = machine.read_file(f"/sys/module/{name}/refcnt").strip()
        except ShellError:
            used = "0"
        rows.append(f"{name:<19} {0:>8}  {used}")
    proc.out("\n".join(rows) + "\n")
    return 0


COMMANDS: dict[str, Callable[["Proc"], int]] = {
    "insmod": insmod, "modprobe": modprobe, "rmmod": rmmod, "modinfo": modinfo, "lsmod": lsmod,
}
