"""The klpemu command as a process: signals, pipes, stdin, the terminal."""
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from klpemu.cli import EXIT_INTERRUPTED, EXIT_PIPE, EXIT_STALLED, EXIT_USAGE, main

ROOT = Path(__file__).resolve().parent.parent
KLPEMU = [sys.executable, "-m", "klpemu.cli"]
# a script that keeps the shell busy for many seconds of wall time
BUSY = "echo started\ni=0\nwhile [ $i -lt 1000000 ]; do i=$((i+1)); done\necho finished\n"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)    # a child of a non-interactive shell inherits SIG_IGN


def test_sigint_ends_with_the_kernel_log_interrupted_and_130(tmp_path) -> None:
    script = tmp_path / "busy.sh"
    script.write_text(BUSY)
    child = subprocess.Popen([*KLPEMU, "run", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, preexec_fn=_default_sigint)
    assert child.stdout is not None
    assert child.stdout.readline() == "started\n"   # the script runs: now interrupt it
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == EXIT_INTERRUPTED
    assert "finished" not in out
    assert "--- kernel log ---\n[    0.000000] Linux version 6.12.0-klpemu" in out
    assert err.rstrip("\n").endswith("klpemu: interrupted")
    assert "Traceback" not in err


def test_a_closed_pipe_ends_quietly() -> None:
    child = subprocess.Popen([*KLPEMU, "hazards", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()                            # `| head` that has already gone
    err = child.stderr.read()
    assert child.wait(timeout=60) == EXIT_PIPE
    assert err == b""


def test_run_reads_the_script_from_stdin() -> None:
    done = subprocess.run([*KLPEMU, "run", "-"], input='echo "$0 says hello"\n', capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.startswith("bash says hello\n")


def test_progress_on_a_terminal_stderr(tmp_path) -> None:
    script = tmp_path / "busy.sh"
    script.write_text(BUSY.replace("1000000", "60000"))
    leader, follower = pty.openpty()
    child = subprocess.Popen([*KLPEMU, "run", str(script)], stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:                             # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert child.wait(timeout=120) == 0
    text = seen.decode()
    assert "klpemu: virtual " in text and " wall " in text
    assert "line 3: while [ $i -lt 60000 ]" in text
    assert text.endswith("\r\x1b[K")               # the line is cleared at the end


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path) -> None:
    script = tmp_path / "busy.sh"
    script.write_text(BUSY.replace("1000000", "60000"))
    done = subprocess.run([*KLPEMU, "run", str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == ""


def test_every_syntax_error_with_its_line_before_boot(tmp_path, capsys) -> None:
    script = tmp_path / "t.sh"
    script.write_text("echo hi\nif true; then\n  echo x\n)\necho ok\necho (\nf() {\n  echo fine\n}\n"
                      "select x in a; do echo; done\n")
    assert main(["run", str(script)]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"klpemu: {script}: ./t.sh: line 4: syntax error near unexpected token `)'",
        f"klpemu: {script}: ./t.sh: line 6: syntax error near unexpected token `newline'",
        f"klpemu: {script}: ./t.sh: line 10: 'select' loops are not supported",
    ]
    assert captured.out == ""                       # no boot, no kernel log


def test_fail_on_stalled(tmp_path, capsys) -> None:
    # a task asleep in the patched function keeps the transition running
    script = tmp_path / "t.sh"
    script.write_text("insmod klpemu_test_target.ko sleeper=1\nsleep 1\n"
                      "insmod klpemu_test_patch.ko\nsleep 1\n")
    assert main(["run", str(script)]) == 0
    assert main(["run", str(script), "--fail-on-stalled"]) == EXIT_STALLED
    assert "transition of klpemu_test_patch to patched is still running at the end" in capsys.readouterr().err


def test_version_and_bare_help(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == "klpemu 0.1.0\n"
    assert main([]) == EXIT_USAGE
    out = capsys.readouterr().out
    assert out.startswith("usage: klpemu [-h] [--version] COMMAND ...")
    assert "run" in out and "hazards" in out


def test_a_subcommand_error_shows_that_subcommand_usage(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["run", "x.sh", "--cpus", "two"])
    assert stop.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: klpemu run [-h]")
    assert "klpemu run: error: argument --cpus: invalid int value: 'two'" in err


def test_shell_completion_with_argcomplete(tmp_path) -> None:
    pytest.importorskip("argcomplete")
    out = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": "klpemu run --fail", "COMP_POINT": "17",
           "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}
    done = subprocess.run([*KLPEMU], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0
    assert out.read_text().split() == ["--fail-on-stalled"]


def test_the_readme_recipe_a_task_asleep_in_the_patched_function(tmp_path, capsys) -> None:
    readme = (ROOT / "README.md").read_text()
    recipe = readme.split("### Recipe: a task asleep in the function you patch", 1)[1]
    body = recipe.split("```sh\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "recipe.sh"
    script.write_text(body)
    assert main(["run", str(script)]) == 0
    assert capsys.readouterr().out.startswith("1\n0\n")     # stalled, then done once released
