r"""Scenario scripts: the body of a kernel livepatch selftest, run on the emulator.

A scenario is a bash subset that would also run on a real kernel with the
selftests' `functions.sh` sourced. Commands print to the scenario's output as
a shell would, and log into the kernel log exactly as the selftests do
(`% insmod test_modules/X.ko`, `===== TEST: … =====`, …).

Syntax (read as a whole, so that a quoted argument may span lines):
- one simple command per line; `\` + newline continues a line;
- `# comments`, blank lines;
- quoting: '…' (literal), "…" (with `$` expansion; inside it a backslash
  escapes only $, backquote, " and backslash), `\c` outside quotes;
- `VAR=value`, `VAR="multi word"`, `export VAR=value`; `$VAR`, `${VAR}`
  (an undefined variable is an error, to catch typos); unquoted expansions
  are split into words as bash does; `$'…'` (ANSI-C quoting);
- indexed arrays: `NAME[INDEX]=value`, `${NAME[INDEX]}`, `${NAME[@]}` and
  `${NAME[*]}` (the elements in index order), `${#NAME[@]}` (their count);
- `$((EXPR))`: integer arithmetic, C's operators and `?:` without
  assignments (klpemu/scenario/arith.py); array subscripts are arithmetic too;
- `$(…)` for a few read-only commands: `cat PATH…`, `ls [-1] DIR`, `grep …`,
  `dmesg`, `echo …`, `seq [FIRST [INCR]] LAST`, `nproc` and
  `getconf _NPROCESSORS_ONLN` (both count the CPUs in
  /sys/devices/system/cpu/online, as glibc does), optionally piped into
  `grep …`, `wc -l` or `tr SET1 SET2`;
- `CMD > PATH` (also `>>`) for echo, cat and grep (`> /dev/null` discards);
- `if COND; then` (or `then` on the next line), optional `elif COND; then`
  and `else`, closing `fi`, nested at will; COND is a condition as for
  loop_until below, evaluated when the `if` runs; `then`, `else` and `fi`
  stand alone on their lines, and a branch may not be empty (as in bash).
- `for NAME in WORDS; do` (or `do` on the next line) … `done`: WORDS are
  expanded and split when the loop starts; `do` and `done` stand alone.
- `CMD1 || CMD2 …`: a command runs only if the one before it failed, whose
  failure then does not count (`kill $pid || true`); a line ending in `||`
  goes on on the next one.
- `PROGRAM &` starts one of the guest's user programs (PROGRAMS, e.g.
  `./test_klp-call_getpid`, the selftests' helper that calls getpid in a
  loop) as a user task, in the background; `$!` is its pid. A program runs
  until a signal ends it (`kill [-SIGNAL] PID…`), so it only runs with `&`.
- Not supported, and reported with the line number: `;` (but before `then`
  and `do`), `&&`, `|` (outside `$(…)`), `<`, `&` (but after a program),
  `( )`, backquotes, `${VAR%…}` forms, `NAME=(…)` array literals,
  `while`/`until`/`case`/functions.

Verbs: see VERBS (shell: cat, echo, grep, sleep, dmesg, insmod, rmmod, kill,
true, false, exit;
functions.sh: log, start_test, check_result, load_mod, load_lp,
load_lp_nowait, load_failing_mod, unload_mod, unload_lp, disable_lp,
set_pre_patch_ret, loop_until, check_sysfs_rights, check_sysfs_value,
set_ftrace_enabled, setup_config, skip, die, cleanup_tracing, trace_function,
check_traced_functions).

`loop_until 'CONDITION'` evaluates CONDITION up to MAX_RETRIES+1 times (601),
RETRY_INTERVAL (0.1 s) of virtual time apart, as functions.sh does. A condition
(loop_until's, if's, elif's) is one command, optionally negated with `!`:
- `grep [-q] [-v] [-E|-F] [-i] [-x] PATTERN PATH` (true when a line matches);
- `[[ EXPR ]]`, `[ EXPR ]` or `test EXPR`, where EXPR is `-e|-d|-f|-n|-z X`,
  `A ==|=|!= B` (exact strings) or `A -eq|-ne|-lt|-le|-gt|-ge B`, possibly
  after `!`; operands may use `$(…)`, e.g.
  `[[ $(ls -1 /sys/kernel/livepatch | wc -l) -eq 1 ]]` or
  `[[ $(cat /sys/module/X/refcnt) == "0" ]]`;
- `true`, `false`;
- `ftrace_disable_supported` (newer functions.sh: can kernel.ftrace_enabled be 0).
A loop that runs out of retries is a failed step (the script goes on).

Helpers that `die` in functions.sh (a failed check_result, a module that does
not load, a wait that times out …) log `ERROR: …` to /dev/kmsg, print it, and
stop the script with a failure; `skip` stops it with SKIP (exit 4 in
kselftest terms, see ScenarioResult.exit_code). Plain shell commands that fail
(cat of a missing file, a refused write) are failed steps and the script goes on.
"""
from __future__ import annotations

# Importing the verb modules registers every verb in VERBS.
from klpemu.scenario import functions_sh  # noqa: F401
from klpemu.scenario import shell_verbs
from klpemu.scenario.functions_sh import selftest_log
from klpemu.scenario.grep import Grep, bre_to_python
from klpemu.scenario.kmod import insmod_error, modinfo, modprobe_error, rights_string, rmmod_error
from klpemu.scenario.registry import PROGRAMS, VERBS, verb
from klpemu.scenario.result import KSFT_FAIL, KSFT_PASS, KSFT_SKIP, ScenarioError, ScenarioResult, Step
from klpemu.scenario.runner import FIXTURE_MODULES, MAX_RETRIES, RETRY_INTERVAL, ScenarioRunner, _Stop
from klpemu.scenario.syntax import Lexer, RawCommand, parse_script

__all__ = [
    "FIXTURE_MODULES", "KSFT_FAIL", "KSFT_PASS", "KSFT_SKIP", "MAX_RETRIES", "PROGRAMS", "RETRY_INTERVAL",
    "VERBS", "Grep", "Lexer", "RawCommand", "ScenarioError", "ScenarioResult", "ScenarioRunner", "Step",
    "_Stop", "bre_to_python", "insmod_error", "modinfo", "modprobe_error", "parse_script", "rights_string",
    "rmmod_error", "selftest_log", "verb",
]
