"""The klpemu command line."""
import json
from pathlib import Path

from klpemu.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_boot_prints_dmesg_and_the_task_list(capsys) -> None:
    assert main(["boot", "--cpus", "2", "--time", "0.2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[    0.000000] Linux version 6.12.0-klpemu")
    assert "  PID COMM             S CPU  STACK" in out
    assert "kworker/1:0" in out and "worker_thread+0x" in out


def test_boot_json(capsys) -> None:
    assert main(["boot", "--cpus", "1", "--time", "0.1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == 1
    assert data["dmesg"][0].startswith("Linux version")
    assert {t["comm"] for t in data["tasks"]} >= {"swapper/0", "sh", "kworker/0:0"}


def test_run_the_demo_scenario(capsys) -> None:
    assert main(["run", str(ROOT / "scenarios" / "demo.sh")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("console=ttyS0 klpemu\nMemTotal:")
    assert "2.0" in out and "[<0>] __x64_sys_open+0x" in out
    assert "] klpemu demo: hello from user space" in out


def test_a_failing_step_exits_1(tmp_path, capsys) -> None:
    script = tmp_path / "t.sh"
    script.write_text("cat /proc/nonexistent\n")
    assert main(["run", str(script)]) == 1
    assert "cat: /proc/nonexistent: No such file or directory" in capsys.readouterr().out


def test_an_unknown_command_fails_as_in_bash(tmp_path, capsys) -> None:
    script = tmp_path / "t.sh"
    script.write_text("# fine\nfrobnicate now\n")
    assert main(["run", str(script)]) == 1
    assert "./t.sh: line 2: frobnicate: command not found" in capsys.readouterr().out


def test_an_unsupported_construct_is_a_usage_error(tmp_path, capsys) -> None:
    script = tmp_path / "t.sh"
    script.write_text("echo before\nselect x in a b; do echo $x; done\n")
    assert main(["run", str(script)]) == 2
    captured = capsys.readouterr()
    assert "t.sh: ./t.sh: line 2: 'select' loops are not supported" in captured.err
    assert "before" not in captured.out                # nothing ran


def test_a_missing_script_is_a_usage_error(capsys) -> None:
    assert main(["run", "/nonexistent.sh"]) == 2


def test_a_hang_exits_3(tmp_path, capsys) -> None:
    script = tmp_path / "t.sh"
    script.write_text("echo HARDLOCKUP > /sys/kernel/debug/provoke-crash/DIRECT\n")
    assert main(["run", str(script), "--watchdog-thresh", "0.2"]) == 3
    assert "hard LOCKUP" in capsys.readouterr().err


def test_hazards_of_a_file_that_is_no_kernel_image_is_a_usage_error(tmp_path: Path, capsys) -> None:
    truncated = tmp_path / "vmlinux"
    truncated.write_bytes((Path(__file__).resolve().parent.parent / "fixtures/build/vmlinux-modern").read_bytes()[:100])
    user = str(Path(__file__).resolve().parent.parent / "fixtures/build/user.elf")
    for path, why in (("/etc/passwd", "is not an ELF file"), (str(truncated), "past the end of the file"),
                      (user, "is not a kernel image: it has no start_kernel or __schedule")):
        assert main(["hazards", "--kernel", path]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"klpemu: hazards: {path} ") and why in err
        assert err.count(path) == 1, err


def test_a_script_that_is_not_text_is_a_usage_error(tmp_path: Path, capsys) -> None:
    script = tmp_path / "bad.sh"
    script.write_bytes(b"\xff\xfeecho hi\n")
    assert main(["run", str(script)]) == 2
    assert capsys.readouterr().err == f"klpemu: cannot read {script}: not a text file\n"
