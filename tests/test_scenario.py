"""Scenario scripts in the kernel selftests' language, on a real booted machine."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from emu import Machine
from klpemu.scenario import (FIXTURE_MODULES, Lexer, ScenarioError, ScenarioResult, ScenarioRunner,
                             bre_to_python, rights_string)


@pytest.fixture
def m() -> Machine:
    return Machine(cpus=1).boot()


def run(m: Machine, text: str, **kw: object) -> tuple[ScenarioResult, str]:
    out = io.StringIO()
    result = ScenarioRunner(m, out, **kw).run_text(text)
    return result, out.getvalue()


def canary_lines(m: Machine) -> list[str]:
    """dmesg after the last start_test canary."""
    lines = m.dmesg_lines()
    k = max(i for i, ln in enumerate(lines) if ln.startswith("livepatch kselftest timestamp: "))
    return lines[k + 1:]


# ---------------------------------------------------------------- parsing
def test_a_quoted_argument_spans_lines_and_line_numbers_follow() -> None:
    cmds = Lexer('# header\n\necho "a\nb\nc"\ncat /proc/x  # trailing comment\n').commands()
    assert [c.lineno for c in cmds] == [3, 6]
    assert cmds[0].words[1] == [(True, "lit", "a\nb\nc")]
    assert len(cmds[1].words) == 2


def test_backslash_newline_continues_a_command() -> None:
    cmds = Lexer("echo a \\\n  b\necho c\n").commands()
    assert [c.lineno for c in cmds] == [1, 3]
    assert len(cmds[0].words) == 3


def test_variables_quotes_and_word_splitting(m: Machine) -> None:
    result, out = run(m, """
MOD=test_klp_livepatch
ARGS="replace=1   foo=2"
EMPTY=
echo $MOD/${MOD}x
echo "[$ARGS]"
echo [$ARGS]
echo '$MOD' "\\$MOD" a#b
echo $EMPTY "" end
export LATER="z"
echo $LATER
""")
    assert result.ok
    assert out == ("test_klp_livepatch/test_klp_livepatchx\n[replace=1   foo=2]\n"
                   "[replace=1 foo=2]\n$MOD $MOD a#b\n end\nz\n")


def test_predefined_functions_sh_variables(m: Machine) -> None:
    _, out = run(m, "echo $SYSFS_KLP_DIR $KLP_SYSFS_DIR $MAX_RETRIES $RETRY_INTERVAL\n")
    assert out == "/sys/kernel/livepatch /sys/kernel/livepatch 600 .1\n"


def test_command_substitution(m: Machine) -> None:
    result, out = run(m, 'V=$(cat /proc/cmdline)\necho "<$V>"\nW=$(cat /proc/nonexistent)\necho "<$W>"\n'
                         "echo $(grep klpemu /proc/cmdline | wc -l)\n")
    assert result.ok
    assert out == "<console=ttyS0 klpemu>\n<>\n1\n"


@pytest.mark.parametrize("script, line, message", [
    ("echo ok\n\nfrobnicate now\n", 3, "unknown command 'frobnicate'"),
    ('echo "open\nstill open\n', 1, "unterminated double quote"),
    ("echo a\necho 'x\n", 2, "unterminated single quote"),
    ("echo a; echo b\n", 1, "';' (one command per line) is not supported"),
    ("\ncat /proc/cmdline && echo b\n", 2, "'&&' (and '&' inside $(…)) is not supported"),
    ("cat /proc/cmdline | grep x\n", 1, "pipes outside $(…) (and '||' inside it) is not supported"),
    ("echo $((1+1)\n", 1, "unterminated $(("),
    ("echo ${X%% }\n", 1, "unsupported expansion"),
    ("FOO=1 cat /proc/cmdline\n", 1, "VAR=value before a command is not supported"),
    ("cat /proc/cmdline 2>/dev/null\n", 1, "redirections of file descriptors"),
    ("echo `date`\n", 1, "backquotes"),
    ("echo $1\n", 1, "special parameter $1"),
    ("echo a\nlog x > /dev/kmsg\n", 2, "log cannot be redirected"),
    ("echo a >\n", 1, "a redirection must be the end of the command"),
])
def test_usage_errors_name_the_line(m: Machine, script: str, line: int, message: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        run(m, script)
    assert exc.value.lineno == line
    assert str(exc.value).startswith(f"line {line}: ")
    assert message in str(exc.value)


def test_unknown_commands_are_found_before_anything_runs(m: Machine) -> None:
    before = len(m.dmesg_lines())
    with pytest.raises(ScenarioError, match=r"line 2: unknown command 'lod_lp'"):
        run(m, "log 'test_klp: first'\nlod_lp test_klp_livepatch\n")
    assert len(m.dmesg_lines()) == before


def test_an_undefined_variable_is_an_error_at_its_line(m: Machine) -> None:
    with pytest.raises(ScenarioError, match=r"line 3: undefined variable \$MOD_LIVPATCH"):
        run(m, "MOD_LIVEPATCH=x\necho ok\nload_lp $MOD_LIVPATCH\n")


# ---------------------------------------------------------------- grep
@pytest.mark.parametrize("bre, text, hit", [
    ("^0$", "0", True), ("^0$", "10", False), ("a+b", "a+b", True), ("a+b", "aab", False),
    (r"a\+b", "aab", True), (r"\(tainting\|taints\) kernel", "x taints kernel", True),
    ("[[:digit:]]*x", "12x", True), ("*a", "*a", True), ("a.c", "abc", True), ("a|b", "a|b", True),
    ("live patched", "test_klp_livepatch: this has been live patched", True),
])
def test_basic_regular_expressions(bre: str, text: str, hit: bool) -> None:
    assert bool(re.search(bre_to_python(bre), text)) == hit


def test_grep_prints_or_logs_each_matching_line(m: Machine) -> None:
    result, out = run(m, "grep console /proc/cmdline\ngrep -q console /proc/cmdline\n"
                         "grep nomatch /proc/cmdline\ngrep ^MemTotal: /proc/meminfo > /dev/kmsg\n")
    assert result.ok                       # no match is no failure, as in a shell
    assert out == "console=ttyS0 klpemu\n"
    assert m.dmesg_lines()[-1].startswith("MemTotal:")


def test_a_failing_shell_command_is_a_failed_step_and_the_script_goes_on(m: Machine) -> None:
    result, out = run(m, "cat /proc/nonexistent\necho after\n")
    assert not result.ok and result.exit_code == 1
    assert out == "cat: /proc/nonexistent: No such file or directory\nafter\n"
    assert [(s.verb, s.line, s.ok) for s in result.steps] == [("cat", 1, False), ("echo", 2, True)]
    assert result.steps[0].message == "cat: /proc/nonexistent: No such file or directory"


# ---------------------------------------------------------------- start_test / check_result
def test_start_test_and_check_result_against_the_real_log(m: Machine) -> None:
    result, out = run(m, """
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


def test_check_result_filters_like_functions_sh(m: Machine) -> None:
    result, out = run(m, r"""
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


def test_the_canary_is_unique_and_each_test_sees_only_its_own_lines(m: Machine) -> None:
    result, out = run(m, """
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


def test_a_failing_check_result_prints_a_diff_and_stops(m: Machine) -> None:
    result, out = run(m, """
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
    assert out == ("TEST: will fail ... not ok\n\n"
                   "--- expected\n+++ result\n@@ -1,3 +1,3 @@\n"
                   " test_klp: one\n-test_klp: deux\n+test_klp: two\n test_klp: three\n\n"
                   "ERROR: livepatch kselftest(s) failed\n")
    assert m.dmesg_lines()[-1] == "ERROR: livepatch kselftest(s) failed"
    step = result.steps[-1]
    assert (step.verb, step.line, step.ok) == ("check_result", 6, False)
    assert "-test_klp: deux" in step.message
    assert result.to_json()["steps"][-1]["ok"] is False


def test_check_result_with_nothing_logged_reports_a_buffer_overrun(m: Machine) -> None:
    result, out = run(m, 'start_test empty\ncheck_result "test_klp: something"\n')
    assert not result.ok
    assert re.search(r"not ok\n\nbuffer overrun\? can't find canary dmesg entry: "
                     r"\[ +\d+\.\d{6}\] livepatch kselftest timestamp: ", out)


def test_dmesg_minus_c_starts_a_fresh_result_without_a_canary(m: Machine) -> None:
    result, out = run(m, 'log "test_klp: old"\ndmesg -C\nlog "test_klp: new"\ncheck_result "test_klp: new"\n')
    assert result.ok and out == "ok\n"


def test_log(m: Machine) -> None:
    result, _ = run(m, 'log "livepatch: hello from a scenario"\n')
    assert result.ok and m.dmesg_lines()[-1] == "livepatch: hello from a scenario"


def test_die_and_skip_stop_the_script(m: Machine) -> None:
    result, out = run(m, 'skip "no kprobes"\necho not reached\n')
    assert result.ok and result.skipped == "no kprobes" and result.exit_code == 4
    assert out == "SKIP: no kprobes\n" and m.dmesg_lines()[-1] == "SKIP: no kprobes"
    result, out = run(m, 'die "bad"\necho not reached\n')
    assert not result.ok and out == "ERROR: bad\n"


def test_exit(m: Machine) -> None:
    result, out = run(m, "echo a\nexit 0\necho not reached\n")
    assert result.ok and out == "a\n"
    result, _ = run(m, "exit 3\n")
    assert not result.ok and result.exit_status == 3


# ---------------------------------------------------------------- time
def test_sleep_advances_virtual_time(m: Machine) -> None:
    t0 = m.clock_ns
    result, _ = run(m, "sleep 2.5\nsleep .5\n")
    assert result.ok
    assert 3.0 <= (m.clock_ns - t0) / 1e9 < 3.01


def test_loop_until_returns_as_soon_as_the_condition_holds(m: Machine) -> None:
    t0 = m.clock_ns
    result, _ = run(m, "MOD=klpemu\nloop_until 'grep -q \"$MOD$\" /proc/cmdline'\n"
                       "loop_until '[[ $(cat /proc/cmdline) == \"console=ttyS0 klpemu\" ]]'\n"
                       "loop_until '! grep -q nomatch /proc/cmdline'\nloop_until true\n")
    assert result.ok
    assert m.clock_ns - t0 < 50_000_000


def test_loop_until_times_out_after_600_retries(m: Machine) -> None:
    t0 = m.clock_ns
    result, out = run(m, "loop_until 'grep -q ^0$ /proc/cmdline'\necho after\n")
    assert not result.ok
    assert 60.0 <= (m.clock_ns - t0) / 1e9 < 61.0        # 600 sleeps of 0.1 s
    assert out == "loop_until: still false after 600 retries: grep -q ^0$ /proc/cmdline\nafter\n"
    assert result.steps[0].verb == "loop_until" and not result.steps[0].ok


def test_loop_until_honours_max_retries(m: Machine) -> None:
    t0 = m.clock_ns
    result, _ = run(m, "MAX_RETRIES=5\nloop_until false\n")
    assert not result.ok and 0.5 <= (m.clock_ns - t0) / 1e9 < 0.6


@pytest.mark.parametrize("cond, message", [
    ("cat /proc/cmdline", "unsupported condition"),
    ("[[ -x /proc/cmdline ]]", "unsupported test expression"),
    ("[[ -e /proc/cmdline", "[[ without ]]"),
])
def test_loop_until_rejects_what_it_cannot_evaluate(m: Machine, cond: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(message)):
        run(m, f"echo a\nloop_until '{cond}'\n")


def test_loop_until_file_tests_and_directory_counts(m: Machine) -> None:
    m.vfs.register("/sys/kernel/test_scenario/a", show=lambda: "1\n")
    m.vfs.register("/sys/kernel/test_scenario/b", show=lambda: "2\n")
    result, _ = run(m, "loop_until '[[ -e /proc/cmdline ]]'\nloop_until '[[ ! -e /proc/nope ]]'\n"
                       "loop_until '[[ $(ls -1 /sys/kernel/test_scenario | wc -l) -eq 2 ]]'\n"
                       "loop_until '[ -d /sys/kernel/test_scenario ]'\n")
    assert result.ok, result.failures


# ---------------------------------------------------------------- sysfs checks
def test_check_sysfs_value(m: Machine) -> None:
    m.vfs.register("/sys/kernel/livepatch/demo/enabled", show=lambda: "1\n")
    result, out = run(m, "check_sysfs_value demo enabled 1\n")
    assert result.ok and out == ""
    result, out = run(m, "check_sysfs_value demo enabled 0\necho not reached\n")
    assert not result.ok
    assert out == "ERROR: Unexpected value in /sys/kernel/livepatch/demo/enabled: 0 vs. 1\n"


def test_check_sysfs_rights(m: Machine) -> None:
    m.vfs.register("/sys/kernel/livepatch/demo/enabled", show=lambda: "1\n",
                   store=lambda ctx, text: len(text), mode=0o644)
    m.vfs.register("/sys/kernel/livepatch/demo/force", store=lambda ctx, text: len(text), mode=0o200)
    result, out = run(m, 'check_sysfs_rights demo "" drwxr-xr-x\ncheck_sysfs_rights demo enabled -rw-r--r--\n'
                         "check_sysfs_rights demo force --w-------\n")
    assert result.ok, out
    result, out = run(m, "check_sysfs_rights demo enabled -r--r--r--\n")
    assert out == ("ERROR: Unexpected access rights of /sys/kernel/livepatch/demo/enabled: "
                   "-r--r--r-- vs. -rw-r--r--\n")


def test_rights_strings() -> None:
    assert rights_string(0o755, True) == "drwxr-xr-x"
    assert rights_string(0o200, False) == "--w-------"


def test_set_ftrace_enabled(m: Machine) -> None:
    if m.exists("/proc/sys/kernel/ftrace_enabled"):
        result, _ = run(m, "set_ftrace_enabled 1\n")
        assert result.ok and m.dmesg_lines()[-1] == "livepatch: kernel.ftrace_enabled = 1"
        return
    # Not there (yet): --fail logs sysctl's complaint, without --fail the script skips.
    result, _ = run(m, "set_ftrace_enabled --fail 0\n")
    assert result.ok
    assert m.dmesg_lines()[-1] == ("livepatch: sysctl: cannot stat kernel.ftrace_enabled: "
                                   "No such file or directory")
    result, out = run(m, "set_ftrace_enabled 1\necho not reached\n")
    assert result.skipped == "failed to set kernel.ftrace_enabled = 1"
    assert out == "SKIP: failed to set kernel.ftrace_enabled = 1\n"


# ---------------------------------------------------------------- modules
def test_a_missing_module_names_the_directories_searched(m: Machine, tmp_path: Path) -> None:
    result, out = run(m, "load_lp test_klp_nothere\necho not reached\n", module_dirs=[tmp_path])
    assert not result.ok
    assert out == (f"ERROR: module test_klp_nothere: no test_klp_nothere.ko in {tmp_path}, "
                   f"{FIXTURE_MODULES}\n")


@pytest.fixture
def bogus_dir(tmp_path: Path) -> Path:
    (tmp_path / "test_klp_bogus.ko").write_bytes(b"not an ELF file at all" * 10)
    return tmp_path


def test_load_failing_mod_logs_kmods_error(m: Machine, bogus_dir: Path) -> None:
    result, out = run(m, """
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


def test_a_module_that_does_not_load_stops_load_mod(m: Machine, bogus_dir: Path) -> None:
    result, out = run(m, "load_mod test_klp_bogus\necho not reached\n", module_dirs=[bogus_dir])
    assert not result.ok
    assert out == ("ERROR: insmod: ERROR: could not insert module test_modules/test_klp_bogus.ko: "
                   "Invalid module format\n")
    lines = m.dmesg_lines()
    assert lines[-1] == out[:-1]
    assert "% insmod test_modules/test_klp_bogus.ko" in lines[-4:]


BASIC = """\
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
"""


def test_basic_function_patching_selftest(m: Machine) -> None:
    result, out = run(m, "MOD_LIVEPATCH=test_klp_livepatch\n" + BASIC)
    assert result.ok, out
    assert out == "TEST: basic function patching ... ok\n"


# ---------------------------------------------------------------- if
CMDLINE = "console=ttyS0 klpemu"


@pytest.mark.parametrize("head", [
    'if [[ "$(cat /proc/cmdline)" == "{v}" ]] ; then',
    'if [[ "$(cat /proc/cmdline)" == "{v}" ]]; then',
    'if [[ "$(cat /proc/cmdline)" == "{v}" ]];then',
    'if [[ "$(cat /proc/cmdline)" == "{v}" ]]\nthen',
    'if [[ "$(cat /proc/cmdline)" == "{v}" ]]\n\n# a comment\nthen  # another',
])
@pytest.mark.parametrize("value, taken", [(CMDLINE, True), ("console=ttyS0", False)])
def test_if_forms_true_and_false(m: Machine, head: str, value: str, taken: bool) -> None:
    result, out = run(m, head.format(v=value) + '\n\techo "taken"\n\techo -e "two\\nlines"\nfi\necho after\n')
    assert result.ok
    assert out == ("taken\ntwo\nlines\n" if taken else "") + "after\n"
    assert [s.verb for s in result.steps] == (["echo", "echo"] if taken else []) + ["echo"]


def test_if_elif_else_and_nesting(m: Machine) -> None:
    script = """\
X={x}
if [[ $X == a ]]; then
	echo A
elif [ "$X" = b ] ; then
	echo B
	if ! grep -q klpemu /proc/cmdline ; then
		echo never
	elif test -e /proc/cmdline
	then
		if true; then
			echo B-nested
		fi
	else
		echo never
	fi
elif grep -q nomatch /proc/cmdline; then
	echo never
else
	if false; then
		echo never
	else
		echo ELSE
	fi
fi
echo end
"""
    results = {x: run(m, script.format(x=x)) for x in "abc"}
    assert {x: out for x, (_, out) in results.items()} == {
        "a": "A\nend\n", "b": "B\nB-nested\nend\n", "c": "ELSE\nend\n"}
    assert [(s.verb, s.line) for s in results["b"][0].steps] == [("echo", 5), ("echo", 11), ("echo", 25)]
    assert all(r.ok for r, _ in results.values())


def test_an_if_condition_reads_the_guest_when_it_runs(m: Machine) -> None:
    value = {"v": "0\n"}

    def store(ctx: object, text: str) -> int:
        value["v"] = text if text.endswith("\n") else text + "\n"
        return len(text)
    m.vfs.register("/sys/kernel/test_scenario/v", show=lambda: value["v"], store=store, mode=0o644)
    result, out = run(m, """\
V=/sys/kernel/test_scenario/v
if [[ "$(cat $V)" == "0" ]] ; then
	echo 1 > $V
fi
if [[ "$(cat $V)" == "1" ]] ; then
	echo "now 1"
fi
if [[ $(cat $V) -eq 0 ]] ; then
	echo never
fi
""")
    assert result.ok and out == "now 1\n"


def test_die_in_a_taken_branch_stops_the_script(m: Machine) -> None:
    result, out = run(m, f"""\
echo before
if [[ "$(cat /proc/cmdline)" != "{CMDLINE}" ]] ; then
	echo -e "FAIL\\n\\n"
	die "not reached either"
fi
if [[ "$(cat /proc/cmdline)" == "{CMDLINE}" ]] ; then
	echo -e "FAIL\\n\\n"
	die "livepatch kselftest(s) failed"
	echo not reached
fi
echo not reached
""")
    assert not result.ok and result.exit_code == 1
    assert out == "before\nFAIL\n\n\nERROR: livepatch kselftest(s) failed\n"
    assert [(s.verb, s.line, s.ok) for s in result.steps] == [
        ("echo", 1, True), ("echo", 7, True), ("die", 8, False)]
    assert m.dmesg_lines()[-1] == "ERROR: livepatch kselftest(s) failed"


def test_quoted_keywords_are_plain_words(m: Machine) -> None:
    result, out = run(m, 'echo if then elif else fi\nlog "fi"\n')
    assert result.ok and out == "if then elif else fi\n"
    assert m.dmesg_lines()[-1] == "fi"
    with pytest.raises(ScenarioError, match=r"line 3: unknown command 'fi'"):
        run(m, 'if true; then\n\techo a\n"fi"\nfi\n')


@pytest.mark.parametrize("script, line, message", [
    ("echo a\nif true; then\n\techo b\n", 2, "'if' without 'fi'"),
    ("if true; then\n\tif false; then\n\t\techo b\n\tfi\necho c\n", 1, "'if' without 'fi'"),
    ("if true; then\n\techo b\nelse\n\techo c\n", 1, "'if' without 'fi'"),
    ("echo a\nfi\n", 2, "'fi' without a matching 'if'"),
    ("echo a\n\nelse\n", 3, "'else' without a matching 'if'"),
    ("elif true; then\n", 1, "'elif' without a matching 'if'"),
    ("echo a\nthen\n", 2, "'then' without a matching 'if … ; then'"),
    ("if true; then\n\techo a\nelse\n\techo b\nelse\n\techo c\nfi\n", 5, "'else' after 'else'"),
    ("if true; then\n\techo a\nelse\n\techo b\nelif true; then\n\techo c\nfi\n", 5, "'elif' after 'else'"),
    ("echo a\nif true\necho b\nthen\n\techo c\nfi\n", 2, "'if' without 'then'"),
    ("if true\n", 1, "'if' without 'then'"),
    ("if ; then\n\techo a\nfi\n", 1, "'if' needs a condition"),
    ("if true; then\nfi\n", 2, "'fi' after an empty 'then' branch"),
    ("if true; then\n\techo a\nelse\nfi\n", 4, "'fi' after an empty 'else' branch"),
    ("if true; then echo a\nfi\n", 1, "'then' must be alone on its line"),
    ("if true; then\n\techo a\nelse echo b\nfi\n", 3, "'else' must be alone on its line"),
    ("if true; then\n\techo a\nfi > /dev/null\n", 3, "'fi' must be alone on its line"),
    ("if true; then\n\techo a; fi\n", 2, "';' (one command per line) is not supported"),
    ("if true; echo a\nfi\n", 1, "';' (one command per line) is not supported"),
    ("echo a; then\n", 1, "';' (one command per line) is not supported"),
    ("if true; thenx\n", 1, "';' (one command per line) is not supported"),
    ("if true\nthen\n\techo a\nfi;\n", 4, "';' (one command per line) is not supported"),
    ("if cat /proc/cmdline; then\n\techo a\nfi\n", 1, "unsupported condition 'cat /proc/cmdline'"),
    ("if [[ -e /proc/cmdline ; then\n\techo a\nfi\n", 1, "[[ without ]]"),
    ("if grep -q x /proc/cmdline > /dev/null; then\n\techo a\nfi\n", 1, "a condition cannot be redirected"),
    ("echo a\nif false; then\n\tlod_lp x\nfi\n", 3, "unknown command 'lod_lp'"),
])
def test_if_usage_errors_name_the_line(m: Machine, script: str, line: int, message: str) -> None:
    before = len(m.dmesg_lines())
    with pytest.raises(ScenarioError) as exc:
        run(m, "log 'test_klp: ran'\n" + script)
    assert exc.value.lineno == line + 1            # the log line above
    assert message in str(exc.value)
    assert len(m.dmesg_lines()) == before          # found before anything ran


def test_basic_function_patching_selftest_with_its_if_checks(m: Machine) -> None:
    script = """\
MOD_LIVEPATCH1=test_klp_livepatch
setup_config
start_test "basic function patching"
load_lp $MOD_LIVEPATCH1

if [[ "$(cat /proc/cmdline)" != "$MOD_LIVEPATCH1: this has been live patched" ]] ; then
	echo -e "FAIL\\n\\n"
	die "livepatch kselftest(s) failed"
fi

disable_lp $MOD_LIVEPATCH1
unload_lp $MOD_LIVEPATCH1

if [[ "$(cat /proc/cmdline)" == "$MOD_LIVEPATCH1: this has been live patched" ]] ; then
	echo -e "FAIL\\n\\n"
	die "livepatch kselftest(s) failed"
fi

check_result "% insmod test_modules/$MOD_LIVEPATCH1.ko
livepatch: enabling patch '$MOD_LIVEPATCH1'
livepatch: '$MOD_LIVEPATCH1': initializing patching transition
livepatch: '$MOD_LIVEPATCH1': starting patching transition
livepatch: '$MOD_LIVEPATCH1': completing patching transition
livepatch: '$MOD_LIVEPATCH1': patching complete
% echo 0 > $SYSFS_KLP_DIR/$MOD_LIVEPATCH1/enabled
livepatch: '$MOD_LIVEPATCH1': initializing unpatching transition
livepatch: '$MOD_LIVEPATCH1': starting unpatching transition
livepatch: '$MOD_LIVEPATCH1': completing unpatching transition
livepatch: '$MOD_LIVEPATCH1': unpatching complete
% rmmod $MOD_LIVEPATCH1"
"""
    result, out = run(m, script)
    assert result.ok, out
    assert out == "TEST: basic function patching ... ok\n"
    assert [s.verb for s in result.steps] == ["setup_config", "start_test", "load_lp", "disable_lp",
                                              "unload_lp", "check_result"]
    # With the patch still on, the first check's branch is not taken and the
    # second one's is: the conditions read /proc/cmdline as it is then.
    result, out = run(m, script.replace("disable_lp $MOD_LIVEPATCH1\nunload_lp $MOD_LIVEPATCH1\n", "")
                      .replace('start_test "basic function patching"', 'start_test "again"'))
    assert not result.ok
    assert out == "TEST: again ... FAIL\n\n\nERROR: livepatch kselftest(s) failed\n"


def test_a_command_ending_in_or_goes_on_on_the_next_line(m: Machine) -> None:
    """As in bash (the selftests write `loop_until … ||` then `die …` below)."""
    result, out = run(m, 'false ||\n\n\techo "from the next line"\ntrue ||\n\techo never\necho end\n')
    assert result.ok
    assert out == "from the next line\nend\n"


def test_a_refused_echo_is_a_failed_step_and_the_script_goes_on(m: Machine) -> None:
    """echo > PATH and the helpers that echo into sysfs (disable_lp …) share one message."""
    result, out = run(m, "echo 1 > /proc/cmdline\ndisable_lp no_such_patch\necho end\n")
    assert [s.ok for s in result.steps] == [False, False, True]
    assert out == ("echo: write error: /proc/cmdline: Permission denied\n"
                   "echo: write error: /sys/kernel/livepatch/no_such_patch/enabled: "
                   "No such file or directory\nend\n")


# ---------------------------------------------------------------- $((…)) (klpemu/scenario/arith.py)
@pytest.mark.parametrize("expression, value", [
    ("", 0), ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("-7 / 2", -3), ("-7 % 2", -1), ("7 % -2", 1),
    ("010 + 0x10", 24), ("1 < 2 && 2 < 1 || 3", 1), ("!0 + ~0", 0), ("1 ? 2 ? 3 : 4 : 5", 3),
    ("0 ? 1 : 2", 2), ("x * 2", 84), ("empty + 1", 1), ("9223372036854775807 + 1", -(1 << 63)),
    ("1 << 65", 2), ("6 & 3 ^ 1 | 8", 11),
])
def test_arithmetic(expression: str, value: int) -> None:
    from klpemu.scenario.arith import evaluate
    assert evaluate(expression, {"x": "42", "empty": ""}.__getitem__) == value


@pytest.mark.parametrize("expression, message", [
    ("08", 'value too great for base (error token is "08")'),
    ("word + 1", "$word is not a number: 'a b'"),
    ("(1 + 2", "expected ')' before 'end of expression'"),
    ("1 +", "operand expected"),
    ("1 2", 'syntax error (error token is "2")'),
    ("1 ? 2", "expected ':' before 'end of expression'"),
    ("* 2", 'operand expected (error token is "*")'),
    ("1 @ 2", 'syntax error (error token is "@ 2")'),
    ("x++", "'++' (assignment, increment or comma) is not supported"),
    ("5 % 0", "division by 0"),
])
def test_arithmetic_errors(expression: str, message: str) -> None:
    from klpemu.scenario.arith import ArithError, evaluate
    with pytest.raises(ArithError) as exc:
        evaluate(expression, {"word": "a b", "x": "1"}.__getitem__)
    assert str(exc.value) == message
