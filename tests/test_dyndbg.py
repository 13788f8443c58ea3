"""Dynamic debug (lib/dynamic_debug.c): the livepatch core's pr_debug() lines
print only once the control file enables them, as on a real kernel, where
functions.sh's set_dynamic_debug does it (kernel/livepatch/transition.c:
"initializing", "completing", "canceling", "reversing" and
klp_try_switch_task's lines are pr_debug; "starting … transition" and
"… complete" are pr_notice and always print)."""
from __future__ import annotations

import pytest

from emu import Machine, ShellError
from klp import Livepatch
from klp_helpers import DYNDBG_CONTROL, MODULES, disable_lp, klp_lines, load_lp, set_dynamic_debug

LP = "test_klp_livepatch"
PROC_CONTROL = "/proc/dynamic_debug/control"


def boot(cmdline: str | None = None) -> Machine:
    m = Machine(cpus=1, seed=0, **({"cmdline": cmdline} if cmdline else {})).boot()
    Livepatch.attach(m)
    return m


def control_lines(m: Machine) -> list[str]:
    return m.read_file(DYNDBG_CONTROL).splitlines()


def test_a_plain_insmod_prints_only_what_a_real_kernel_prints() -> None:
    m = boot()
    load_lp(m, LP)
    disable_lp(m, LP)
    assert klp_lines(m) == [
        f"livepatch: enabling patch '{LP}'",
        f"livepatch: '{LP}': starting patching transition",
        f"livepatch: '{LP}': patching complete",
        f"livepatch: '{LP}': starting unpatching transition",
        f"livepatch: '{LP}': unpatching complete",
    ]


def test_the_control_file_lists_the_sites_as_the_kernel_does() -> None:
    m = boot()
    lines = control_lines(m)
    assert lines[0] == "# filename:lineno [module]function flags format"
    assert "kernel/livepatch/transition.c:591 [livepatch]klp_init_transition =_ " \
           "\"'%s': initializing %s transition\\n\"" in lines
    # ddebug_iter walks a table from its end: the last site of the file first
    assert lines[1].startswith("kernel/livepatch/transition.c:653 [livepatch]klp_reverse_transition")
    assert m.read_file(PROC_CONTROL) == m.read_file(DYNDBG_CONTROL)
    assert oct(m.file_mode(DYNDBG_CONTROL)) == "0o644"


def test_set_dynamic_debug_turns_the_transition_lines_on_and_switch_task_off() -> None:
    m = boot()
    set_dynamic_debug(m)
    flags = {line.split(" ")[1].split("]")[1]: line.split(" ")[2] for line in control_lines(m)[1:]}
    assert flags["klp_init_transition"] == flags["klp_complete_transition"] == "=p"
    assert flags["klp_try_switch_task"] == "=_"
    load_lp(m, LP)
    assert f"livepatch: '{LP}': initializing patching transition" in klp_lines(m)
    assert f"livepatch: '{LP}': completing patching transition" in klp_lines(m)


def test_push_and_pop_config_restore_the_flags_line_by_line() -> None:
    """functions.sh saves `file F line N FLAGS` per site (awk over the control
    file) and writes them back at exit."""
    m = boot()
    saved = [f"file {line.split(':')[0]} line {line.split(':')[1].split(' ')[0]} {line.split(' ')[2]}"
             for line in control_lines(m)[1:] if line.startswith("kernel/livepatch")]
    before = m.read_file(DYNDBG_CONTROL)
    set_dynamic_debug(m)
    assert m.read_file(DYNDBG_CONTROL) != before
    m.write_file(DYNDBG_CONTROL, "\n".join(saved))
    assert m.read_file(DYNDBG_CONTROL) == before


@pytest.mark.parametrize("query, errors", [
    ("bogus +p", ["dyndbg: expecting pairs of match-spec <value>", "dyndbg: query parse failed"]),
    ("func klp_init_transition", ["dyndbg: bad flag-op k, at start of klp_init_transition",
                                  "dyndbg: flags parse failed"]),
    ("func f +x", ["dyndbg: unknown flag 'x'", "dyndbg: flags parse failed"]),
    ("color red +p", ['dyndbg: unknown keyword "color"', "dyndbg: query parse failed"]),
    ("line 9-3 +p", ["dyndbg: last-line:3 < 1st-line:9", "dyndbg: query parse failed"]),
    ("format 'x +p", ["dyndbg: unclosed quote: x +p", "dyndbg: tokenize failed"]),
])
def test_a_bad_query_is_einval_with_the_kernels_messages(query: str, errors: list[str]) -> None:
    m = boot()
    with pytest.raises(ShellError) as exc:
        m.write_file(DYNDBG_CONTROL, query)
    assert exc.value.errno == 22
    assert m.dmesg_lines()[-len(errors):] == errors
    assert "=p" not in m.read_file(DYNDBG_CONTROL)          # and nothing changed


def test_match_specs_combine_and_flags_decorate_the_message() -> None:
    m = boot()
    m.write_file(DYNDBG_CONTROL, 'module livepatch func klp_init_* format "initializing" line 500-600 =pmfl')
    enabled = [line for line in control_lines(m) if " =p" in line]
    assert enabled == ["kernel/livepatch/transition.c:591 [livepatch]klp_init_transition =pmfl "
                       "\"'%s': initializing %s transition\\n\""]
    load_lp(m, LP)
    assert f"livepatch:klp_init_transition:591: livepatch: '{LP}': initializing patching transition" \
        in m.dmesg_lines()
    m.write_file(DYNDBG_CONTROL, "file transition.c -mfl; func klp_init_transition +t")
    disable_lp(m, LP)
    pid = m.shell.pid
    assert f"[{pid}] livepatch: '{LP}': initializing unpatching transition" in m.dmesg_lines()


def test_dyndbg_on_the_command_line_applies_at_boot() -> None:
    m = boot('console=ttyS0 klpemu dyndbg="func klp_complete_transition +p" livepatch.dyndbg=format:x')
    flags = [line.split(" ")[2] for line in control_lines(m)[1:]]
    assert flags.count("=p") == 1
    load_lp(m, LP)
    assert f"livepatch: '{LP}': completing patching transition" in klp_lines(m)
    assert f"livepatch: '{LP}': initializing patching transition" not in klp_lines(m)


def test_try_switch_task_says_why_a_task_blocks_when_enabled() -> None:
    m = boot()
    m.write_file(DYNDBG_CONTROL, "func klp_try_switch_task +p")
    m.insmod(MODULES / "klpemu_test_target.ko", "sleeper=1")
    m.insmod(MODULES / "klpemu_test_patch.ko")
    m.run(1.2)
    assert any(line.startswith("livepatch: klp_try_switch_task: klpemu_sleeper:") and
               line.endswith("is sleeping on function klpemu_test_sleep") for line in m.dmesg_lines())


def test_an_oversized_write_is_e2big() -> None:
    m = boot()
    with pytest.raises(ShellError) as exc:
        m.write_file(DYNDBG_CONTROL, "func x +p;" * 409 + "#" * 5)    # 4096 bytes with the newline
    assert exc.value.errno == 7
    assert m.dmesg_lines()[-1] == "dyndbg: expected <4096 bytes into control"


def test_a_query_splits_at_the_kernels_spaces() -> None:
    """ddebug_exec_queries skip_spaces() and ddebug_tokenize cut words at
    isspace(), which takes the byte 0xa0 (lib/ctype.c) and not 0x1c: a
    no-break space between words is a blank, a 0x1c is part of a word."""
    m = boot()
    query = b"\xa0func\xa0klp_init_transition\xa0+p\n"
    assert m.shell.write_once(DYNDBG_CONTROL, query) == len(query)
    assert any(line.startswith("kernel/livepatch/transition.c:") and "klp_init_transition =p " in line
               for line in control_lines(m))
    with pytest.raises(ShellError):
        m.shell.write_once(DYNDBG_CONTROL, b"func\x1cklp_init_transition -p\n")
