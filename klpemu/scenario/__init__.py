r"""Scenario scripts: the shell the kernel's livepatch selftests are written
in, run on the emulator.

A scenario is a bash script. The kernel's own
tools/testing/selftests/livepatch/test-*.sh run unmodified beside their
functions.sh (`. $(dirname $0)/functions.sh`), of any kernel since 5.1; a
script that sources no functions.sh gets the helpers built in (load_lp,
disable_lp, check_result … of the newest functions.sh, from klpemu/selftest).

The shell (parser.py, interp.py, expand.py, builtins.py): bash's grammar
and semantics for what those scripts use and more: simple commands,
pipelines, && || !, ; & and newlines, ( ) { }, if/elif/else, while, until,
for (both forms), case, [[ ]], (( )), function definitions (`f()`,
`function f`) with local, return and dynamic scoping, $1…$9 ${10} $@ $* $#
$? $$ $! $0, quoting ('…', "…", $'…', \), parameter expansion (${V:-w}
${V:=w} ${V:+w} ${V:?w} ${#V} ${V#p} ${V##p} ${V%p} ${V%%p} ${V/p/r}
${V:o:l} ${V^^} ${V,,} ${!V}), indexed arrays, $( ) and backquotes, $(( ))
(with assignments, ++/-- and short-circuit && || ?:), <( ), word
splitting on IFS, pathname expansion (over the guest's /sys too),
redirections (< > >> 2>&1 >&2 &> &>> <<< << <<-), eval, . and source,
set -e/-u/-x/-o pipefail, trap … EXIT, exit, break, continue, background
guest programs (`./test_klp-call_getpid &`, $!, wait, kill). A construct it
does not have is a ScenarioError naming it and the line.

Commands (commands/): the kmod tools, dmesg, sysctl, coreutils, grep,
sed, awk, diff, comm … in the real tools' words and exit statuses. File
operations on /sys, /proc and /dev are genuine syscalls of the guest shell
task; other paths are a small namespace (fs.py): the script's directory,
/tmp, /lib/modules/RELEASE/build. Time is virtual (sleep runs the machine).
"""
from __future__ import annotations

from klpemu.scenario.parser import parse
from klpemu.scenario.result import KSFT_FAIL, KSFT_PASS, KSFT_SKIP, ScenarioError, ScenarioResult, Step
from klpemu.scenario.runner import FIXTURE_MODULES, ScenarioRunner

__all__ = ["FIXTURE_MODULES", "KSFT_FAIL", "KSFT_PASS", "KSFT_SKIP", "ScenarioError", "ScenarioResult",
           "ScenarioRunner", "Step", "parse"]
