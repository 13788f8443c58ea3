"""pr_debug() in a module: a struct _ddebug per call site in __dyndbg,
off until the control file or a `dyndbg=` parameter enables it, as with
CONFIG_DYNAMIC_DEBUG (lib/dynamic_debug.c); the flags live in the guest's
descriptor, so the module's own branch sees them."""
from __future__ import annotations

from pathlib import Path

import pytest

from emu import Machine
from klpemu.build.compile import build_module

CONTROL = "/sys/kernel/debug/dynamic_debug/control"
SOURCE = """\
#include <linux/module.h>
#include <linux/kernel.h>
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

static void chatty_tick(struct timer_list *t)
{
	pr_debug("tick\\n");
}
static DEFINE_TIMER(chatty_timer, chatty_tick);

static int __init chatty_init(void)
{
	pr_debug("init %d\\n", 42);
	mod_timer(&chatty_timer, jiffies + 1);
	pr_info("loaded\\n");
	return 0;
}

static void __exit chatty_exit(void)
{
	timer_delete_sync(&chatty_timer);
	pr_debug("exit\\n");
}

module_init(chatty_init);
module_exit(chatty_exit);
MODULE_LICENSE("GPL");
"""


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dyndbg")
    src = out / "chatty.c"
    src.write_text(SOURCE)
    debug = out / "chatty_debug.c"
    debug.write_text("#define DEBUG\n" + SOURCE)
    return {"chatty": build_module([src], out / "chatty.ko"),
            "debug": build_module([debug], out / "chatty_debug.ko")}


def debug_lines(m: Machine) -> list[str]:
    return [r.text for r in m.klog.records() if r.level == 7 and "chatty" in r.text]


def sites(m: Machine) -> list[str]:
    return [line for line in m.read_file(CONTROL).splitlines() if "[chatty" in line]


def test_sites_are_off_until_enabled_and_gone_with_the_module(modules: dict[str, Path]) -> None:
    m = Machine(cpus=1, seed=0).boot()
    m.insmod(modules["chatty"])
    assert debug_lines(m) == [] and "chatty: loaded" in m.dmesg_lines()
    listed = sites(m)
    src = str(modules["chatty"].with_suffix(".c"))
    # sorted here: the file lists them in the section's order, from its end
    assert sorted(listed) == [f'{src}:13 [chatty]chatty_init =_ "init %d\\n"',
                              f'{src}:22 [chatty]chatty_exit =_ "exit\\n"',
                              f'{src}:7 [chatty]chatty_tick =_ "tick\\n"']
    assert m.write_file(CONTROL, "func chatty_exit +pmfl\n") > 0
    assert any(line.endswith('chatty_exit =pmfl "exit\\n"') for line in sites(m))
    m.rmmod("chatty")                              # the guest's branch sees the flag
    assert debug_lines(m) == ["chatty:chatty_exit:22: chatty: exit"]
    assert sites(m) == []


def test_the_dyndbg_parameter_enables_a_modules_sites_at_load(modules: dict[str, Path]) -> None:
    m = Machine(cpus=1, seed=0).boot()
    m.insmod(modules["chatty"], "dyndbg=+pt")
    pid = m.shell.pid
    m.run(0.05)
    assert debug_lines(m) == [f"[{pid}] chatty: init 42", "<intr> chatty: tick"]   # the timer: interrupt context
    assert not any("unknown parameter" in line for line in m.dmesg_lines())
    m.rmmod("chatty")
    assert debug_lines(m)[-1] == f"[{pid}] chatty: exit"


def test_the_command_line_and_DEBUG(modules: dict[str, Path]) -> None:
    m = Machine(cpus=1, seed=0, cmdline="chatty.dyndbg=+p").boot()
    m.insmod(modules["chatty"])
    assert debug_lines(m) == ["chatty: init 42"]
    d = Machine(cpus=1, seed=0).boot()
    d.insmod(modules["debug"])                     # DEBUG: on from the start
    assert debug_lines(d) == ["chatty_debug: init 42"]
    assert all(" =p " in line for line in sites(d))
