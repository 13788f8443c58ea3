"""The selftests' functions.sh built into the shell, for scripts that source
none: each function of the newest functions.sh is a command that runs the
typed helper of klpemu/selftest (one implementation) with the command's
output and the shell's MAX_RETRIES and RETRY_INTERVAL, and exits the
script where the shell function would (die: 1, skip: 4, EXIT trap run).
A script that sources a functions.sh gets only what that file defines.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from klpemu.scenario.process import ExitSignal
from klpemu.selftest import LoadStyle, Selftest, SelftestExit
from klpemu.selftest.helpers import VARIABLES

if TYPE_CHECKING:
    from klpemu.scenario.process import Proc, ShellView

HelperFn = Callable[["Proc"], int]


def selftest_of(sh: "ShellView") -> Selftest:
    """The shell's Selftest (created on first use), its LAST_DMESG kept across calls."""
    st = sh.extensions.get("selftest")
    if not isinstance(st, Selftest):
        ns = sh.ns
        st = Selftest(sh.machine, lambda name: ns.host_file(ns.resolve(f"test_modules/{name}.ko")),
                      style=LoadStyle.INSMOD, syslog=sh.syslog, release=ns.release)
        sh.extensions["selftest"] = st
    return st


def _bind(proc: "Proc") -> Selftest:
    sh = proc.sh
    st = selftest_of(sh)
    st.stdout, st.stderr = proc.out, proc.err
    retries, interval = sh.variable("MAX_RETRIES"), sh.variable("RETRY_INTERVAL")
    try:
        st.max_retries = int(retries) if retries else 0
        st.retry_interval = float(interval) if interval else 0.0
    except ValueError:
        raise sh.unsupported(f"MAX_RETRIES ({retries!r}) and RETRY_INTERVAL ({interval!r}) must be "
                             "numbers") from None
    return st


def _usage(proc: "Proc", usage: str, at_least: int, at_most: int | None) -> bool:
    n = len(proc.args)
    if n < at_least or (at_most is not None and n > at_most):
        raise proc.sh.unsupported(f"usage: {usage}")
    return True


def _helper(usage: str, at_least: int, at_most: int | None,
            run: Callable[[Selftest, "Proc"], int | None]) -> HelperFn:
    def helper(proc: "Proc") -> int:
        _usage(proc, usage, at_least, at_most)
        st = _bind(proc)
        try:
            status = run(st, proc)
        except SelftestExit as exc:
            raise ExitSignal(exc.status) from None
        return status or 0
    return helper


def _loop_until(proc: "Proc") -> int:
    """loop_until CMD…: `eval "$*"` until it succeeds, in this shell."""
    sh = proc.sh
    st = _bind(proc)
    text = " ".join(proc.args)
    fds = proc.fds

    def holds() -> bool:
        sh.ignore_errexit += 1
        sh.depth += 1
        try:
            return sh.eval_text(text, fds) == 0
        finally:
            sh.depth -= 1
            sh.ignore_errexit -= 1
    return 0 if st.loop_until(holds) else 1


def _set_ftrace_enabled(st: Selftest, proc: "Proc") -> None:
    args = list(proc.args)
    can_fail = args[:1] == ["--fail"]
    if can_fail:
        args = args[1:]
    st.set_ftrace_enabled(args[0] if args else "", can_fail=can_fail)


def _setup_config(st: Selftest, proc: "Proc") -> None:
    _has_kdir(st, proc)
    st.setup_config()
    for sig in ("EXIT", "INT", "TERM", "HUP"):
        proc.sh.traps[sig] = "cleanup"


def _has_kdir(st: Selftest, proc: "Proc") -> int:
    sh = proc.sh
    kdir = sh.variable("KDIR") or f"/lib/modules/{sh.ns.release}/build"
    if not sh.ns.is_dir(kdir):
        proc.out(f"skip all tests: KDIR ({kdir}) not available to compile modules.\n")
        raise ExitSignal(4)
    return 0


def _status(ok: bool) -> int:
    return 0 if ok else 1


HELPERS: dict[str, HelperFn] = {
    "log": _helper("log MSG", 0, None, lambda st, p: st.log(p.args[0] if p.args else "")),
    "skip": _helper("skip MSG", 0, None, lambda st, p: st.skip(p.args[0] if p.args else "")),
    "die": _helper("die MSG", 0, None, lambda st, p: st.die(p.args[0] if p.args else "")),
    "is_root": _helper("is_root", 0, None, lambda st, p: 0),
    "has_kdir": _helper("has_kdir", 0, None, _has_kdir),
    "push_config": _helper("push_config", 0, None, lambda st, p: st.push_config()),
    "pop_config": _helper("pop_config", 0, None, lambda st, p: st.pop_config()),
    "cleanup": _helper("cleanup", 0, None, lambda st, p: st.cleanup()),
    "set_dynamic_debug": _helper("set_dynamic_debug", 0, None, lambda st, p: st.set_dynamic_debug()),
    "set_ftrace_enabled": _helper("set_ftrace_enabled [--fail] VALUE", 1, 2, _set_ftrace_enabled),
    "setup_config": _helper("setup_config", 0, None, _setup_config),
    "loop_until": _loop_until,
    "assert_mod": _helper("assert_mod MODULE", 1, None, lambda st, p: _status(st.assert_mod(p.args[0]))),
    "is_livepatch_mod": _helper("is_livepatch_mod MODULE", 1, None,
                                lambda st, p: _status(st.is_livepatch_mod(p.args[0]))),
    "load_mod": _helper("load_mod MODULE [PARAM=VALUE …]", 1, None,
                        lambda st, p: st.load_mod(p.args[0], *p.args[1:])),
    "load_lp_nowait": _helper("load_lp_nowait MODULE [PARAM=VALUE …]", 1, None,
                              lambda st, p: st.load_lp_nowait(p.args[0], *p.args[1:])),
    "load_lp": _helper("load_lp MODULE [PARAM=VALUE …]", 1, None,
                       lambda st, p: st.load_lp(p.args[0], *p.args[1:])),
    "load_failing_mod": _helper("load_failing_mod MODULE [PARAM=VALUE …]", 1, None,
                                lambda st, p: st.load_failing_mod(p.args[0], *p.args[1:])),
    "unload_mod": _helper("unload_mod MODULE", 1, None, lambda st, p: st.unload_mod(p.args[0])),
    "unload_lp": _helper("unload_lp MODULE", 1, None, lambda st, p: st.unload_lp(p.args[0])),
    "disable_lp": _helper("disable_lp MODULE", 1, None, lambda st, p: st.disable_lp(p.args[0])),
    "set_pre_patch_ret": _helper("set_pre_patch_ret MODULE VALUE", 2, None,
                                 lambda st, p: st.set_pre_patch_ret(p.args[0], p.args[1])),
    "start_test": _helper("start_test NAME", 0, None, lambda st, p: st.start_test(p.args[0] if p.args else "")),
    "check_result": _helper("check_result EXPECTED", 0, None, lambda st, p: st.check_result(" ".join(p.args))),
    "check_sysfs_rights": _helper("check_sysfs_rights MODULE REL_PATH RIGHTS", 3, None,
                                  lambda st, p: st.check_sysfs_rights(*p.args[:3])),
    "check_sysfs_value": _helper("check_sysfs_value MODULE REL_PATH VALUE", 3, None,
                                 lambda st, p: st.check_sysfs_value(*p.args[:3])),
    "cleanup_tracing": _helper("cleanup_tracing", 0, None, lambda st, p: st.cleanup_tracing()),
    "trace_function": _helper("trace_function FUNCTION", 1, None, lambda st, p: st.trace_function(p.args[0])),
    "check_traced_functions": _helper("check_traced_functions FUNCTION…", 0, None,
                                      lambda st, p: st.check_traced_functions(*p.args)),
}
PREDEFINED = dict(VARIABLES)
