"""Running scenarios: the result (outcome from the exit status, a step for
each command of the script's top level, stdout and stderr told apart), the
built-in helpers of scripts that source no functions.sh (the newest
functions.sh's, from klpemu.selftest), sourcing a functions.sh (its log
style, its errors named by file and line), and usage errors reported
before anything runs."""
from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest

from emu import Machine
from klpemu.scenario import ScenarioError, ScenarioResult, ScenarioRunner
from klp_helpers import run_script

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def m() -> Machine:
    return Machine(cpus=1).boot()


def run(m: Machine, tmp_path: Path, text: str, **kw: object) -> tuple[ScenarioResult, str]:
    """TEXT as ./t.sh; the result and what a terminal shows."""
    script = tmp_path / "t.sh"
    script.write_text(text)
    out = io.StringIO()
    result = ScenarioRunner(m, out, **kw).run_file(script)      # type: ignore[arg-type]
    return result, out.getvalue()


def canary_lines(m: Machine) -> list[str]:
    """dmesg after the last start_test canary."""
    lines = m.dmesg_lines()
    k = max(i for i, ln in enumerate(lines) if ln.startswith("livepatch kselftest timestamp: "))
    return lines[k + 1:]


# ---------------------------------------------------------------- results and steps
def test_the_outcome_is_the_exit_status_and_steps_say_what_failed(m: Machine, tmp_path: Path) -> None:
    result, out = run(m, tmp_path, "cat /proc/nonexistent\necho after\ngrep -q nomatch /proc/cmdline || true\n")
    assert result.ok and result.exit_code == 0 and result.exit_status == 0 and result.failures == []
    assert out == "cat: /proc/nonexistent: No such file or directory\nafter\n"
    assert result.stdout == "after\n" and result.stderr == "cat: /proc/nonexistent: No such file or directory\n"
    assert [(s.verb, s.line, s.ok) for s in result.steps] == [
        ("cat", 1, False), ("echo", 2, True), ("grep", 3, True), ("true", 3, True)]
    assert result.steps[0].message == "cat: /proc/nonexistent: No such file or directory"


def test_a_failed_run_says_why(m: Machine, tmp_path: Path) -> None:
    result, _ = run(m, tmp_path, "echo a\nfalse\n")
    assert not result.ok and result.exit_code == 1 and result.failures == ["false: exit status 1"]
    result, _ = run(m, tmp_path, "echo a\nexit 3\necho not reached\n")
    assert result.exit_status == 3 and result.failures == ["exit 3"]
    result, _ = run(m, tmp_path, 'die "bad"\n')
    assert result.failures == ["ERROR: bad"] and result.to_json()["steps"] == [
        {"verb": "die", "line": 1, "ok": False, "message": "ERROR: bad", "output": "ERROR: bad\n"}]


def test_skip_is_kselftests_exit_code_4(m: Machine, tmp_path: Path) -> None:
    result, out = run(m, tmp_path, 'skip "no kprobes"\necho not reached\n')
    assert result.ok and result.skipped == "no kprobes" and result.exit_code == 4
    assert out == "SKIP: no kprobes\n" and m.dmesg_lines()[-1] == "SKIP: no kprobes"
    assert result.steps[0].ok and result.steps[0].message == "SKIP: no kprobes"


def test_commands_inside_functions_are_not_steps(m: Machine, tmp_path: Path) -> None:
    result, _ = run(m, tmp_path, "f() {\n\techo in f\n\tfalse\n}\nf\nif ! f; then :; fi\n")
    assert [(s.verb, s.line, s.ok) for s in result.steps] == [("f", 5, False), ("f", 6, True), (":", 6, True)]


def test_a_syntax_error_is_reported_before_anything_runs(m: Machine, tmp_path: Path) -> None:
    before = len(m.dmesg_lines())
    with pytest.raises(ScenarioError) as exc:
        run(m, tmp_path, "log 'test_klp: first'\nif true; then\n\techo never\n")
    assert str(exc.value) == "./t.sh: line 4: syntax error: unexpected end of file ('if' on line 2 has no 'fi')"
    assert len(m.dmesg_lines()) == before


@pytest.mark.parametrize("script, line, message", [
    ('echo "open\nstill open\n', 1, "unexpected EOF while looking for matching `\"'"),
    ("echo a\necho 'x\n", 2, "unexpected EOF while looking for matching `''"),
    ("echo a; ;\n", 1, "syntax error near unexpected token `;'"),
    ("fi\n", 1, "syntax error near unexpected token `fi'"),
    ("if then\n", 1, "syntax error near unexpected token `then'"),        # bash 5.2's words, every one
    ("if true; then\nfi\n", 2, "syntax error near unexpected token `fi'"),
    ("if true; then :; else fi\n", 1, "syntax error near unexpected token `fi'"),
    ("while do :; done\n", 1, "syntax error near unexpected token `do'"),
    ("until true; do done\n", 1, "syntax error near unexpected token `done'"),
    ("for x in a; do\ndone\n", 2, "syntax error near unexpected token `done'"),
    ("{ }\n", 1, "syntax error near unexpected token `}'"),
    ("f() { }\n", 1, "syntax error near unexpected token `}'"),
    ("echo $((1+1)\n", 1, "unexpected EOF while looking for matching `)'"),
    ("cat <<EOF\nno end\n", 1, "here-document at line 1 delimited by end-of-file (wanted `EOF')"),
    ("echo ${x\n", 1, "unexpected EOF while looking for matching `}'"),
    ("echo ${!x*}\n", 1, "${!x*} (names by prefix) is not supported"),
    ("select x in a; do :; done\n", 1, "'select' loops are not supported"),
    ("coproc cat\n", 1, "'coproc' are not supported"),
    ("cat >(wc)\n", 1, "process substitution >(…) is not supported"),
    ("cat <> /dev/null\n", 1, "the <> redirection (read and write) is not supported"),
    ("local -a a=(1 2)\n", 1, "NAME=(…) as an argument (an array given to local or declare) is not supported"),
    ("echo a\ntrap 'echo' ERR\n", 2, "trap on ERR is not supported"),
    ("shopt -s extglob\n", 1, "the shopt builtin is not supported"),
    ("exec cat\n", 1, "exec COMMAND (replacing the shell) is not supported"),
    ("set -f\n", 1, "set -f is not supported"),
])
def test_unsupported_and_malformed_scripts_name_the_line(m: Machine, tmp_path: Path, script: str, line: int,
                                                         message: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        run(m, tmp_path, script)
    assert exc.value.lineno == line
    assert str(exc.value).startswith(f"./t.sh: line {line}: ") and message in str(exc.value)


def test_run_text_without_a_script_is_bash_reading_its_input(m: Machine) -> None:
    out = io.StringIO()
    runner = ScenarioRunner(m, out)
    result = runner.run_text("echo $0 $(pwd)\nnosuch\n")
    assert result.stdout == "bash /root\n" and result.stderr == "bash: line 2: nosuch: command not found\n"
    result = runner.run_text("X=1\n")
    result = runner.run_text("echo $X\n")                 # one shell: the variable stays
    assert result.stdout.endswith("1\n")


# ---------------------------------------------------------------- sourcing functions.sh
def test_the_log_style_comes_from_the_functions_sh_sourced(m: Machine, tmp_path: Path) -> None:
    """A script beside the 5.x-style functions.sh logs `% modprobe`; the same
    load with the built-in helpers logs `% insmod test_modules/…` (never
    from the kernel version)."""
    shutil.copy(ROOT / "scenarios" / "history" / "functions.sh", tmp_path / "functions.sh")
    result, out = run(m, tmp_path, ". $(dirname $0)/functions.sh\nload_failing_mod test_klp_nothere\n")
    assert result.ok, out
    assert m.dmesg_lines()[-2:] == ["% modprobe test_klp_nothere",
                                    "modprobe: FATAL: Module test_klp_nothere not found in directory "
                                    "/lib/modules/6.13.0-klpemu"]
    m2 = Machine(cpus=1).boot()
    result = run_script(m2, tmp_path, "load_failing_mod test_klp_nothere\n", name="builtin.sh")
    assert result.ok
    assert m2.dmesg_lines()[-2:] == ["% insmod test_modules/test_klp_nothere.ko",
                                     "insmod: ERROR: could not load module test_modules/test_klp_nothere.ko: "
                                     "No such file or directory"]


def test_once_a_functions_sh_is_sourced_the_built_in_helpers_are_gone(m: Machine, tmp_path: Path) -> None:
    (tmp_path / "functions.sh").write_text("log() { echo \"mine: $1\" > /dev/kmsg; }\n")
    result, out = run(m, tmp_path, ". ./functions.sh\nlog hello\nstart_test x\n")
    assert m.dmesg_lines()[-1] == "mine: hello"
    assert out == "./t.sh: line 3: start_test: command not found\n" and result.exit_status == 127


def test_errors_in_a_sourced_file_name_the_file(m: Machine, tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text("f() {\n\tnosuchcmd\n}\n")
    (tmp_path / "bad.sh").write_text("g() {\n\tselect x in a; do :; done\n}\n")
    result, out = run(m, tmp_path, ". $(dirname $0)/lib.sh\nf\n. ./missing.sh\necho $?\n")
    assert out == ("./lib.sh: line 2: nosuchcmd: command not found\n"
                   "./t.sh: line 3: ./missing.sh: No such file or directory\n1\n")
    with pytest.raises(ScenarioError, match=r"^\./bad\.sh: line 2: 'select' loops are not supported$"):
        run(m, tmp_path, ". ./bad.sh\n")


def test_a_kernel_tree_selftests_directory_runs_as_is(m: Machine, tmp_path: Path) -> None:
    """The layout of tools/testing/selftests/livepatch/ (test-*.sh, functions.sh,
    test_modules/ with sources only): test_modules/NAME.ko is the module built for the guest."""
    tree = tmp_path / "livepatch"
    shutil.copytree(ROOT / "scenarios" / "selftests", tree)
    (tree / "test_modules").mkdir()
    (tree / "test_modules" / "test_klp_livepatch.c").write_text("/* the source; klpemu loads its build */\n")
    out = io.StringIO()
    result = ScenarioRunner(m, out).run_file(tree / "test-sysfs.sh")
    assert result.exit_code == 0 and out.getvalue() == "TEST: sysfs test ... ok\nTEST: sysfs test object/patched ... ok\n"


# ---------------------------------------------------------------- the built-in helpers
def test_start_test_and_check_result_against_the_real_log(m: Machine, tmp_path: Path) -> None:
    result, out = run(m, tmp_path, """
log "test_klp_before: not in the result"
MOD=test_klp_x
start_test "basic function patching"
echo "$MOD: hello" > /dev/kmsg
grep 'klpemu' /proc/cmdline > /dev/kmsg
echo "livepatch: from echo" > /dev/kmsg
check_result "$MOD: hello
livepatch: from echo"
""")
    assert result.ok, out
    assert out == "TEST: basic function patching ... ok\n"
    after = canary_lines(m)
    assert after[:2] == ["===== TEST: basic function patching =====", "test_klp_x: hello"]
    assert "console=ttyS0 klpemu" in after      # logged, filtered out by check_result
    assert [s.verb for s in result.steps] == ["log", "start_test", "echo", "grep", "echo", "check_result"]


def test_check_result_filters_like_functions_sh(m: Machine, tmp_path: Path) -> None:
    result, out = run(m, tmp_path, r"""
start_test "filters"
log "test_klp_livepatch: loading out-of-tree module taints kernel."
log "test_klp_livepatch: tainting kernel with TAINT_LIVEPATCH"
log "unrelated: dropped"
log "[T12] test_klp_x: caller id stripped"
log "[    1.000000] livepatch: a second timestamp-looking prefix stays"
log "x livepatch: kept whole"
check_result "test_klp_x: caller id stripped
[    1.000000] livepatch: a second timestamp-looking prefix stays
x livepatch: kept whole"
""")
    assert result.ok, out


def test_the_canary_is_unique_and_each_test_sees_only_its_own_lines(m: Machine, tmp_path: Path) -> None:
    result, out = run(m, tmp_path, """
start_test one
log "test_klp: one"
check_result "test_klp: one"
start_test two
log "test_klp: two"
check_result "test_klp: two"
""")
    assert result.ok and out == "TEST: one ... ok\nTEST: two ... ok\n"
    canaries = [ln for ln in m.dmesg_lines() if ln.startswith("livepatch kselftest timestamp: ")]
    assert len(set(canaries)) == 2
    assert re.fullmatch(r"livepatch kselftest timestamp: 1970-01-01 00:00:\d\d\.\d{9}\+00:00", canaries[0])


def test_a_failing_check_result_prints_a_diff_and_stops(m: Machine, tmp_path: Path) -> None:
    result, out = run(m, tmp_path, """
start_test "will fail"
log "test_klp: one"
log "test_klp: two"
log "test_klp: three"
check_result "test_klp: one
test_klp: deux
test_klp: three"
echo not reached
""")
    assert not result.ok and result.exit_code == 1
    assert result.stdout == ("TEST: will fail ... not ok\n\n"
                             "--- expected\n+++ result\n@@ -1,3 +1,3 @@\n"
                             " test_klp: one\n-test_klp: deux\n+test_klp: two\n test_klp: three\n\n")
    assert result.stderr == "ERROR: livepatch kselftest(s) failed\n"
    assert m.dmesg_lines()[-1] == "ERROR: livepatch kselftest(s) failed"
    step = result.steps[-1]
    assert (step.verb, step.line, step.ok, step.message) == ("check_result", 6, False,
                                                             "ERROR: livepatch kselftest(s) failed")


def test_check_result_with_nothing_logged_reports_a_buffer_overrun(m: Machine, tmp_path: Path) -> None:
    result, out = run(m, tmp_path, 'start_test empty\ncheck_result "test_klp: something"\n')
    assert not result.ok
    assert re.search(r"not ok\n\nbuffer overrun\? can't find canary dmesg entry: "
                     r"\[ +\d+\.\d{6}\] livepatch kselftest timestamp: ", out)


def test_dmesg_minus_c_clears_what_check_result_sees(m: Machine, tmp_path: Path) -> None:
    result, out = run(m, tmp_path, 'start_test x\nlog "test_klp: old"\ndmesg -C\ncheck_result "test_klp: x"\n')
    assert not result.ok and "buffer overrun?" in out      # the canary went with the rest


def test_loop_until_returns_as_soon_as_the_condition_holds(m: Machine, tmp_path: Path) -> None:
    t0 = m.clock_ns
    result, _ = run(m, tmp_path, "MOD=klpemu\nloop_until 'grep -q \"$MOD$\" /proc/cmdline'\n"
                                 "loop_until '[[ $(cat /proc/cmdline) == \"console=ttyS0 klpemu\" ]]'\n"
                                 "loop_until '! grep -q nomatch /proc/cmdline'\nloop_until true\n")
    assert result.ok
    assert m.clock_ns - t0 < 50_000_000


def test_loop_until_gives_up_after_max_retries(m: Machine, tmp_path: Path) -> None:
    t0 = m.clock_ns
    result, out = run(m, tmp_path, "loop_until 'grep -q ^0$ /proc/cmdline' || echo gave up\n")
    assert result.ok and out == "gave up\n"
    assert 60.0 <= (m.clock_ns - t0) / 1e9 < 61.0        # 600 sleeps of 0.1 s
    t0 = m.clock_ns
    result, _ = run(m, tmp_path, "MAX_RETRIES=5\nloop_until false\n")
    assert result.exit_status == 1 and 0.5 <= (m.clock_ns - t0) / 1e9 < 0.6


def test_check_sysfs_value_and_rights(m: Machine, tmp_path: Path) -> None:
    m.vfs.register("/sys/kernel/livepatch/demo/enabled", show=lambda: "1\n",
                   store=lambda ctx, text: len(text), mode=0o644)
    m.vfs.register("/sys/kernel/livepatch/demo/force", store=lambda ctx, text: len(text), mode=0o200)
    result, out = run(m, tmp_path, 'check_sysfs_value demo enabled 1\ncheck_sysfs_rights demo "" drwxr-xr-x\n'
                                   "check_sysfs_rights demo enabled -rw-r--r--\n"
                                   "check_sysfs_rights demo force --w-------\n")
    assert result.ok and out == ""
    result, out = run(m, tmp_path, "check_sysfs_value demo enabled 0\necho not reached\n")
    assert out == "ERROR: Unexpected value in /sys/kernel/livepatch/demo/enabled: 0 vs. 1\n"
    result, out = run(m, tmp_path, "check_sysfs_rights demo enabled -r--r--r--\n")
    assert out == ("ERROR: Unexpected access rights of /sys/kernel/livepatch/demo/enabled: "
                   "-r--r--r-- vs. -rw-r--r--\n")


def test_set_ftrace_enabled(m: Machine, tmp_path: Path) -> None:
    result, _ = run(m, tmp_path, "set_ftrace_enabled 0\nset_ftrace_enabled 1\n")
    assert result.ok and m.dmesg_lines()[-2:] == ["livepatch: kernel.ftrace_enabled = 0",
                                                  "livepatch: kernel.ftrace_enabled = 1"]
    result, out = run(m, tmp_path, "set_ftrace_enabled x\necho not reached\n")
    assert result.skipped == "failed to set kernel.ftrace_enabled = x"
    assert out == "SKIP: failed to set kernel.ftrace_enabled = x\n"


def test_setup_config_restores_the_configuration_at_exit(m: Machine, tmp_path: Path) -> None:
    result, _ = run(m, tmp_path, "sysctl -q kernel.ftrace_enabled=0\nsetup_config\n"
                                 "sysctl -n kernel.ftrace_enabled\n")
    assert result.ok and result.stdout == "1\n"
    assert m.read_file("/proc/sys/kernel/ftrace_enabled") == "0\n"      # the EXIT trap put it back


def test_a_missing_module(m: Machine, tmp_path: Path) -> None:
    result, out = run(m, tmp_path, "load_lp test_klp_nothere\necho not reached\n")
    assert not result.ok
    assert out == 'ERROR: Can\'t find "test_modules/test_klp_nothere.ko", try "make"\n'


@pytest.fixture
def bogus_dir(tmp_path: Path) -> Path:
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "test_klp_bogus.ko").write_bytes(b"not an ELF file at all" * 10)
    return tmp_path / "modules"


def test_load_failing_mod_logs_kmods_error(m: Machine, tmp_path: Path, bogus_dir: Path) -> None:
    result, out = run(m, tmp_path, """
start_test "failing load"
load_failing_mod test_klp_bogus foo=1
check_result "% insmod test_modules/test_klp_bogus.ko foo=1
insmod: ERROR: could not insert module test_modules/test_klp_bogus.ko: Invalid module format"
insmod test_modules/test_klp_bogus.ko
""", module_dirs=[bogus_dir])
    assert out == ("TEST: failing load ... ok\n"
                   "insmod: ERROR: could not insert module test_modules/test_klp_bogus.ko: "
                   "Invalid module format\n")
    assert [s.ok for s in result.steps] == [True, True, True, False]


def test_a_module_that_does_not_load_stops_load_failing_paths(m: Machine, tmp_path: Path,
                                                             bogus_dir: Path) -> None:
    result, out = run(m, tmp_path, "load_lp_nowait test_klp_bogus\necho not reached\n", module_dirs=[bogus_dir])
    assert not result.ok and out == "ERROR: module test_klp_bogus is not a livepatch\n"
    result, out = run(m, tmp_path, "load_mod test_klp_bogus\necho not reached\n", module_dirs=[bogus_dir])
    assert out == ("ERROR: insmod: ERROR: could not insert module test_modules/test_klp_bogus.ko: "
                   "Invalid module format\n")
    assert "% insmod test_modules/test_klp_bogus.ko" in m.dmesg_lines()[-4:]


def test_basic_function_patching_with_the_built_in_helpers(m: Machine, tmp_path: Path) -> None:
    result, out = run(m, tmp_path, """\
MOD_LIVEPATCH=test_klp_livepatch
setup_config
start_test "basic function patching"
load_lp $MOD_LIVEPATCH
grep 'live patched' /proc/cmdline > /dev/kmsg
disable_lp $MOD_LIVEPATCH
unload_lp $MOD_LIVEPATCH
grep 'live patched' /proc/cmdline > /dev/kmsg
check_result "% insmod test_modules/$MOD_LIVEPATCH.ko
livepatch: enabling patch '$MOD_LIVEPATCH'
livepatch: '$MOD_LIVEPATCH': initializing patching transition
livepatch: '$MOD_LIVEPATCH': starting patching transition
livepatch: '$MOD_LIVEPATCH': completing patching transition
livepatch: '$MOD_LIVEPATCH': patching complete
$MOD_LIVEPATCH: this has been live patched
% echo 0 > $SYSFS_KLP_DIR/$MOD_LIVEPATCH/enabled
livepatch: '$MOD_LIVEPATCH': initializing unpatching transition
livepatch: '$MOD_LIVEPATCH': starting unpatching transition
livepatch: '$MOD_LIVEPATCH': completing unpatching transition
livepatch: '$MOD_LIVEPATCH': unpatching complete
% rmmod $MOD_LIVEPATCH"
""")
    assert result.ok, out
    assert out == "TEST: basic function patching ... ok\n"


@pytest.mark.parametrize("script", ["load_lp\n", "set_pre_patch_ret x\n", "check_sysfs_value a b\n"])
def test_built_in_helpers_need_their_arguments(m: Machine, tmp_path: Path, script: str) -> None:
    with pytest.raises(ScenarioError, match=r"line 1: usage: "):
        run(m, tmp_path, script)


def test_the_demo_scenario_runs() -> None:
    m = Machine(cpus=2, seed=0).boot()
    out = io.StringIO()
    result = ScenarioRunner(m, out).run_file(ROOT / "scenarios" / "demo.sh")
    assert result.exit_code == 0 and "TEST: boot and patch ... ok\n" in out.getvalue(), out.getvalue()
