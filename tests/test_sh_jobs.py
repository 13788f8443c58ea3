"""Background jobs as test-syscall uses them: the guest's user programs
started with `&` (each a user task the guest shell spawns; $! its pid),
kill (kill(2) from the guest shell, bash's messages), wait (in virtual
time, 128+signal), pkill (by the tasks' names)."""
from pathlib import Path

import pytest

from emu import Machine
from klpemu.scenario import ScenarioError
from klp_helpers import run_script

COMM = "test_klp-call_g"            # the program's name, cut to 15 characters as Linux keeps it


@pytest.fixture
def m() -> Machine:
    return Machine(cpus=1, seed=0).boot()


def hammers(m: Machine) -> list[int]:
    return [t.pid for t in m.tasks() if t.comm == COMM]


def test_programs_in_the_background_with_arrays(m: Machine, tmp_path: Path) -> None:
    result = run_script(m, tmp_path, """\
N=$(getconf _NPROCESSORS_ONLN)
for i in $(seq 1 $(($N < 2 ? 3 : 1))); do
	./test_klp-call_getpid &
	pids[$i]="$!"
done
echo "${#pids[@]} $(nproc) ${pids[2]} ${pids[$((1 + 2))]} $((7 / -2)) $((1 << 4 | 1))"
list=$(echo ${pids[@]} | tr ' ' ',')
echo "$list" $'a\\tb'
for w in "${pids[@]}" x; do
	echo -n "<$w>"
done
echo
""")
    pids = hammers(m)
    assert result.ok and len(pids) == 3
    assert result.stdout == (f"3 1 {pids[1]} {pids[2]} -3 17\n{','.join(map(str, pids))} a\tb\n"
                             + "".join(f"<{p}>" for p in pids) + "<x>\n")


def test_kill_wait_and_or(m: Machine, tmp_path: Path) -> None:
    result = run_script(m, tmp_path, """\
./test_klp-call_getpid & echo started
pid=$!
kill $pid; echo "kill $?"
wait $pid; echo "wait $?"
kill $pid || true
kill -KILL $pid || kill -s 9 $pid || echo gone
kill 1 || true
kill -FOO $pid; echo "bad signal $?"
kill abc; echo "not a pid $?"
wait 4242; echo "not a child $?"
""")
    assert result.ok, result.failures
    assert result.stdout == "started\nkill 0\nwait 143\ngone\nbad signal 1\nnot a pid 1\nnot a child 127\n"
    assert result.stderr == (f"./t.sh: line 5: kill: ({hammers_pid(result)}) - No such process\n"
                             f"./t.sh: line 6: kill: ({hammers_pid(result)}) - No such process\n"
                             f"./t.sh: line 6: kill: ({hammers_pid(result)}) - No such process\n"
                             "./t.sh: line 7: kill: (1) - Operation not permitted (the script's own shell)\n"
                             "./t.sh: line 8: kill: FOO: invalid signal specification\n"
                             "./t.sh: line 9: kill: abc: arguments must be process or job IDs\n"
                             "./t.sh: line 10: wait: pid 4242 is not a child of this shell\n")
    # a failure before || does not count (as set -e has it); one that ends a line does
    assert [(s.line, s.ok) for s in result.steps if s.verb == "kill"] == [
        (3, True), (5, True), (6, True), (6, True), (7, True), (8, False), (9, False)]
    assert not hammers(m)


def hammers_pid(result) -> str:
    return result.stdout and result.stderr.split("(", 1)[1].split(")", 1)[0]


def test_pkill_by_name(m: Machine, tmp_path: Path) -> None:
    result = run_script(m, tmp_path, """\
./test_klp-call_getpid &
./test_klp-call_getpid &
sleep 0.05
pkill -x no-such-task; echo "none $?"
pkill -SIGTERM test_klp-call; echo "both $?"
wait; echo "waited $?"
""")
    assert result.stdout == "none 1\nboth 0\nwaited 0\n"
    assert not hammers(m)


def test_wait_for_a_job_that_never_ends_is_an_error(m: Machine, tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"line 2: wait: job \d+ \(test_klp-call_getpid\) runs until a "
                                            r"signal ends it, and none was sent"):
        run_script(m, tmp_path, "./test_klp-call_getpid &\nwait $!\n")


@pytest.mark.parametrize("script, line, message", [
    ("./test_klp-call_getpid\n", 1, "runs until a signal ends it: start it in the background"),
    ("echo a\ncat /proc/cmdline &\n", 2, "only the guest's programs (test_klp-call_getpid) can run in the background"),
    ("true && ./test_klp-call_getpid &\n", 1, "only the guest's programs can run in the background with '&' "
                                              "(a pipeline, list or compound command cannot)"),
    ("./test_klp-call_getpid now &\n", 1, "test_klp-call_getpid takes no arguments"),
])
def test_what_cannot_run_in_the_background_is_named(m: Machine, tmp_path: Path, script: str, line: int,
                                                    message: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        run_script(m, tmp_path, script)
    assert exc.value.lineno == line and message in str(exc.value)
