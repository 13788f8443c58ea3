"""The kernel livepatch selftests' functions.sh, typed: one implementation
for the scenario language's built-in helpers, the pytest plugin's `klp`
fixture and the test suite.

Each method does what the shell function of the newest functions.sh does,
step for step: the same lines to the kernel log (`% insmod
test_modules/X.ko`, `===== TEST: … =====`, `ERROR: …`), the same output
(`TEST: … ... `, `ok`, the diff), the same waits (loop_until: MAX_RETRIES+1
tries RETRY_INTERVAL apart, in virtual time). Where the shell function
would `die` or `skip`, the method logs and prints the same, then raises
Die or Skip (exit statuses 1 and 4). LoadStyle.MODPROBE gives the log of
the functions.sh before 6.9 (`% modprobe X`, modprobe's errors).

Two kernels the upstream helpers never ran on are served too: without the
consistency model (4.11) there is no `transition` to wait for, and before
5.1 a disabled patch stays registered, so disable_lp waits for its
transition to end rather than for it to go.
"""
from __future__ import annotations

import enum
import errno as E
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from emu import EmuError, ShellError
from emu.abi import FIXTURES
from klpemu.selftest import coreutils, kmod
from klpemu.selftest.procps import Syslog, sysctl_write_error

if TYPE_CHECKING:
    from emu import Machine

FIXTURE_MODULES = FIXTURES / "build" / "modules"
MAX_RETRIES = 600
RETRY_INTERVAL = 0.1
SYSFS_KERNEL_DIR = "/sys/kernel"
SYSFS_KLP_DIR = f"{SYSFS_KERNEL_DIR}/livepatch"
SYSFS_DEBUG_DIR = f"{SYSFS_KERNEL_DIR}/debug"
SYSFS_KPROBES_DIR = f"{SYSFS_DEBUG_DIR}/kprobes"
SYSFS_TRACING_DIR = f"{SYSFS_DEBUG_DIR}/tracing"
DYNAMIC_DEBUG_CONTROL = f"{SYSFS_DEBUG_DIR}/dynamic_debug/control"
FTRACE_SYSCTL = "/proc/sys/kernel/ftrace_enabled"
KSFT_SKIP = 4
# The variables functions.sh defines, as a script that sources it sees them.
VARIABLES = {
    "MAX_RETRIES": str(MAX_RETRIES), "RETRY_INTERVAL": ".1", "ksft_skip": str(KSFT_SKIP),
    "SYSFS_KERNEL_DIR": SYSFS_KERNEL_DIR, "SYSFS_KLP_DIR": SYSFS_KLP_DIR, "SYSFS_DEBUG_DIR": SYSFS_DEBUG_DIR,
    "SYSFS_KPROBES_DIR": SYSFS_KPROBES_DIR, "SYSFS_TRACING_DIR": SYSFS_TRACING_DIR,
}
DYNAMIC_DEBUG_ON = "file kernel/livepatch/* +p\nfunc klp_try_switch_task -p\n"
_TIMESTAMP = re.compile(r"^\[[ 0-9.]*\] ")
_CALLER = re.compile(r"^\[[ ]*[CT][0-9]*\] ")
_TAINT = re.compile(r"(tainting|taints) kernel")
_DD_FIELDS = re.compile(r"[: ]")


class SelftestExit(Exception):
    """functions.sh's die or skip: the script would exit with `status`."""
    status = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Die(SelftestExit):
    status = 1


class Skip(SelftestExit):
    status = KSFT_SKIP


class LoadStyle(enum.Enum):
    """How functions.sh loads modules: insmod test_modules/X.ko (6.9 on) or modprobe X."""
    INSMOD = "insmod"
    MODPROBE = "modprobe"


class ModuleFinder(Protocol):
    def __call__(self, name: str) -> Path | None: ...


def module_dirs_finder(dirs: list[Path]) -> ModuleFinder:
    """NAME.ko in the first of DIRS that has it (`-` and `_` alike)."""
    def find(name: str) -> Path | None:
        for stem in dict.fromkeys((name, name.replace("-", "_"), name.replace("_", "-"))):
            for d in dirs:
                path = Path(d) / f"{stem}.ko"
                if path.is_file():
                    return path
        return None
    return find


def filter_check_result(lines: list[str], last_dmesg: str) -> str:
    """check_result's view of dmesg: the lines after LAST_DMESG that mention
    `livepatch:` or `test_klp`, without taint notes, timestamps and caller ids."""
    try:
        start = lines.index(last_dmesg) + 1
    except ValueError:
        return ""
    kept = [_CALLER.sub("", _TIMESTAMP.sub("", line, count=1), count=1)
            for line in lines[start:] if check_result_keeps(line)]
    return "\n".join(kept).rstrip("\n")


def check_result_keeps(line: str) -> bool:
    """Whether check_result compares this kernel log line."""
    return ("livepatch:" in line or "test_klp" in line) and not _TAINT.search(line)


class Selftest:
    """functions.sh on a booted machine (the livepatch core attached)."""

    def __init__(self, machine: "Machine", find_module: ModuleFinder, *, style: LoadStyle = LoadStyle.INSMOD,
                 syslog: Syslog | None = None, stdout: Callable[[str], None] | None = None,
                 stderr: Callable[[str], None] | None = None, release: str = "") -> None:
        self.machine = machine
        self.find_module = find_module
        self.style = style
        self.syslog = syslog or Syslog(machine)
        self.stdout = stdout or (lambda text: None)
        self.stderr = stderr or (lambda text: None)
        self.release = release
        self.max_retries = MAX_RETRIES
        self.retry_interval = RETRY_INTERVAL
        self.last_dmesg = ""                  # LAST_DMESG: the canary's dmesg line
        self.saved: dict[str, str] | None = None   # push_config's values

    @property
    def profile(self):
        core = self.machine.extensions.get("klp")
        return getattr(core, "profile", None)

    # ------------------------------------------------------------ the guest, as the shell sees it
    def _cat(self, path: str) -> str | None:
        """`$(cat PATH)`: the text without its trailing newlines; None (and
        cat's message on stderr) when it cannot be read."""
        try:
            return self.machine.read_file(path).rstrip("\n")
        except ShellError as exc:
            self.stderr(f"cat: {path}: {os.strerror(exc.errno)}\n")
            return None

    def _reads(self, path: str, value: str) -> bool:
        try:
            return self.machine.read_file(path).rstrip("\n") == value
        except ShellError:
            return False

    def _echo(self, path: str, text: str, *, newline: bool = True) -> bool:
        """`echo TEXT > PATH` (bash's message on stderr when refused)."""
        if not self.machine.exists(path):
            self.stderr(f"{path}: No such file or directory\n")
            return False
        try:
            self.machine.shell.write(path, text + ("\n" if newline else ""))
        except ShellError as exc:
            self.stderr(f"echo: write error: {os.strerror(exc.errno)}\n")
            return False
        return True

    # ------------------------------------------------------------ messages
    def log(self, message: str) -> None:
        """log(msg): `echo "$1" > /dev/kmsg`."""
        self._echo("/dev/kmsg", message)

    def skip(self, message: str) -> None:
        self.log(f"SKIP: {message}")
        self.stderr(f"SKIP: {message}\n")
        raise Skip(message)

    def die(self, message: str) -> None:
        self.log(f"ERROR: {message}")
        self.stderr(f"ERROR: {message}\n")
        raise Die(message)

    def loop_until(self, predicate: Callable[[], bool]) -> bool:
        """True once PREDICATE holds: up to MAX_RETRIES+1 tries, RETRY_INTERVAL apart."""
        for i in range(self.max_retries + 1):
            if predicate():
                return True
            if i == self.max_retries:
                return False
            self.machine.run(self.retry_interval)
        return False

    # ------------------------------------------------------------ configuration
    def push_config(self) -> None:
        """Save the dynamic debug flags of kernel/livepatch, kernel.ftrace_enabled,
        the kprobes switch and the function tracer's settings."""
        saved: dict[str, str] = {}
        if self.machine.exists(DYNAMIC_DEBUG_CONTROL):
            control = self.machine.read_file(DYNAMIC_DEBUG_CONTROL)
            lines = []
            for line in control.splitlines():
                if line.startswith("kernel/livepatch"):
                    fields = _DD_FIELDS.split(line)
                    lines.append(f"file {fields[0]} line {_field(fields, 1)} {_field(fields, 3)}")
            saved["DYNAMIC_DEBUG"] = "\n".join(lines)
        else:
            saved["DYNAMIC_DEBUG"] = ""           # a kernel without dynamic debug
        try:
            saved["FTRACE_ENABLED"] = self.machine.read_file(FTRACE_SYSCTL).rstrip("\n")
        except ShellError as exc:
            self.stderr(f"sysctl: cannot stat {FTRACE_SYSCTL}: {os.strerror(exc.errno)}\n")
            saved["FTRACE_ENABLED"] = ""
        for key, path in (("KPROBE_ENABLED", f"{SYSFS_KPROBES_DIR}/enabled"),
                          ("TRACING_ON", f"{SYSFS_TRACING_DIR}/tracing_on"),
                          ("CURRENT_TRACER", f"{SYSFS_TRACING_DIR}/current_tracer"),
                          ("FTRACE_FILTER", f"{SYSFS_TRACING_DIR}/set_ftrace_filter")):
            saved[key] = self._cat(path) or ""
        self.saved = saved

    def pop_config(self) -> None:
        """Restore what push_config saved."""
        saved = self.saved or {}
        if saved.get("DYNAMIC_DEBUG"):
            self._echo(DYNAMIC_DEBUG_CONTROL, saved["DYNAMIC_DEBUG"], newline=False)
        if saved.get("FTRACE_ENABLED"):
            try:
                self.machine.shell.write(FTRACE_SYSCTL, saved["FTRACE_ENABLED"] + "\n")
            except ShellError:
                pass                       # sysctl … &> /dev/null
        if saved.get("KPROBE_ENABLED"):
            self._echo(f"{SYSFS_KPROBES_DIR}/enabled", saved["KPROBE_ENABLED"])
        if saved.get("TRACING_ON"):
            self._echo(f"{SYSFS_TRACING_DIR}/tracing_on", saved["TRACING_ON"])
        if saved.get("CURRENT_TRACER"):
            self._echo(f"{SYSFS_TRACING_DIR}/current_tracer", saved["CURRENT_TRACER"])
        if saved.get("FTRACE_FILTER"):
            kept = [ln for ln in (saved["FTRACE_FILTER"] + "\n").splitlines()
                    if "#### all functions enabled ####" not in ln]
            if kept:
                self._echo(f"{SYSFS_TRACING_DIR}/set_ftrace_filter", "\n".join(kept))

    def set_dynamic_debug(self) -> None:
        """Turn on the livepatch core's pr_debug lines (when the kernel has dynamic debug)."""
        if self.machine.exists(DYNAMIC_DEBUG_CONTROL):
            self._echo(DYNAMIC_DEBUG_CONTROL, DYNAMIC_DEBUG_ON, newline=False)

    def set_ftrace_enabled(self, value: str | int, *, can_fail: bool = False) -> None:
        """`sysctl kernel.ftrace_enabled=VALUE`, logged; a refusal skips the
        test, or (can_fail) is logged in sysctl's words."""
        value = str(value)
        err = ""
        try:
            self.machine.shell.write(FTRACE_SYSCTL, value + "\n")
        except ShellError as exc:
            err = sysctl_write_error("kernel.ftrace_enabled", exc.errno)
        try:
            result = self.machine.read_file(FTRACE_SYSCTL).rstrip("\n")
        except ShellError as exc:
            self.stderr(f"sysctl: cannot stat {FTRACE_SYSCTL}: {os.strerror(exc.errno)}\n")
            result = ""
        if result != value:
            if can_fail:
                self.log(f"livepatch: {err}".replace("/proc/sys/kernel/", "kernel."))
                return
            self.skip(f"failed to set kernel.ftrace_enabled = {value}")
        self.log(f"livepatch: kernel.ftrace_enabled = {result}")

    def setup_config(self) -> None:
        """Save the configuration (cleanup() restores it), turn on the
        livepatch debug messages and kernel.ftrace_enabled."""
        self.push_config()
        self.set_dynamic_debug()
        self.set_ftrace_enabled(1)

    def cleanup(self) -> None:
        self.pop_config()

    # ------------------------------------------------------------ modules
    def _shown(self, name: str) -> str:
        return f"test_modules/{name}.ko" if self.style is LoadStyle.INSMOD else name

    def _load_line(self, name: str, params: tuple[str, ...]) -> str:
        command = "% insmod" if self.style is LoadStyle.INSMOD else "% modprobe"
        msg = f"{command} {self._shown(name)} {' '.join(params)}"
        return msg[:-1] if msg.endswith(" ") else msg        # ${msg%% }

    def _insert(self, name: str, params: tuple[str, ...]) -> str:
        """insmod/modprobe of NAME: its error output ('' when it loaded)."""
        path = self.find_module(name)
        if path is None:
            if self.style is LoadStyle.INSMOD:
                return kmod.insmod_load_error(self._shown(name), 2)
            return kmod.modprobe_not_found(name, self.release)
        if self.style is LoadStyle.MODPROBE and self.machine.exists(f"/sys/module/{name.replace('-', '_')}"):
            return ""                     # modprobe: already loaded
        try:
            self.machine.insmod(path, " ".join(params))
        except ShellError as exc:
            if self.style is LoadStyle.INSMOD:
                return kmod.insmod_error(self._shown(name), exc.errno)
            return kmod.modprobe_error(name, exc.errno)
        return ""

    def assert_mod(self, name: str) -> bool:
        """The 5.x functions.sh's `modprobe --dry-run`: is the module there?"""
        return self.find_module(name) is not None

    def is_livepatch_mod(self, name: str) -> bool:
        path = self.find_module(name)
        if path is None:
            if self.style is LoadStyle.INSMOD:
                self.die(f'Can\'t find "test_modules/{name}.ko", try "make"')
            return False
        return kmod.is_livepatch(kmod.modinfo_tags(path.read_bytes()) or [])

    def _check_present(self, name: str) -> None:
        if self.style is LoadStyle.MODPROBE and not self.assert_mod(name):
            self.skip(f"unable to load module {name}, verify CONFIG_TEST_LIVEPATCH=m and run self-tests as root")

    def _load(self, name: str, params: tuple[str, ...]) -> None:
        """functions.sh's __load_mod."""
        self.log(self._load_line(name, params))
        error = self._insert(name, params)
        if error:
            self.die(error)
        if not self.loop_until(lambda: self.machine.exists(f"/sys/module/{name}")):
            self.die(f"failed to load module {name}")

    def load_mod(self, name: str, *params: str) -> None:
        """Load a module that is not a livepatch."""
        self._check_present(name)
        if self.is_livepatch_mod(name):
            self.die(f"use load_lp() to load the livepatch module {name}")
        self._load(name, params)

    def load_lp_nowait(self, name: str, *params: str) -> None:
        """Load a livepatch; wait until it is in sysfs, not for its transition."""
        self._check_present(name)
        if not self.is_livepatch_mod(name):
            self.die(f"module {name} is not a livepatch")
        self._load(name, params)
        if not self.loop_until(lambda: self.machine.exists(f"{SYSFS_KLP_DIR}/{name}")):
            self.die(f"failed to load module {name} (sysfs)")

    def load_lp(self, name: str, *params: str) -> None:
        """Load a livepatch and wait until its transition is over."""
        self.load_lp_nowait(name, *params)
        profile = self.profile
        if profile is not None and not profile.consistency_model:
            return                        # 4.11: patched at once, no `transition`
        path = f"{SYSFS_KLP_DIR}/{name}/transition"
        # functions.sh's `grep -q '^0$'` reads as `grep -q ^0` (bash's $'…'): a line starting with 0
        if not self.loop_until(lambda: _starts_with_line(self.machine, path, "0")):
            self.die("failed to complete transition")

    def load_failing_mod(self, name: str, *params: str) -> None:
        """Load a module that must fail to load, and log the loader's error."""
        self.log(self._load_line(name, params))
        error = self._insert(name, params)
        if not error:
            self.die(f"{name} unexpectedly loaded")
        self.log(error)

    def unload_mod(self, name: str) -> None:
        if not self.loop_until(lambda: self._reads(f"/sys/module/{name}/refcnt", "0")):
            self.die(f"failed to unload module {name} (refcnt)")
        self.log(f"% rmmod {name}")
        error = remove_module(self.machine, name)
        if error:
            self.die(error)
        if not self.loop_until(lambda: not self.machine.exists(f"/sys/module/{name}")):
            self.die(f"failed to unload module {name} (/sys/module)")

    def unload_lp(self, name: str) -> None:
        self.unload_mod(name)

    def disable_lp(self, name: str) -> None:
        """Disable a livepatch and wait until it is gone from sysfs."""
        path = f"{SYSFS_KLP_DIR}/{name}/enabled"
        self.log(f"% echo 0 > {path}")
        self._echo(path, "0")
        profile = self.profile
        if profile is not None and profile.register_api:
            # before 5.1 a disabled patch stays registered: wait for its transition
            if profile.consistency_model:
                done = lambda: self._reads(f"{SYSFS_KLP_DIR}/{name}/transition", "0")  # noqa: E731
            else:
                done = lambda: self._reads(path, "0")                                  # noqa: E731
        else:
            done = lambda: not self.machine.exists(f"{SYSFS_KLP_DIR}/{name}")          # noqa: E731
        if not self.loop_until(done):
            self.die(f"failed to disable livepatch {name}")

    def set_pre_patch_ret(self, name: str, value: str | int) -> None:
        value = str(value)
        path = f"/sys/module/{name}/parameters/pre_patch_ret"
        self.log(f"% echo {value} > {path}")
        self._echo(path, value)
        if not self.loop_until(lambda: self._reads(path, value)):
            self.die(f"failed to set pre_patch_ret parameter for {name} module")

    # ------------------------------------------------------------ tests
    def start_test(self, name: str) -> None:
        """Log a unique canary (check_result looks after it) and print `TEST: NAME ... `."""
        canary = f"livepatch kselftest timestamp: {coreutils.rfc3339_ns(self.machine.clock_ns)}"
        self.log(canary)
        if not self.loop_until(lambda: any(canary in line for line in self.syslog.lines())):
            self.die(f"buffer busy? can't find canary dmesg message: {canary}")
        self.last_dmesg = "\n".join(line for line in self.syslog.lines() if canary in line)
        self.stdout(f"TEST: {name} ... ")
        self.log(f"===== TEST: {name} =====")

    def result(self) -> str:
        """What check_result compares: the livepatch lines since start_test."""
        return filter_check_result(self.syslog.lines(), self.last_dmesg)

    def check_result(self, expected: str) -> None:
        result = self.result()
        if expected == result:
            self.stdout("ok\n")
            return
        if result == "":
            self.stdout(f"not ok\n\nbuffer overrun? can't find canary dmesg entry: {self.last_dmesg}\n\n")
            self.die("livepatch kselftest(s) failed")
        diff = coreutils.unified_diff(expected.split("\n"), result.split("\n"), "expected", "result")
        self.stdout(f"not ok\n\n{diff.rstrip(chr(10))}\n\n")
        self.die("livepatch kselftest(s) failed")

    def check_sysfs_rights(self, name: str, rel_path: str, expected: str) -> None:
        path = f"{SYSFS_KLP_DIR}/{name}/{rel_path}"
        rights = stat_rights(self.machine, path)
        if rights is None:
            self.stderr(f"stat: cannot statx '{path}': No such file or directory\n")
            rights = ""
        if rights != expected:
            self.die(f"Unexpected access rights of {path}: {expected} vs. {rights}")

    def check_sysfs_value(self, name: str, rel_path: str, expected: str) -> None:
        path = f"{SYSFS_KLP_DIR}/{name}/{rel_path}"
        value = self._cat(path) or ""
        if value != expected:
            self.die(f"Unexpected value in {path}: {expected} vs. {value}")

    # ------------------------------------------------------------ function tracing
    def cleanup_tracing(self) -> None:
        for name, value in (("tracing_on", "0"), ("set_ftrace_filter", ""), ("current_tracer", "nop"),
                            ("trace", "")):
            self._echo(f"{SYSFS_TRACING_DIR}/{name}", value)

    def trace_function(self, function: str) -> None:
        self.cleanup_tracing()
        for name, value in (("current_tracer", "function"), ("set_ftrace_filter", function), ("tracing_on", "1")):
            self._echo(f"{SYSFS_TRACING_DIR}/{name}", value)

    def check_traced_functions(self, *functions: str) -> None:
        """Each function must be in the trace (grep -Fw); then the tracer is cleaned up."""
        for function in functions:
            try:
                trace = self.machine.read_file(f"{SYSFS_TRACING_DIR}/trace")
            except ShellError as exc:
                self.stderr(f"grep: {SYSFS_TRACING_DIR}/trace: {os.strerror(exc.errno)}\n")
                trace = ""
            if not re.search(rf"(?<!\w){re.escape(function)}(?!\w)", trace):
                self.die(f"Function ({function}) did not appear in the trace")
        self.cleanup_tracing()


def _field(fields: list[str], k: int) -> str:
    return fields[k] if k < len(fields) else ""


def _starts_with_line(machine: "Machine", path: str, prefix: str) -> bool:
    try:
        return any(line.startswith(prefix) for line in machine.read_file(path).splitlines())
    except ShellError:
        return False


def stat_rights(machine: "Machine", path: str) -> str | None:
    """`stat --format %A PATH` of a guest path, None when it does not exist."""
    target = path.rstrip("/") or "/"
    try:
        return coreutils.rights_string(machine.file_mode(target), machine.is_dir(target))
    except EmuError:
        return None


def remove_module(machine: "Machine", name: str) -> str:
    """kmod's rmmod NAME: its error message, '' when the module is gone
    (ShellError when the task running it died of a signal)."""
    if not machine.exists(f"/sys/module/{name}"):
        return kmod.rmmod_error(name, E.ENOENT)
    try:
        refcnt = int(machine.read_file(f"/sys/module/{name}/refcnt").strip() or "0")
    except (ShellError, ValueError):
        refcnt = 0
    if refcnt > 0:
        return kmod.rmmod_error(name, E.EBUSY)
    try:
        machine.rmmod(name)
    except ShellError as exc:
        if exc.signal is not None:       # the task running it died: the caller's to report
            raise
        return kmod.rmmod_remove_error(name, exc.errno)
    return ""
