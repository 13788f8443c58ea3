"""Hostile scenario text: nesting and output beyond what the shell can hold
are errors naming the line (exit 2, or bash's own arithmetic error), never a
Python traceback or a host out of memory."""
from pathlib import Path

import pytest

from klpemu.cli import main
from klpemu.scenario import streams


def run(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    script = tmp_path / "s.sh"
    script.write_text(text)
    code = main(["run", str(script)])
    out, err = capsys.readouterr()
    return code, out, err


def test_deeply_nested_compound_commands(tmp_path: Path, capsys) -> None:
    code, _, err = run(tmp_path, "if true; then " * 3000 + "echo x" + "; fi" * 3000 + "\n", capsys)
    assert code == 2 and "s.sh: line 1: nesting too deep" in err and "Traceback" not in err


def test_deeply_nested_command_substitutions(tmp_path: Path, capsys) -> None:
    code, _, err = run(tmp_path, "echo " + "$(echo " * 500 + "x" + ")" * 500 + "\n", capsys)
    assert code == 2 and "nesting too deep" in err and "Traceback" not in err


def test_deeply_nested_arithmetic_is_bash_s_recursion_error(tmp_path: Path, capsys) -> None:
    code, out, err = run(tmp_path, "echo $((" + "(" * 5000 + "1" + ")" * 5000 + "))\necho after\n", capsys)
    assert code == 1 and "expression recursion level exceeded" in out + err and "Traceback" not in out + err


def test_runaway_recursion_of_functions(tmp_path: Path, capsys) -> None:
    code, _, err = run(tmp_path, "f() { f; }\nf\n", capsys)
    assert code == 2 and "line 2: maximum nesting level exceeded" in err and "Traceback" not in err


def test_output_beyond_the_limit_stops_the_script(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(streams, "MAX_OUTPUT", 1 << 20)
    code, _, err = run(tmp_path, "x=$(seq 1 1000000)\necho never\n", capsys)
    assert code == 2 and "line 1: the output of a command substitution or pipe exceeds 1 MiB" in err
    code, out, err = run(tmp_path, "seq 1 1000000\n", capsys)
    assert code == 2 and "the script's output exceeds 1 MiB" in err


def test_seq_written_in_pieces_is_seq(tmp_path: Path, capsys) -> None:
    code, out, _ = run(tmp_path, "x=$(seq 1 70000); echo ${#x}\nseq -s, 65535 65538\n", capsys)
    assert code == 0 and out.startswith("408893\n65535,65536,65537,65538\n")
