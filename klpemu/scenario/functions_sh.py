"""The helpers of the livepatch selftests' functions.sh, as verbs: log, die,
skip, start_test, check_result (and selftest_log, its view of dmesg),
loop_until, load_mod, load_lp, load_lp_nowait, load_failing_mod, unload_mod,
unload_lp, disable_lp, set_pre_patch_ret, check_sysfs_rights,
check_sysfs_value, set_ftrace_enabled, setup_config and the tracing helpers,
registered in VERBS when this module is imported.
"""
from __future__ import annotations

import datetime
import difflib
import errno as _errno
import os
import re

from emu import EmuError, ShellError
from klpemu.scenario.kmod import rights_string, rmmod_error
from klpemu.scenario.registry import _need, verb
from klpemu.scenario.result import ScenarioError
from klpemu.scenario.runner import FTRACE_SYSCTL, SYSFS_KLP_DIR, SYSFS_TRACING_DIR, ScenarioRunner

DYNDBG_CONTROL = "/sys/kernel/debug/dynamic_debug/control"


@verb("log")
def _log(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    try:
        r.log(args[0] if args else "")
    except ShellError as exc:
        r.fail(f"log: /dev/kmsg: {os.strerror(exc.errno)}")


@verb("die")
def _die(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    r.die(args[0] if args else "")


@verb("skip")
def _skip(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    r.skip(args[0] if args else "")


@verb("start_test")
def _start_test(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    name = args[0] if args else ""
    m = r.machine
    ns = max(m.clock_ns, r._last_canary_ns + 1)
    r._last_canary_ns = ns
    secs, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.datetime.fromtimestamp(secs, datetime.timezone.utc)
    canary = f"livepatch kselftest timestamp: {stamp:%Y-%m-%d %H:%M:%S}.{frac:09d}+00:00"
    r.log(canary)
    if not r.wait(lambda: canary in m.dmesg_lines()[r.mark:]):
        r.die(f"buffer busy? can't find canary dmesg message: {canary}")
    r.canary = canary
    r.emit(f"TEST: {name} ... ")
    r.log(f"===== TEST: {name} =====")


_TIMESTAMP = re.compile(r"^\[[ 0-9.]*\] ")
_CALLER = re.compile(r"^\[ *[CT][0-9]*\] ")
_TAINT = re.compile(r"(tainting|taints) kernel")


def selftest_log(r: ScenarioRunner) -> tuple[list[str], str]:
    """check_result's view of dmesg: the lines after the canary that mention
    `livepatch:` or `test_klp`, without taint notes and timestamps. Also the
    canary's dmesg line (LAST_DMESG)."""
    records = r.machine.dmesg_log.records()[r.mark:]
    start, last = 0, ""
    if r.canary is not None:
        start = len(records)          # canary gone: nothing (the "buffer overrun" case)
        for k in range(len(records) - 1, -1, -1):
            if records[k].text == r.canary:
                start, last = k + 1, records[k].format()
                break
    lines = []
    for rec in records[start:]:
        line = rec.format()
        if ("livepatch:" not in line and "test_klp" not in line) or _TAINT.search(line):
            continue
        lines.append(_CALLER.sub("", _TIMESTAMP.sub("", line, count=1), count=1))
    return lines, last


@verb("check_result")
def _check_result(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    expect = " ".join(args)
    lines, last = selftest_log(r)
    result = "\n".join(lines).rstrip("\n")
    if expect == result:
        r.emit("ok\n")
        return
    if result == "":
        r.emit(f"not ok\n\nbuffer overrun? can't find canary dmesg entry: {last}\n\n")
        r.die("livepatch kselftest(s) failed")
    diff = "\n".join(difflib.unified_diff(expect.split("\n"), result.split("\n"),
                                          "expected", "result", lineterm=""))
    r.emit(f"not ok\n\n{diff}\n\n")
    if r._step is not None:
        r._step.message = diff
    r.die("livepatch kselftest(s) failed")


@verb("loop_until")
def _loop_until(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    text = " ".join(args)
    if not text.strip():
        raise ScenarioError(lineno, "loop_until needs a condition")
    cond = r.parse_condition(text, lineno)
    if not r.wait(lambda: r.condition(cond)):
        r.fail(f"loop_until: still false after {r.variables.get('MAX_RETRIES')} retries: {text}")


def _log_and_insmod(r: ScenarioRunner, name: str, args: list[str]) -> str | None:
    """Log the load command, then load NAME: kmod's error line, or None."""
    r.find_module(name)
    r.log(r.load_message(name, args))
    return r.insmod(name, args)


def _load(r: ScenarioRunner, name: str, args: list[str]) -> None:
    """functions.sh's __load_mod."""
    error = _log_and_insmod(r, name, args)
    if error is not None:
        r.die(error)
    if not r.wait(lambda: r.machine.exists(f"/sys/module/{name}")):
        r.die(f"failed to load module {name}")


@verb("load_mod")
def _load_mod(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "load_mod MODULE [PARAM=VALUE …]", 1)
    name = args[0]
    if r.is_livepatch(name):
        r.die(f"use load_lp() to load the livepatch module {name}")
    _load(r, name, args[1:])


def _load_lp_nowait(r: ScenarioRunner, name: str, args: list[str]) -> None:
    if r.is_livepatch(name) is False:
        r.die(f"module {name} is not a livepatch")
    _load(r, name, args)
    if not r.wait(lambda: r.machine.exists(f"{SYSFS_KLP_DIR}/{name}")):
        r.die(f"failed to load module {name} (sysfs)")


@verb("load_lp_nowait")
def _load_lp_nowait_verb(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "load_lp_nowait MODULE [PARAM=VALUE …]", 1)
    _load_lp_nowait(r, args[0], args[1:])


def _reads(r: ScenarioRunner, path: str, value: str) -> bool:
    """`[[ $(cat PATH) == VALUE ]]`"""
    try:
        return r.machine.read_file(path).rstrip("\n") == value
    except ShellError:
        return False


@verb("load_lp")
def _load_lp(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "load_lp MODULE [PARAM=VALUE …]", 1)
    name = args[0]
    _load_lp_nowait(r, name, args[1:])
    if not r.profile.consistency_model:
        return                        # 4.11: patched at once, no `transition`
    path = f"{SYSFS_KLP_DIR}/{name}/transition"
    if not r.wait(lambda: _reads(r, path, "0")):
        r.die("failed to complete transition")


@verb("load_failing_mod")
def _load_failing_mod(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "load_failing_mod MODULE [PARAM=VALUE …]", 1)
    name = args[0]
    error = _log_and_insmod(r, name, args[1:])
    if error is None:
        r.die(f"{name} unexpectedly loaded")
    r.log(error)


@verb("unload_mod")
@verb("unload_lp")
def _unload_mod(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "unload_mod MODULE", 1, 1)
    name = args[0]
    if not r.wait(lambda: _reads(r, f"/sys/module/{name}/refcnt", "0")):
        r.die(f"failed to unload module {name} (refcnt)")
    r.log(f"% rmmod {name}")
    try:
        r.machine.rmmod(name)
    except ShellError as exc:
        r.die(rmmod_error(name, exc.errno))
    if not r.wait(lambda: not r.machine.exists(f"/sys/module/{name}")):
        r.die(f"failed to unload module {name} (/sys/module)")


@verb("disable_lp")
def _disable_lp(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "disable_lp MODULE", 1, 1)
    name = args[0]
    path = f"{SYSFS_KLP_DIR}/{name}/enabled"
    r.log(f"% echo 0 > {path}")
    r.echo_to(path, "0")
    if r.profile.register_api:
        # before 5.1 a disabled patch stays registered: wait for the transition
        done = (lambda: _reads(r, f"{SYSFS_KLP_DIR}/{name}/transition", "0")) \
            if r.profile.consistency_model else (lambda: _reads(r, path, "0"))
        if not r.wait(done):
            r.die(f"failed to disable livepatch {name}")
    elif not r.wait(lambda: not r.machine.exists(f"{SYSFS_KLP_DIR}/{name}")):
        r.die(f"failed to disable livepatch {name}")


@verb("set_pre_patch_ret")
def _set_pre_patch_ret(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "set_pre_patch_ret MODULE VALUE", 2, 2)
    name, value = args
    path = f"/sys/module/{name}/parameters/pre_patch_ret"
    r.log(f"% echo {value} > {path}")
    r.echo_to(path, value)
    if not r.wait(lambda: _reads(r, path, value)):
        r.die(f"failed to set pre_patch_ret parameter for {name} module")


@verb("check_sysfs_rights")
def _check_sysfs_rights(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "check_sysfs_rights MODULE REL_PATH RIGHTS", 3, 3)
    name, rel, expected = args
    path = f"{SYSFS_KLP_DIR}/{name}/{rel}"
    target = path.rstrip("/")
    try:
        rights = rights_string(r.machine.file_mode(target), r.machine.is_dir(target))
    except EmuError:
        rights = ""
    if rights != expected:
        r.die(f"Unexpected access rights of {path}: {expected} vs. {rights}")


@verb("check_sysfs_value")
def _check_sysfs_value(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "check_sysfs_value MODULE REL_PATH VALUE", 3, 3)
    name, rel, expected = args
    path = f"{SYSFS_KLP_DIR}/{name}/{rel}"
    try:
        value = r.machine.read_file(path).rstrip("\n")
    except ShellError as exc:
        r.emit(f"cat: {path}: {os.strerror(exc.errno)}\n")
        value = ""
    if value != expected:
        r.die(f"Unexpected value in {path}: {expected} vs. {value}")


@verb("set_ftrace_enabled")
def _set_ftrace_enabled(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    can_fail = bool(args) and args[0] == "--fail"
    if can_fail:
        args = args[1:]
    _need(args, lineno, "set_ftrace_enabled [--fail] VALUE", 1, 1)
    value = args[0]
    err = ""
    try:
        r.machine.write_file(FTRACE_SYSCTL, value)
    except ShellError as exc:
        if exc.errno == _errno.ENOENT:
            err = f"sysctl: cannot stat {FTRACE_SYSCTL}: {os.strerror(exc.errno)}"
        else:
            err = f'sysctl: setting key "{FTRACE_SYSCTL}": {os.strerror(exc.errno)}'
    try:
        result = r.machine.read_file(FTRACE_SYSCTL).rstrip("\n")
    except ShellError:
        result = ""
    if result != value:
        if can_fail:
            r.log(f"livepatch: {err}".replace("/proc/sys/kernel/", "kernel."))
            return
        r.skip(f"failed to set kernel.ftrace_enabled = {value}")
    r.log(f"livepatch: kernel.ftrace_enabled = {result}")


@verb("setup_config")
def _setup_config(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    """functions.sh's setup_config: set_dynamic_debug (the livepatch core's
    pr_debug lines on, klp_try_switch_task's off), then `set_ftrace_enabled 1`."""
    _need(args, lineno, "setup_config", 0, 0)
    r.machine.write_file(DYNDBG_CONTROL, "file kernel/livepatch/* +p\nfunc klp_try_switch_task -p")
    _set_ftrace_enabled(r, ["1"], lineno)


@verb("cleanup_tracing")
def _cleanup_tracing(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    """functions.sh: stop the function tracer and empty its filter and buffer."""
    _need(args, lineno, "cleanup_tracing", 0, 0)
    for name, value in (("tracing_on", "0"), ("set_ftrace_filter", ""), ("current_tracer", "nop"),
                        ("trace", "")):
        r.echo_to(f"{SYSFS_TRACING_DIR}/{name}", value)


@verb("trace_function")
def _trace_function(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    """functions.sh: trace one function with the function tracer."""
    _need(args, lineno, "trace_function FUNCTION", 1, 1)
    _cleanup_tracing(r, [], lineno)
    for name, value in (("current_tracer", "function"), ("set_ftrace_filter", args[0]), ("tracing_on", "1")):
        r.echo_to(f"{SYSFS_TRACING_DIR}/{name}", value)


@verb("check_traced_functions")
def _check_traced_functions(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    """functions.sh: each function must appear (as a word) in the trace; then clean up."""
    try:
        trace = r.machine.read_file(f"{SYSFS_TRACING_DIR}/trace")
    except ShellError:
        trace = ""                    # functions.sh's grep fails: each function is missing
    for function in args:
        if not re.search(rf"(?<![\w]){re.escape(function)}(?![\w])", trace):
            r.die(f"Function ({function}) did not appear in the trace")
    _cleanup_tracing(r, [], lineno)
