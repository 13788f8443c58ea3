"""tracefs `available_filter_functions` and `enabled_functions` (kernel/trace/ftrace.c, t_show).

`available_filter_functions`: one ftrace-able function (one with an fentry
site) a line, `%ps` style: `name`, or `name [module]` for a module's.
notrace functions have no site and are not listed.

`enabled_functions`: each site some ops is enabled on, as the kernel prints it:

    name (refcount) R I D O M <TAB>tramp: TRAMPOLINE (FUNC)

each flag two characters (` R` or two spaces; M takes three): R the call saves
regs, I an IPMODIFY ops owns it, D a direct call, O call-ops, M it was ever
modified by an IPMODIFY ops (sticky, as FTRACE_FL_MODIFIED). The `tramp:` part
only when one ops uses the site (the kernel's FTRACE_FL_TRAMP_EN).

Deviations, by construction of our ftrace: R is set exactly when an IPMODIFY
ops is there (the kernel requires SAVE_REGS with IPMODIFY; our callback ops
save no pt_regs); D and O are never set (no direct calls; call-ops is arm64);
TRAMPOLINE is where the site jumps (the livepatch trampoline, or the generated
callback chain), printed `%pS` (bare hex when no symbol covers it, as for the
kernel's own trampolines without kallsyms), and FUNC is the `%pS` of the
callback, or for an IPMODIFY ops (which has none: its code is the trampoline)
the ops' name, e.g. `klp`.
"""
from __future__ import annotations

from emu.fs.vfs import Vfs
from emu.kernel.kallsyms import Kallsyms
from emu.trace.ftrace import Ftrace
from emu.trace.tracer import TRACEFS


def register_function_files(vfs: Vfs, ftrace: Ftrace, kallsyms: Kallsyms) -> None:
    files = FunctionFiles(ftrace, kallsyms)
    for root in TRACEFS:
        vfs.register(f"{root}/available_filter_functions", files.available, mode=0o444)
        vfs.register(f"{root}/enabled_functions", files.enabled, mode=0o444)


class FunctionFiles:
    def __init__(self, ftrace: Ftrace, kallsyms: Kallsyms) -> None:
        self.ftrace = ftrace
        self.kallsyms = kallsyms

    def _ps(self, address: int) -> str:
        """`%ps`: the symbol's name, then ` [module]` for a module's."""
        loc = self.kallsyms.lookup(address)
        if loc is None:
            return f"{address:#x}"
        return f"{loc.symbol.name} [{loc.module}]" if loc.module else loc.symbol.name

    def _pS(self, address: int) -> str:
        """`%pS`: name+offset/size [module], bare hex when no symbol covers it."""
        loc = self.kallsyms.lookup(address)
        return str(loc) if loc is not None else f"{address:#x}"

    def available(self) -> str:
        return "".join(f"{self._ps(site)}\n" for site in self.ftrace.sites)

    def enabled(self) -> str:
        if not self.ftrace.enabled:                 # kernel.ftrace_enabled=0: no call is enabled
            return ""
        lines = []
        for site in self.ftrace.sites:
            users = self.ftrace.ops.get(site)
            if not users:
                continue
            ipmodify = any(o.ipmodify for o in users)
            line = (f"{self._ps(site)} ({len(users)})" + (" R" if ipmodify else "  ")
                    + (" I" if ipmodify else "  ") + "  " + "  "
                    + (" M " if site in self.ftrace.modified else "   "))
            if len(users) == 1:
                ops = users[0]
                tramp = ops.target if ops.ipmodify else self.ftrace.chain_of(site)
                func = self._pS(ops.callback) if ops.callback else ops.name
                line += f"\ttramp: {self._pS(tramp)} ({func})"
            lines.append(line + "\n")
        return "".join(lines)
