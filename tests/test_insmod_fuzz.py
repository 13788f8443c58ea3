"""Seeded-mutation fuzzing of the insmod path: mutated livepatch and
parameter modules (bytes of their relocations, klp structures, parameters
and code) through init_module(2) of a guest shell. Whatever a mutant does,
the host sees only the kernel's answer (an errno, or the loading task killed
by an oops), never a host exception, and the machine stays usable.

KLPEMU_FUZZ_CASES=N runs N cases (default 300, a couple of seconds)."""
import os
import random
from typing import Callable

from elftools.elf.elffile import ELFFile

from emu import EmuError, Machine, MachineCrashed, ShellError
from emu.abi import NR
from emu.machine import MAX_SHELLS, O_NONBLOCK, USER_STAGING
from emu.kernel.shell import Shell
from klp import Livepatch
from klp_helpers import MODULES, SYSFS

CMDLINE = "console=ttyS0 klpemu\n"
BASES = ("test_klp_livepatch", "klpemu_test_patch", "klpemu_hostile_param")
SECTIONS = (".rela.data", ".data", ".rela.text", "__param", ".rela__param", ".klp.rela", ".rodata.str1.1",
            ".gnu.linkonce.this_module", ".rela.gnu.linkonce.this_module")
INTERESTING = (0x00, 0xFF, 0x7F, 0x80, 0x12, 0xDE, 0x01)


def mutable_ranges(data: bytes) -> list[tuple[int, int]]:
    """File ranges of the sections worth mutating (a .klp.rela.* counts as .klp.rela)."""
    import io
    elf = ELFFile(io.BytesIO(data))
    out = []
    for sec in elf.iter_sections():
        name = ".klp.rela" if sec.name.startswith(".klp.rela") else sec.name
        if name in SECTIONS and sec["sh_type"] != "SHT_NOBITS" and sec["sh_size"]:
            out.append((sec["sh_offset"], sec["sh_offset"] + sec["sh_size"]))
    return out


def mutate(rng: random.Random, data: bytes, ranges: list[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        lo, hi = rng.choice(ranges)
        b[rng.randrange(lo, hi)] = rng.choice(INTERESTING) if rng.random() < 0.5 else rng.randrange(256)
    return bytes(b)


class Fuzzer:
    """One machine, reused while it lasts: a fresh shell after an oops, a
    fresh machine when the shells run out (the shell respawn is another job)
    or a mutant's module cannot go away."""

    def __init__(self) -> None:
        self.machines = 0
        self.oopses = 0
        self.loaded = 0
        self.refused = 0
        self.stuck = 0
        self.panics = 0
        self.errnos: dict[int, int] = {}
        self._boot()

    def _boot(self) -> None:
        self.m = Machine(cpus=2, seed=self.machines).boot()
        Livepatch.attach(self.m, "native")
        self.machines += 1
        self.sh: Shell | None = None

    def _shell(self) -> Shell:
        if self.sh is None or self.sh.task is None:
            if len(self.m.shells) >= MAX_SHELLS:
                self._boot()
            self.sh = self.m.spawn_shell()
        return self.sh

    def case(self, data: bytes) -> None:
        sh = self._shell()
        before = set(self.m.modules.modules)
        self.m.mem.write(USER_STAGING, data)
        try:
            rc = self._guarded(lambda: sh.syscall(NR["__NR_init_module"], USER_STAGING, len(data),
                                                  sh.put_string("param=3")))
        except MachineCrashed:
            # a mutated call can reach panic() (or fault in interrupt context):
            # the kernel stops as Linux does, with the panic in the log
            assert "Kernel panic - not syncing: " in "\n".join(self.m.dmesg_lines())
            self.panics += 1
            self._boot()
            return
        if rc is None:
            self.oopses += 1
        elif rc == 0:
            self.loaded += 1
            for name in set(self.m.modules.modules) - before:   # a mutant may rename itself
                self._unload(name)
        else:
            self.refused += 1
            self.errnos[-rc] = self.errnos.get(-rc, 0) + 1
        assert self.m.read_file("/proc/cmdline") == CMDLINE
        if self.m.modules.modules:
            # a module that oopsed in its init stays, as in Linux (and one that
            # cannot be unloaded): a fresh machine for the next case
            self._boot()

    def _guarded(self, op: Callable[[], int]) -> int | None:
        """op's result, or None if it oopsed its shell (dropped: the next op gets a fresh one)."""
        oopses = len(self.m.oopses)
        try:
            return op()
        except ShellError:
            if len(self.m.oopses) == oopses:
                raise
            self.sh = None
            return None

    def _unload(self, name: str) -> None:
        """Disable the patch and rmmod, from the fuzzing shell: a mutant's
        callbacks or exit may oops too (counted with the rest)."""
        m, sh = self.m, self._shell()
        if m.exists(f"{SYSFS}/{name}"):
            if self._guarded(lambda: sh.write(f"{SYSFS}/{name}/enabled", "0")) is None:
                self.oopses += 1
                return
            try:
                m.run_until(lambda: not m.exists(f"{SYSFS}/{name}"), 10, f"{name} to be disabled")
            except EmuError:
                self.stuck += 1          # the patch stays (left for a fresh machine); see the report
                return
        sh = self._shell()
        if self._guarded(lambda: sh.syscall(NR["__NR_delete_module"], sh.put_string(name), O_NONBLOCK)) is None:
            self.oopses += 1


def run(cases: int, seed: int = 0) -> Fuzzer:
    rng = random.Random(seed)
    bases = {name: (MODULES / f"{name}.ko").read_bytes() for name in BASES}
    ranges = {name: mutable_ranges(data) for name, data in bases.items()}
    fuzz = Fuzzer()
    for i in range(cases):
        name = BASES[i % len(BASES)]
        try:
            fuzz.case(mutate(rng, bases[name], ranges[name]))
        except ShellError as exc:
            # the machine refused an operation after the mutant: a fresh one
            raise AssertionError(f"case {i} ({name}): machine unusable: {exc}") from exc
    return fuzz


def test_mutated_modules_never_leak_a_host_exception() -> None:
    cases = int(os.environ.get("KLPEMU_FUZZ_CASES", "300"))
    fuzz = run(cases)
    assert fuzz.oopses + fuzz.loaded + fuzz.refused + fuzz.panics >= cases
    assert fuzz.refused and fuzz.loaded          # the mutants reach both outcomes
