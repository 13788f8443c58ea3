"""Booting the gcc-built kernel on 1, 2 and 4 CPUs."""
import pytest

from emu import EmuError, ImageError, Machine, ShellError


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_boot_brings_up_every_cpu(cpus: int) -> None:
    m = Machine(cpus=cpus, seed=0).boot()
    log = m.dmesg_lines()
    assert log[0] == "Linux version 6.12.0-klpemu (gcc) #1 SMP PREEMPT"
    assert f"smp: Brought up {cpus} CPUs" in log
    for cpu in range(1, cpus):
        assert f"smp: CPU{cpu} is up" in log
    tasks = {(t.pid, t.comm) for t in m.tasks()}
    assert {(0, f"swapper/{c}") for c in range(cpus)} <= tasks
    assert {(2 + c, f"kworker/{c}:0") for c in range(cpus)} <= tasks
    assert (1, "sh") in tasks
    assert all(t.cpu < cpus for t in m.tasks())


def test_dmesg_lines_carry_virtual_timestamps(machine: Machine) -> None:
    text = machine.dmesg()
    assert text.startswith("[    0.000000] Linux version")
    machine.run(1.5)
    machine.write_file("/dev/kmsg", "later")
    last = machine.dmesg().splitlines()[-1]
    assert last.endswith("] later")
    assert 1.5 <= float(last[1:13]) < 1.6


def test_cat_proc_files(machine: Machine) -> None:
    assert machine.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n"
    meminfo = machine.read_file("/proc/meminfo")
    assert meminfo.startswith("MemTotal:          98304 kB\nMemFree:  ")


def test_echo_to_dev_kmsg_logs_the_text(machine: Machine) -> None:
    machine.write_file("/dev/kmsg", "hello there")
    assert machine.dmesg_lines()[-1] == "hello there"


def test_missing_file_is_enoent_and_the_shell_survives(machine: Machine) -> None:
    with pytest.raises(ShellError) as err:
        machine.read_file("/proc/nonexistent")
    assert err.value.errno == 2
    assert "No such file or directory" in str(err.value)
    assert machine.read_file("/proc/cmdline").startswith("console=")


def test_writing_a_read_only_file_is_eacces(machine: Machine) -> None:
    with pytest.raises(ShellError) as err:
        machine.write_file("/proc/cmdline", "x")
    assert err.value.errno == 13


def test_sleep_of_an_idle_machine_skips_ahead(machine: Machine) -> None:
    before = machine.clock_ns
    machine.run(20)
    assert machine.clock_ns - before == 20_000_000_000
    assert machine.read_file("/proc/uptime").startswith("20.")


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(EmuError, match="cpus must be between 1 and 8"):
        Machine(cpus=9)
    with pytest.raises(ImageError, match="no kernel 'nosuch'"):
        Machine(kernel="nosuch")


def test_a_kernel_that_is_not_elf_is_refused(tmp_path) -> None:
    bad = tmp_path / "vmlinux"
    bad.write_bytes(b"not an elf at all")
    with pytest.raises(ImageError, match="is not an ELF file"):
        Machine(kernel=bad)


def test_spawned_shells_land_on_other_cpus(machine: Machine) -> None:
    second = machine.spawn_shell()
    task = second.task()
    assert task is not None and task.comm == "sh"
    assert second.cat("/proc/cmdline") == "console=ttyS0 klpemu\n"


def test_proc_kallsyms_lists_vmlinux_and_module_symbols_in_address_order(machine: Machine) -> None:
    """Read through the guest shell in pieces: it is larger than one mailbox."""
    machine.insmod("fixtures/build/modules/test_klp_mod_target.ko")
    text = machine.read_file("/proc/kallsyms")
    assert len(text) > 16384
    lines = text.splitlines()
    assert f"{machine.symbol_address('cmdline_proc_show'):016x} t cmdline_proc_show" in lines
    assert any(line.endswith(" t test_klp_mod_target_show\t[test_klp_mod_target]") for line in lines)
    addresses = [int(line.split()[0], 16) for line in lines]
    assert addresses == sorted(addresses)
