"""Loaded kernel modules: init_module/delete_module, parameters, /sys/module.

The syscalls arrive from a guest task (the shell that runs insmod/rmmod) as
blocking hypercalls, so a module's init and exit run as genuine guest code on
that task's stack. The order of events is the kernel's: lay out and relocate,
NOP the module's ftrace sites, parse parameters, state COMING and the coming
notifiers (the livepatch core's klp_module_coming), init, state LIVE; on
unload: state GOING, exit, the going notifiers, teardown.
"""
from __future__ import annotations

import errno
import logging
import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Callable, Protocol

from emu.abi import MODULES_VADDR
from emu.arch.memory import MODULES_SIZE
from emu.elf.module_loader import LoadedModule, ModuleLoadError, ParamDesc, load_module
from emu.errors import EmuError
from emu.fs.vfs import FileNode, Vfs
from emu.kernel.cmdline import from_bytes, parameq, printable, split_args
from emu.kernel.dyndbg import DebugSite, DynamicDebug
from emu.kernel.hypercalls import hypercall
from emu.kernel.taint import TaintFlag
from emu.kernel.kstrtox import ParseError, kstrtobool, kstrtoll, kstrtoull
from emu.kernel.printk import KernelLog
from emu.kernel.program import Program
from emu.kernel.text_patching import TextPatcher
from emu.trace.ftrace import CALL, NOP5, rel32_insn

if TYPE_CHECKING:
    from emu.arch.cpu import Cpu
    from emu.kernel.guestcall import ServiceContext

log = logging.getLogger(__name__)

PAGE = 4096
CHARP_MAX = 1024                      # param_set_charp: longer is -ENOSPC
MAX_MODULE_IMAGE = 0x200000           # the user staging area insmod copies images through


class ModuleState(IntEnum):
    LIVE = 0
    COMING = 1
    GOING = 2
    UNFORMED = 3


class ModuleNotifier(Protocol):
    """The module notifier chain (register_module_notifier): COMING and GOING."""

    def module_coming(self, ctx: "ServiceContext", module: "Module") -> int: ...
    def module_going(self, ctx: "ServiceContext", module: "Module") -> None: ...


class ModuleListener(Protocol):
    """What learns a module's code when it is laid out and forgets it at
    teardown: kallsyms, ftrace's site table, the unwinder's tables."""

    def module_loaded(self, name: str, image: LoadedModule) -> None: ...
    def module_removed(self, name: str, image: LoadedModule) -> None: ...


@dataclass
class Module:
    name: str
    image: LoadedModule
    struct: int                      # guest address of its struct module
    livepatch: bool
    params: dict[str, ParamDesc]
    refcnt: int = 0
    state: ModuleState = ModuleState.UNFORMED
    data: dict[str, object] = field(default_factory=dict)   # per-subsystem state (e.g. the klp core's)


def module_name_field(offsets: dict[str, int]) -> tuple[int, int]:
    """(offset, size) of `name` in the kernel's struct module, from its offsets table."""
    return offsets["MODULE_name"], offsets["MODULE_name_len"]


# The width a parameter's kernel_param_ops store (param_set_int writes an int,
# whatever the kernel_param says); elem_size is only an array's stride.
_PARAM_WIDTH = {"bool": 1, "byte": 1, "short": 2, "ushort": 2, "int": 4, "uint": 4, "long": 8, "ulong": 8}


def param_width(p: "ParamDesc") -> int:
    return _PARAM_WIDTH.get(p.type, p.elem_size)


def s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


LIVEPATCH_API_PREFIX = "klp_"      # kernel/livepatch/'s exports (klp_enable_patch, klp_shadow_* …)


class ModuleManager:
    def __init__(self, prog: Program, log: KernelLog, vfs: Vfs, text: TextPatcher,
                 listeners: list[ModuleListener], debug: DynamicDebug) -> None:
        self.prog = prog
        self.log = log
        self.vfs = vfs
        self.text = text
        self.debug = debug
        self.listeners = listeners
        self.modules: dict[str, Module] = {}
        self.notifiers: list[ModuleNotifier] = []
        # klp_apply_section_relocs for vmlinux, called by the loader
        # (set by the livepatch core): 0 or -errno
        self.apply_livepatch_relocs: Callable[[Module], int] | None = None
        self._next = MODULES_VADDR
        self._vmlinux_exports = prog.image.ksymtab()
        self._fentry = prog.symbol_address("__fentry__")
        self._name_field = module_name_field(prog.offsets)
        self._waiting_loaders = 0          # insmods waiting in module_patient_check_exists
        # exports of the image that the kernel being reproduced did not have
        # (set by the layer above, e.g. a livepatch version profile); until a
        # livepatch core attaches, the kernel is one without CONFIG_LIVEPATCH
        self.withheld: frozenset[str] = frozenset(
            n for n in self._vmlinux_exports if n.startswith(LIVEPATCH_API_PREFIX))
        self._kstrtobool_rule = prog.symbol_address("kstrtobool_true_false")
        vfs.register_dynamic(r"/sys/module/([^/]+)/refcnt", self._refcnt_node)

    @property
    def kstrtobool_true_false(self) -> bool:
        """kstrtobool's 5.19 rule (t/T, f/F), for bool parameters here and for
        the guest's own lib/kstrtox.c alike: the newest kernel's unless the
        layer above reproduces an older one. It is the guest's variable, so
        that the two agree and a snapshot keeps it."""
        return self.prog.mem.read(self._kstrtobool_rule, 1) != b"\0"

    @kstrtobool_true_false.setter
    def kstrtobool_true_false(self, takes: bool) -> None:
        self.prog.mem.write(self._kstrtobool_rule, bytes([takes]))

    # ------------------------------------------------------------ lookup
    def resolve(self, name: str) -> int | None:
        """An exported symbol of vmlinux or of a loaded module."""
        if name in self._vmlinux_exports and name not in self.withheld:
            return self._vmlinux_exports[name]
        if name == "__fentry__":
            return self._fentry
        for mod in self.modules.values():
            if name in mod.image.exports:
                return mod.image.exports[name]
        return None

    def by_struct(self, address: int) -> Module | None:
        return next((m for m in self.modules.values() if m.struct == address), None)

    def _set_state(self, mod: Module, state: ModuleState) -> None:
        mod.state = state
        self.prog.mem.write(mod.struct + self.prog.offsets["MODULE_state"], int(state).to_bytes(4, "little"))

    # ------------------------------------------------------------ load
    def alloc_pages(self, size: int) -> int:
        """Fresh page-aligned memory in the module area (module_alloc)."""
        return self._allocate(size)

    def _allocate(self, size: int) -> int:
        base = self._next
        end = (base + size + PAGE - 1) & ~(PAGE - 1)
        if end > MODULES_VADDR + MODULES_SIZE:
            raise ModuleLoadError([f"module area exhausted ({size} bytes requested)"], errno.ENOMEM)
        self._next = end
        return base

    def init_module(self, ctx: "ServiceContext", data: bytes, uargs: str | None) -> int:
        """finit/init_module: 0, or -errno with the kernel's messages logged.
        UARGS None: the args were not user memory, the -EFAULT of
        load_module's strndup_user, which comes after the image's checks."""
        log, mem = self.log.log, self.prog.mem
        # Laid out at the next free address, which is only taken (and the
        # image written) once the module is accepted: a refused one costs
        # no module area.
        try:
            image = load_module(data, "module", self._next, self.resolve, name_field=self._name_field)
        except ModuleLoadError as err:
            for line in err.lines:
                log(line, level=4)
            return -err.errno
        if image.this_module is None:
            log("module has no .gnu.linkonce.this_module section", level=4)
            return -errno.ENOEXEC
        if image.name in self.modules:
            return self._patient_check_exists(ctx, image.name)
        body = bytearray(image.image)
        for site in image.mcount_sites:
            off = site - image.base
            if not (image.text[0] <= site <= image.text[1] - 5
                    and body[off:off + 5] == rel32_insn(CALL, site, self._fentry)):
                log(f"{image.name}: __mcount_loc entry {site:#x} is not a call to __fentry__", level=4)
                return -errno.ENOEXEC
            body[off:off + 5] = NOP5
        try:
            self._allocate(image.size)
        except ModuleLoadError as err:
            log(err.lines[0], level=4)
            return -err.errno
        mem.write(image.base, bytes(body))
        self.text.invalidate(image.base, image.size)
        mod = Module(image.name, image, image.this_module, image.modinfo.get("livepatch") == ["Y"],
                     {p.name: p for p in image.params})
        self._set_state(mod, ModuleState.UNFORMED)
        if self.apply_livepatch_relocs is not None:
            err = self.apply_livepatch_relocs(mod)
            if err:
                return err
        self.debug.add_module(mod.name, [
            DebugSite(d.modname, d.function, d.filename, d.format, d.lineno, d.flags, d.address)
            for d in image.debug_sites])
        err = -errno.EFAULT if uargs is None else self._parse_args(ctx, mod, uargs)
        if err:
            self.debug.remove_module(mod.name)
            return err
        self._taint(mod)
        self.modules[mod.name] = mod
        for listener in self.listeners:
            listener.module_loaded(mod.name, image)
        self._register_sysfs(mod)
        self._set_state(mod, ModuleState.COMING)
        for notifier in self.notifiers:
            ret = notifier.module_coming(ctx, mod)
            if ret:
                self._teardown(ctx, mod)
                return ret
        init = mem.read_u64(mod.struct + self.prog.offsets["MODULE_init"])
        ret = s32(ctx.call(init)) if init else 0
        if ret < 0:
            self._set_state(mod, ModuleState.GOING)
            for notifier in reversed(self.notifiers):
                notifier.module_going(ctx, mod)
            self._teardown(ctx, mod)
            return ret
        if ret > 0:
            log(f"do_init_module: '{mod.name}'->init suspiciously returned {ret}, "
                  "it should follow 0/-E convention", level=4)
        self._set_state(mod, ModuleState.LIVE)
        self._wake_loaders(ctx)
        return 0

    def _patient_check_exists(self, ctx: "ServiceContext", name: str) -> int:
        """module_patient_check_exists: a module of NAME is loaded, or still
        coming (its init running, or killed while it ran: then for good).
        The loader waits, interruptibly, for a coming one to go live or be
        freed; -EEXIST if it is live then, -EBUSY if not (the kernel does not
        load it again right away), the wait's error on a signal."""
        old = self.modules[name]
        if old.state in (ModuleState.COMING, ModuleState.UNFORMED):
            self._waiting_loaders += 1
            try:
                err = s32(ctx.call("klpemu_module_wait", old.struct + self.prog.offsets["MODULE_name"]))
            finally:
                self._waiting_loaders -= 1
            if err:
                return err
        old = self.modules.get(name)
        return -errno.EEXIST if old is not None and old.state == ModuleState.LIVE else -errno.EBUSY

    def _wake_loaders(self, ctx: "ServiceContext") -> None:
        """wake_up_all(&module_wq), when a loader waits there."""
        if self._waiting_loaders:
            ctx.call("klpemu_module_wake")

    def _taint(self, mod: Module) -> None:
        """module_augment_kernel_taints (every module is out of tree) and
        check_modinfo_livepatch: each says so the first time."""
        taint = self.prog.taint
        if not taint.test(TaintFlag.OOT_MODULE):
            self.log.log(f"{mod.name}: loading out-of-tree module taints kernel.", level=4)
        taint.add(TaintFlag.OOT_MODULE)
        if mod.livepatch:
            if not taint.test(TaintFlag.LIVEPATCH):
                self.log.log(f"{mod.name}: tainting kernel with TAINT_LIVEPATCH", level=5)             # pr_notice_once
            taint.add(TaintFlag.LIVEPATCH)

    # ------------------------------------------------------------ unload
    def delete_module(self, ctx: "ServiceContext", name: str) -> int:
        mem, o = self.prog.mem, self.prog.offsets
        mod = self.modules.get(name)
        if mod is None or mod.state == ModuleState.UNFORMED:
            return -errno.ENOENT
        if mod.state != ModuleState.LIVE:
            return -errno.EBUSY
        exit_fn = mem.read_u64(mod.struct + o["MODULE_exit"])
        init_fn = mem.read_u64(mod.struct + o["MODULE_init"])
        if init_fn and not exit_fn:
            return -errno.EBUSY
        if mod.refcnt:
            return -errno.EWOULDBLOCK
        self._set_state(mod, ModuleState.GOING)
        if exit_fn:
            ctx.call(exit_fn)
        for notifier in reversed(self.notifiers):
            notifier.module_going(ctx, mod)
        self._teardown(ctx, mod)
        return 0

    def _teardown(self, ctx: "ServiceContext", mod: Module) -> None:
        """Forget a module (free_module), and wake the loaders waiting for
        it; its memory is never reused (so no stale code)."""
        self.modules.pop(mod.name, None)
        self.debug.remove_module(mod.name)
        for listener in reversed(self.listeners):
            listener.module_removed(mod.name, mod.image)
        self.vfs.unregister_tree(f"/sys/module/{mod.name}")
        self._wake_loaders(ctx)

    @hypercall("HC_MODULE_LOADED")
    def hc_module_loaded(self, cpu: "Cpu", name: int, *_: int) -> int:
        """finished_loading(name): 1 when no module NAME is coming."""
        mod = self.modules.get(self.prog.mem.read_cstr(name, self._name_field[1]))
        return int(mod is None or mod.state in (ModuleState.LIVE, ModuleState.GOING))

    # ------------------------------------------------------------ hypercalls
    @hypercall("HC_INIT_MODULE", blocking=True)
    def hc_init_module(self, ctx: "ServiceContext", image: int, length: int, uargs: int, _: int) -> int:
        """long init_module(void *image, unsigned long len, const char *uargs):
        the image and the args are user memory (copy_module_from_user,
        strndup_user: -EFAULT otherwise; the args have no length limit)."""
        mem = self.prog.mem
        if length > MAX_MODULE_IMAGE or not mem.is_user(image, max(length, 1)):
            return -errno.EFAULT
        args = mem.read_user_cstr(uargs, MAX_MODULE_IMAGE)
        return self.init_module(ctx, mem.read(image, length), None if args is None else from_bytes(args))

    @hypercall("HC_DELETE_MODULE", blocking=True)
    def hc_delete_module(self, ctx: "ServiceContext", name: int, flags: int, *_: int) -> int:
        """long delete_module(const char *name, unsigned int flags): NAME is
        strncpy_from_user()'s MODULE_NAME_LEN - 1 bytes, -EFAULT if not user memory."""
        raw = self.prog.mem.read_user_cstr(name, self._name_field[1] - 1)
        if raw is None:
            return -errno.EFAULT
        return self.delete_module(ctx, raw.decode("utf-8", "replace"))

    @hypercall("HC_MODULE_GET")
    def hc_module_get(self, cpu: "Cpu", struct: int, *_: int) -> int:
        """bool try_module_get(struct module *mod)"""
        mod = self.by_struct(struct)
        return int(mod is not None and self.get(mod))

    @hypercall("HC_MODULE_PUT")
    def hc_module_put(self, cpu: "Cpu", struct: int, *_: int) -> int:
        """void module_put(struct module *mod)"""
        mod = self.by_struct(struct)
        if mod is not None:
            self.put(mod)
        return 0

    # ------------------------------------------------------------ refcount
    def get(self, mod: Module) -> bool:
        if mod.state == ModuleState.GOING:
            return False
        mod.refcnt += 1
        return True

    def put(self, mod: Module) -> None:
        if mod.refcnt <= 0:
            raise EmuError(f"module_put of {mod.name} with refcnt 0")
        mod.refcnt -= 1

    # ------------------------------------------------------------ sysfs
    def _refcnt_node(self, match: "re.Match[str]") -> FileNode | None:
        mod = self.modules.get(match.group(1))
        return None if mod is None else FileNode(lambda: f"{mod.refcnt}\n", None, 0o444)

    def _register_sysfs(self, mod: Module) -> None:
        vfs = self.vfs
        vfs.register_dir(f"/sys/module/{mod.name}")
        vfs.register_dir(f"/sys/module/{mod.name}/parameters")
        for p in mod.params.values():
            if not p.perm & 0o777:
                continue
            show: Callable[[], str] = lambda p=p: self._param_show(p)
            store = None
            if p.perm & 0o222:
                store = lambda ctx, text, p=p, mod=mod: self._param_store(ctx, mod, p, text)
            vfs.register(f"/sys/module/{mod.name}/parameters/{p.name}", show, store, p.perm & 0o777)

    # ------------------------------------------------------------ parameters
    def _parse_args(self, ctx: "ServiceContext", mod: Module, uargs: str) -> int:
        """parse_args with unknown_module_param_cb over UARGS's bytes (one
        character each, cmdline.from_bytes): the words split as next_arg
        does; an unknown name is a warning; a bad value is KERN_ERR and the
        load fails with its errno (the last one: parse_args goes on to the
        end)."""
        err = 0
        for name, value in split_args(uargs):
            param = next((p for key, p in mod.params.items() if parameq(name, key)), None)
            if param is None:
                self._unknown_param(mod, name, value)
                continue
            ret = self._param_set(ctx, param, value)
            shown, named = printable(value or ""), printable(name)
            if ret == -errno.ENOSPC:
                self.log.log(f"{mod.name}: `{shown}' too large for parameter `{named}'", level=3)
            elif ret < 0:
                self.log.log(f"{mod.name}: `{shown}' invalid for parameter `{named}'", level=3)
            err = ret if ret < 0 else err
        return err

    def _unknown_param(self, mod: Module, name: str, value: str | None) -> None:
        """unknown_module_param_cb: async_probe is taken; [MOD.]dyndbg is a
        dynamic debug query (ddebug_dyndbg_param_cb: MOD, when given, is the
        module queried); anything else is a warning naming what precedes a
        '.', as the callback cut the name there."""
        if name == "async_probe":
            return
        prefix, dot, rest = name.partition(".")
        if (rest if dot else name) == "dyndbg":
            self.debug.exec_queries("+p" if value is None else value, prefix if dot else mod.name)
            return
        self.log.log(f"{mod.name}: unknown parameter '{printable(prefix)}' ignored", level=4)

    def _param_store(self, ctx: "ServiceContext", mod: Module, p: ParamDesc, text: str) -> int:
        """param_attr_store: the value as sysfs hands it over, a trailing
        newline included (kstrto*() and kstrtobool accept one; a charp keeps
        it, as param_set_charp copies the string whole)."""
        err = self._param_set(ctx, p, text)
        return err if err < 0 else len(text)

    def _param_set(self, ctx: "ServiceContext", p: ParamDesc, value: str | None) -> int:
        """Parse and store one value (a comma list for arrays), one character
        per byte as sysfs and next_arg hand it over; 0 or -errno."""
        mem = self.prog.mem
        if p.max:
            items = (value or "").split(",")
            if not value or len(items) > p.max:
                return -errno.EINVAL
            try:
                encoded = [self._encode(p, item) for item in items]
            except ParseError as exc:
                return -exc.errno
            for i, raw in enumerate(encoded):
                mem.write(p.arg + i * p.elem_size, raw)
            if p.num:
                mem.write(p.num, len(items).to_bytes(4, "little"))
            return 0
        if p.type == "charp":
            if value is None:
                return -errno.EINVAL          # parse_one: only bool takes no "=value"
            raw = value.encode("latin-1") + b"\0"
            if len(raw) > CHARP_MAX + 1:
                self.log.log(f"{p.name}: string parameter too long", level=3)
                return -errno.ENOSPC
            addr = ctx.call("kmalloc", len(raw), 0xCC0)
            if not addr:
                return -errno.ENOMEM
            mem.write(addr, raw)
            mem.write_u64(p.arg, addr)
            return 0
        if value is None and p.type != "bool":
            return -errno.EINVAL          # parse_one: only bool takes no "=value"
        try:
            raw = self._encode(p, "1" if value is None else value)
        except ParseError as exc:
            return -exc.errno
        mem.write(p.arg, raw)
        return 0

    def _encode(self, p: ParamDesc, text: str) -> bytes:
        """param_set_<type>: kstrtobool for bool, else the kstrto*() of the
        type's width in base 0 (kernel/params.c STANDARD_PARAM_DEF); the
        value as stored, or ParseError."""
        size = param_width(p)
        raw = text.encode("latin-1", "replace")
        if p.type == "bool":
            return int(kstrtobool(raw, self.kstrtobool_true_false)).to_bytes(size, "little")
        signed = p.type in ("int", "long", "short")
        bits = size * 8
        v = kstrtoll(raw, 0) if signed else kstrtoull(raw, 0)
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if not lo <= v <= hi:
            raise ParseError(errno.ERANGE)
        return (v & ((1 << bits) - 1)).to_bytes(size, "little")

    def _param_show(self, p: ParamDesc) -> str:
        mem = self.prog.mem
        if p.type == "charp":
            addr = mem.read_u64(p.arg)
            return f"{mem.read_cstr(addr) if addr else '(null)'}\n"

        def one(addr: int) -> str:
            raw = int.from_bytes(mem.read(addr, param_width(p)), "little")
            if p.type == "bool":
                return "Y" if raw else "N"
            if p.type in ("int", "long", "short") and raw >> (param_width(p) * 8 - 1):
                raw -= 1 << (param_width(p) * 8)
            return str(raw)
        if p.max:
            n = int.from_bytes(mem.read(p.num, 4), "little") if p.num else p.max
            return ",".join(one(p.arg + i * p.elem_size) for i in range(n)) + "\n"
        return one(p.arg) + "\n"
