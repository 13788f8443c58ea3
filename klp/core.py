"""The livepatch core (kernel/livepatch/core.c): enable, disable, modules.

`Livepatch.attach(machine)` gives a machine CONFIG_LIVEPATCH: the
/sys/kernel/livepatch tree, klp_enable_patch() for modules, the module
notifiers and /proc/<pid>/patch_state. Guest-visible state lives in guest
memory; messages are the kernel's, word for word (klp-spec.md §7).
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from emu.fs.vfs import FileNode
from emu.kernel.dyndbg import DebugSite
from emu.kernel.hypercalls import hypercall
from emu.kernel.kstrtox import ParseError, kstrtobool
from emu.kernel.tasks import TaskView, find_task
from emu.module.manager import Module, s32
from klp import events, klp_relocs
from klp.errors import KlpError, LivepatchError
from klp.hazard import ResumeWatch, SwitchCheck
from klp.objects import (KSYM_NAME_LEN, MODULE_NAME_LEN, GuestStructs, KlpFunc, KlpObject, KlpPatch, KlpState,
                         KlpStateEntry)
from klp.ops import Dispatch
from klp.profiles import Profile, get_profile
from klp.states import prev_state
from klp.transition import DEBUG_SITES, TRANSITION_C, Transition

if TYPE_CHECKING:
    from emu import Machine
    from emu.arch.cpu import Cpu
    from emu.kernel.guestcall import ServiceContext

SYSFS = "/sys/kernel/livepatch"
PR_NOTICE, PR_WARN, PR_ERR = 5, 4, 3


class Livepatch:
    """The livepatch core of one machine (klp_patches, klp_mutex, …)."""

    def __init__(self, machine: "Machine", backend: str = "native", profile: Profile | None = None) -> None:
        self.machine = machine
        self.profile = profile or get_profile(None)
        self.g = GuestStructs(machine)
        # klp_patches: enabled or in transition (every registered patch before 5.1)
        self.patches: list[KlpPatch] = []
        self.dispatch = Dispatch(machine, backend, permanent=self.profile.permanent_ftrace_ops)
        self.transition = Transition(self)
        self._locked = False
        self._switch_check: SwitchCheck | None = None
        self.unsafe_switch_to = False  # see allow_unsafe_switch_to()
        self.resume_watch: ResumeWatch | None = None   # when the check was overridden
        self._holder_pid: int | None = None
        # this kernel's pr_debug() sites of kernel/livepatch/, in source order
        self.debug_sites = {key: DebugSite("livepatch", func, TRANSITION_C, fmt, line)
                            for key, (func, line, fmt) in sorted(DEBUG_SITES.items(), key=lambda kv: kv[1][1])}

    @classmethod
    def attach(cls, machine: "Machine", backend: str | None = None,
               klp_version: str | None = None) -> "Livepatch":
        """The machine's livepatch core, created on first use. `backend` picks
        the dispatch (ops.BACKENDS; native by default) and `klp_version` the
        kernel whose semantics it reproduces (klp/profiles.py; the newest by
        default); neither can change later."""
        profile = None if klp_version is None else get_profile(klp_version)
        core = machine.extensions.get("klp")
        if isinstance(core, Livepatch):
            if backend is not None and backend != core.dispatch.backend:
                raise LivepatchError(f"this machine's livepatch core already uses the "
                                 f"{core.dispatch.backend} dispatch backend")
            if profile is not None and profile != core.profile:
                raise LivepatchError(f"this machine's livepatch core already reproduces "
                                 f"{core.profile.name}")
            return core
        core = cls(machine, backend or "native", profile)
        machine.extensions["klp"] = core
        machine.hypercalls.register_object(core)
        machine.dyndbg.add_module("livepatch", list(core.debug_sites.values()))
        machine.preempt.set("livepatch: transition work", {machine.kallsyms.find(name).address for name in
                                                           ("klp_transition_work_fn", "klp_sched_try_switch")})
        machine.modules.notifiers.append(core)
        machine.modules.withheld = core.profile.withheld_exports
        machine.modules.kstrtobool_true_false = core.profile.kstrtobool_true_false
        machine.modules.apply_livepatch_relocs = lambda mod: klp_relocs.apply_vmlinux_relocs(machine, mod)
        machine.vfs.register_dir(SYSFS)
        if core.profile.consistency_model:
            machine.vfs.register_dynamic(r"/proc/(\d+)/patch_state", core._patch_state_node)
        return core

    # ------------------------------------------------------------ helpers
    def log(self, text: str, level: int = PR_NOTICE) -> None:
        self.machine.log(f"livepatch: {text}", level=level)

    def pr_debug(self, site: str, text: str) -> None:
        """A message of one of kernel/livepatch/'s pr_debug() sites (DEBUG_SITES),
        printed when dynamic debug enables it, from the klp_mutex holder."""
        self.machine.dyndbg.printk(self.debug_sites[site], f"livepatch: {text}", self._holder_pid)

    def lock(self, ctx: "ServiceContext") -> None:
        """klp_mutex: a second service sleeps (genuinely) until it is free."""
        while self._locked:
            ctx.call("msleep", 1)
        self._locked = True
        self._holder_pid = TaskView(self.machine.prog, ctx.task).pid

    def unlock(self) -> None:
        self._locked = False

    def mirror_func(self, func: KlpFunc) -> None:
        g = self.g
        g.set_u64(func.struct, "KLP_FUNC_old_func", func.old_func)
        g.set_bool(func.struct, "KLP_FUNC_patched", func.patched)
        g.set_bool(func.struct, "KLP_FUNC_transition", func.transition)

    def mirror_obj(self, obj: KlpObject) -> None:
        g = self.g
        g.set_u64(obj.struct, "KLP_OBJ_mod", obj.mod.struct if obj.mod else 0)
        g.set_bool(obj.struct, "KLP_OBJ_patched", obj.patched)
        g.set_bool(obj.struct, "KLP_OBJ_post_unpatch_enabled", obj.post_unpatch_enabled)

    def mirror_patch(self, patch: KlpPatch) -> None:
        self.g.set_bool(patch.struct, "KLP_PATCH_enabled", patch.enabled)
        self.g.set_bool(patch.struct, "KLP_PATCH_forced", patch.forced)

    # ------------------------------------------------------------ reading the structs
    def _read_patch(self, addr: int) -> KlpPatch:
        g, m, p = self.g, self.machine, self.profile
        if not addr:
            raise KlpError(errno.EINVAL)
        mod_struct = g.u64(addr, "KLP_PATCH_mod")
        objs_addr = g.u64(addr, "KLP_PATCH_objs")
        if not mod_struct or not objs_addr:
            raise KlpError(errno.EINVAL)
        module = m.modules.by_struct(mod_struct)
        if module is None:
            raise KlpError(errno.EINVAL)
        objs = []
        o = objs_addr
        while True:
            name_ptr, funcs_ptr = g.u64(o, "KLP_OBJ_name"), g.u64(o, "KLP_OBJ_funcs")
            if not name_ptr and not funcs_ptr:
                break
            if not funcs_ptr:
                raise KlpError(errno.EINVAL)
            # a kernel without callbacks has no such fields: they do not run
            callbacks = [g.u64(o, f"KLP_OBJ_{cb}") if p.callbacks else 0
                         for cb in ("pre_patch", "post_patch", "pre_unpatch", "post_unpatch")]
            objs.append(KlpObject(g.cstr(name_ptr, MODULE_NAME_LEN), o, self._read_funcs(funcs_ptr), *callbacks))
            o += m.offsets["KLP_OBJ_size"]
        states = []
        s = g.u64(addr, "KLP_PATCH_states") if p.states else 0
        while s and g.u64(s, "KLP_STATE_id"):
            states.append(KlpStateEntry(g.u64(s, "KLP_STATE_id"), g.u32(s, "KLP_STATE_version"), s))
            s += m.offsets["KLP_STATE_size"]
        replace = p.atomic_replace and bool(g.u8(addr, "KLP_PATCH_replace"))
        immediate = p.immediate_flag and bool(g.u8(addr, "KLP_PATCH_immediate"))
        return KlpPatch(module.name, addr, module, objs, states, replace, immediate=immediate)

    def _read_funcs(self, addr: int) -> list[KlpFunc]:
        """The static funcs up to the terminator (old_name, new_func and
        old_sympos all 0), as read: klp_init_func checks them later."""
        g, funcs = self.g, []
        while True:
            name_ptr = g.u64(addr, "KLP_FUNC_old_name")
            new_func = g.u64(addr, "KLP_FUNC_new_func")
            sympos = g.u64(addr, "KLP_FUNC_old_sympos")
            if not name_ptr and not new_func and not sympos:
                return funcs
            immediate = self.profile.immediate_flag and bool(g.u8(addr, "KLP_FUNC_immediate"))
            funcs.append(KlpFunc(g.cstr(name_ptr, KSYM_NAME_LEN), new_func, sympos, addr, immediate=immediate))
            addr += self.machine.offsets["KLP_FUNC_size"]

    # ------------------------------------------------------------ enable
    def enable_patch(self, ctx: "ServiceContext", addr: int) -> int:
        """klp_enable_patch(): 0 or -errno (the module's init returns it)."""
        if self.profile.register_api:
            return self.enable_registered(ctx, addr)
        try:
            patch = self._read_patch(addr)
        except KlpError as err:
            return -err.errno
        if not patch.module.livepatch:
            self.log(f"module {patch.name} is not marked as a livepatch module", PR_ERR)
            return -errno.EINVAL
        self.lock(ctx)
        try:
            if not self.is_compatible(patch):
                self.log(f"Livepatch patch ({patch.name}) is not compatible with the already "
                         "installed livepatches.", PR_ERR)
                return -errno.EINVAL
            if not self.machine.modules.get(patch.module):
                return -errno.ENODEV
            try:
                self.init_patch(patch)
                self.check_switch_frames(patch)
            except KlpError as err:
                self.free_patch_start(patch)
                self.machine.modules.put(patch.module)
                return -err.errno
            ret = self._enable(ctx, patch)
            if ret:
                self.free_patch_start(patch)
                self.machine.modules.put(patch.module)
            return ret
        finally:
            self.unlock()

    # ------------------------------------------------------------ the API before 5.1
    def registered(self, addr: int) -> KlpPatch | None:
        """klp_is_patch_registered."""
        return next((p for p in self.patches if p.struct == addr), None)

    def register_patch(self, ctx: "ServiceContext", addr: int) -> int:
        """klp_register_patch: onto klp_patches, disabled. Without the consistency
        model (4.11) it takes a module reference that is never dropped."""
        try:
            patch = self._read_patch(addr)
        except KlpError as err:
            return -err.errno
        if not patch.module.livepatch:
            self.log(f"module {patch.name} is not marked as a livepatch module", PR_ERR)
            return -errno.EINVAL
        pinned = not self.profile.consistency_model
        if pinned and not self.machine.modules.get(patch.module):
            return -errno.ENODEV
        self.lock(ctx)
        try:
            self.init_patch(patch)
            self.check_switch_frames(patch)
        except KlpError as err:
            self.free_patch_start(patch)
            if pinned:
                self.machine.modules.put(patch.module)
            return -err.errno
        finally:
            self.unlock()
        return 0

    def enable_registered(self, ctx: "ServiceContext", addr: int) -> int:
        """klp_enable_patch before 5.1: enable a registered patch."""
        self.lock(ctx)
        try:
            patch = self.registered(addr)
            return -errno.EINVAL if patch is None else self._enable(ctx, patch)
        finally:
            self.unlock()

    def disable_registered(self, ctx: "ServiceContext", addr: int) -> int:
        """klp_disable_patch (before 5.1)."""
        self.lock(ctx)
        try:
            patch = self.registered(addr)
            if patch is None or not patch.enabled:
                return -errno.EINVAL
            return self.disable_patch(ctx, patch)
        finally:
            self.unlock()

    def unregister_patch(self, ctx: "ServiceContext", addr: int) -> int:
        """klp_unregister_patch: only a disabled patch leaves klp_patches."""
        self.lock(ctx)
        try:
            patch = self.registered(addr)
            if patch is None:
                return -errno.EINVAL
            if patch.enabled:
                return -errno.EBUSY
            self.free_patch_start(patch)
            return 0
        finally:
            self.unlock()

    def _stacking_refuses(self, patch: KlpPatch, enable: bool) -> bool:
        """The stacking rule before 5.1: only the first disabled patch may be
        enabled, only the last enabled one disabled."""
        if not self.profile.stacking_rule:
            return False
        i = self.patches.index(patch)
        if enable:
            return i > 0 and not self.patches[i - 1].enabled
        return i + 1 < len(self.patches) and self.patches[i + 1].enabled

    def allow_unsafe_switch_to(self) -> None:
        """Let patches replace functions that switch stacks without saving RIP
        even when a task would resume in a different frame (klp/hazard.py):
        for reproducing the crash, never for real use."""
        self.unsafe_switch_to = True
        self.log("UNSAFE: switch_to/RIP frame check disabled: patching a function that "
                 "switches stacks without saving RIP may crash the kernel", PR_WARN)

    def check_switch_frames(self, patch: KlpPatch) -> None:
        """Refuse (-EINVAL) a patch after which a sleeping task would resume in a
        frame other than the one it slept in, unless overridden (loudly)."""
        if self._switch_check is None:
            self._switch_check = SwitchCheck(self.machine)
        check = self._switch_check
        problems = [p for obj in patch.objs if obj.loaded for func in obj.funcs if not func.nop
                    for p in check.problems(obj.name, func)]
        for text in problems:
            self.log(text, PR_WARN if self.unsafe_switch_to else PR_ERR)
        if problems and not self.unsafe_switch_to:
            raise KlpError(errno.EINVAL)
        if problems:
            self.log(f"UNSAFE: enabling patch '{patch.name}' anyway (switch_to/RIP check "
                     "overridden)", PR_WARN)
            self._watch_resumes(patch)

    def _watch_resumes(self, patch: KlpPatch) -> None:
        """Name each task that resumes in the other copy of a function whose
        replacement switches stacks on another frame (an overridden refusal)."""
        if self.resume_watch is None:
            self.resume_watch = ResumeWatch(self.machine, lambda text: self.log(text, PR_WARN))
        check = self._switch_check
        for obj in patch.objs:
            for func in obj.funcs:
                old = check.switchers.get(func.old_name) if obj.name is None and not func.nop else None
                new = check.switch_of(func) if old is not None else None
                if new is not None:
                    self.resume_watch.watch(old, new, f"{func.old_name} (vmlinux)",
                                            f"{func.old_name} ({patch.name})")

    def is_compatible(self, new: KlpPatch) -> bool:
        """klp_is_patch_compatible (system states)."""
        for old in self.patches if self.profile.states else ():
            for state in old.states:
                mine = next((s for s in new.states if s.id == state.id), None)
                if mine is None and new.replace:
                    return False
                if mine is not None and mine.version < state.version:
                    return False
        return True

    def init_patch(self, patch: KlpPatch) -> None:
        """klp_init_patch: sysfs, nops, objects; then onto klp_patches."""
        self._kobject_add(f"{SYSFS}/{patch.name}")
        self._register_patch_sysfs(patch)
        if patch.replace:
            self.add_nops(patch)
        for obj in patch.objs:
            self.init_object(patch, obj)
        self.patches.append(patch)

    def init_object(self, patch: KlpPatch, obj: KlpObject) -> None:
        if obj.name is not None and len(obj.name) >= MODULE_NAME_LEN:
            raise KlpError(errno.EINVAL)
        obj.patched = False
        obj.mod = None
        if obj.name is not None:
            mod = self.machine.modules.modules.get(obj.name)
            if mod is not None and mod.data.get("klp_alive"):
                obj.mod = mod
        self._register_object_sysfs(patch, obj)
        for func in obj.funcs:
            self.init_func(patch, obj, func)
        if obj.loaded:
            self.init_object_loaded(patch, obj)
        self.mirror_obj(obj)

    def init_object_loaded(self, patch: KlpPatch, obj: KlpObject) -> None:
        """Write a module object's klp relocations (vmlinux's were written when
        the livepatch module loaded), resolve old_func and the sizes
        (klp_init_object_loaded)."""
        ks = self.machine.kallsyms
        if obj.name is not None:
            ret = klp_relocs.write_object_relocs(self.machine, patch, obj, apply=True)
            if ret:
                raise KlpError(-ret)
        for func in obj.funcs:
            sym = klp_relocs.find_object_symbol(self.machine, obj.name, func.old_name, func.old_sympos)
            if sym is None:
                raise KlpError(errno.EINVAL)
            func.old_func, func.old_size = sym.address, sym.size
            if func.nop:
                func.new_func = func.old_func
            loc = ks.lookup(func.new_func)           # kallsyms_lookup_size_offset: inside a symbol will do
            if loc is None:
                self.log(f"kallsyms size lookup failed for '{func.old_name}' replacement", PR_ERR)
                raise KlpError(errno.ENOENT)
            func.new_size = loc.symbol.size
            self.mirror_func(func)

    def add_nops(self, patch: KlpPatch) -> None:
        """klp_add_nops: a nop for every func an older patch changes and this one does not."""
        for old in self.patches:
            for old_obj in old.objs:
                obj = next((o for o in patch.objs if o.name == old_obj.name), None)
                if obj is None:
                    obj = KlpObject(old_obj.name, None, [], dynamic=True)
                    patch.objs.append(obj)
                for old_func in old_obj.funcs:
                    if any(f.old_name == old_func.old_name and f.old_sympos == old_func.old_sympos
                           for f in obj.funcs):
                        continue
                    obj.funcs.append(KlpFunc(old_func.old_name, 0, old_func.old_sympos, None, nop=True))

    def _enable(self, ctx: "ServiceContext", patch: KlpPatch) -> int:
        """__klp_enable_patch."""
        t, p = self.transition, self.profile
        if t.patch is not None or self._stacking_refuses(patch, enable=True):
            return -errno.EBUSY
        # 4.12-5.0: each enable holds the module until unpatching completes
        if p.register_api and p.consistency_model and not self.machine.modules.get(patch.module):
            return -errno.ENODEV
        self.log(f"enabling patch '{patch.name}'")
        t.note(events.PATCH, patch, state="enabling")
        if not p.consistency_model:
            return self._enable_at_once(patch)
        t.init(patch, KlpState.PATCHED)
        for obj in patch.objs:
            if not obj.loaded:
                continue
            ret = self.pre_patch(ctx, obj)
            if ret:
                self.log(f"pre-patch callback failed for object '{obj.display_name}'", PR_WARN)
                return self._enable_failed(ctx, patch, ret)
            ret = self.patch_object(obj)
            if ret:
                self.log(f"failed to patch object '{obj.display_name}'", PR_WARN)
                return self._enable_failed(ctx, patch, ret)
        t.start()
        patch.enabled = True
        self.mirror_patch(patch)
        t.try_complete(ctx)
        return 0

    def _enable_at_once(self, patch: KlpPatch) -> int:
        """__klp_enable_patch without the consistency model (4.11): every task
        sees the new functions as soon as they are on the func_stack."""
        for obj in patch.objs:
            if obj.loaded:
                ret = self.patch_object(obj)
                if ret:
                    self._disable_at_once(patch)
                    return ret
        patch.enabled = True
        self.mirror_patch(patch)
        return 0

    def _disable_at_once(self, patch: KlpPatch) -> int:
        self.log(f"disabling patch '{patch.name}'")
        self.unpatch_objects(patch)
        patch.enabled = False
        self.mirror_patch(patch)
        return 0

    def _enable_failed(self, ctx: "ServiceContext", patch: KlpPatch, ret: int) -> int:
        self.log(f"failed to enable patch '{patch.name}'", PR_WARN)
        self.transition.cancel(ctx)
        return ret

    # ------------------------------------------------------------ objects
    def patch_object(self, obj: KlpObject) -> int:
        """klp_patch_object: push every func; on failure undo the object."""
        for func in obj.funcs:
            if not self.machine.ftrace.is_site(func.old_func):
                self.log(f"failed to find location for function '{func.old_name}'", PR_ERR)
                self.unpatch_object(obj)
                return -errno.EINVAL
            ret = self.dispatch.push(func)
            if ret:
                self.log(f"failed to register ftrace handler for function '{func.old_name}' ({ret})", PR_ERR)
                self.unpatch_object(obj)
                return ret
            self.mirror_func(func)
        obj.patched = True
        self.mirror_obj(obj)
        return 0

    def unpatch_object(self, obj: KlpObject, nops_only: bool = False) -> None:
        for func in obj.funcs:
            if func.patched and (func.nop or not nops_only):
                self.dispatch.pop(func)
                self.mirror_func(func)
        if not nops_only or obj.dynamic:
            obj.patched = False
            self.mirror_obj(obj)

    def unpatch_objects(self, patch: KlpPatch) -> None:
        for obj in patch.objs:
            if obj.patched:
                self.unpatch_object(obj)

    def unpatch_replaced_patches(self, new: KlpPatch) -> None:
        for old in list(self.patches):
            if old is new:
                break
            old.enabled = False
            self.mirror_patch(old)
            self.unpatch_objects(old)

    def discard_nops(self, patch: KlpPatch) -> None:
        for obj in list(patch.objs):
            self.unpatch_object(obj, nops_only=True)
            obj.funcs = [f for f in obj.funcs if not f.nop]
            if obj.dynamic:
                patch.objs.remove(obj)
        self._refresh_patch_sysfs(patch)

    # ------------------------------------------------------------ callbacks (core.h)
    def pre_patch(self, ctx: "ServiceContext", obj: KlpObject) -> int:
        ret = 0
        if obj.pre_patch:
            ret = s32(ctx.call(obj.pre_patch, obj.struct or 0))
        obj.post_unpatch_enabled = not ret
        self.mirror_obj(obj)
        return ret

    def post_patch(self, ctx: "ServiceContext", obj: KlpObject) -> None:
        if obj.post_patch:
            ctx.call(obj.post_patch, obj.struct or 0)

    def pre_unpatch(self, ctx: "ServiceContext", obj: KlpObject) -> None:
        if obj.pre_unpatch:
            ctx.call(obj.pre_unpatch, obj.struct or 0)

    def post_unpatch(self, ctx: "ServiceContext", obj: KlpObject) -> None:
        if obj.post_unpatch and obj.post_unpatch_enabled:
            ctx.call(obj.post_unpatch, obj.struct or 0)
        obj.post_unpatch_enabled = False
        self.mirror_obj(obj)

    # ------------------------------------------------------------ disable, free
    def disable_patch(self, ctx: "ServiceContext", patch: KlpPatch) -> int:
        """__klp_disable_patch."""
        t = self.transition
        if t.patch is not None or self._stacking_refuses(patch, enable=False):
            return -errno.EBUSY
        if not self.profile.consistency_model:
            return self._disable_at_once(patch)
        t.init(patch, KlpState.UNPATCHED)
        for obj in patch.objs:
            if obj.patched:
                self.pre_unpatch(ctx, obj)
        t.start()
        patch.enabled = False
        self.mirror_patch(patch)
        t.try_complete(ctx)
        return 0

    def free_patch_start(self, patch: KlpPatch) -> None:
        if patch in self.patches:
            self.patches.remove(patch)
        self.machine.vfs.unregister_tree(f"{SYSFS}/{patch.name}")

    def free_patch(self, patch: KlpPatch) -> None:
        """The end of klp_free_patch_async: gone from sysfs, module put unless forced."""
        self.free_patch_start(patch)
        if not patch.forced:
            self.machine.modules.put(patch.module)

    def free_replaced_patches(self, new: KlpPatch) -> None:
        for old in list(self.patches):
            if old is new:
                break
            self.free_patch(old)

    # ------------------------------------------------------------ modules
    def module_coming(self, ctx: "ServiceContext", mod: Module) -> int:
        """klp_module_coming: patch a loading module before its init runs;
        0, or -errno to refuse the module."""
        if mod.name == "vmlinux":
            self.log("vmlinux.ko: invalid module name", PR_ERR)
            return -errno.EINVAL
        self.lock(ctx)
        try:
            mod.data["klp_alive"] = True
            for patch in list(self.patches):
                obj = next((o for o in patch.objs if o.name == mod.name), None)
                if obj is None:
                    continue
                ret = self._apply_to_coming(ctx, patch, obj, mod)
                if ret:
                    self.log(f"patch '{patch.name}' failed for module '{mod.name}', refusing to load "
                             f"module '{mod.name}'", PR_WARN)
                    mod.data["klp_alive"] = False
                    obj.mod = None
                    self.mirror_obj(obj)
                    self.cleanup_module_patches(ctx, mod, limit=patch)
                    return ret
            return 0
        finally:
            self.unlock()

    def _apply_to_coming(self, ctx: "ServiceContext", patch: KlpPatch, obj: KlpObject, mod: Module) -> int:
        obj.mod = mod
        self.mirror_obj(obj)                # the callbacks read obj->mod
        try:
            self.init_object_loaded(patch, obj)
        except KlpError as err:
            self.log(f"failed to initialize patch '{patch.name}' for module '{mod.name}' (-{err.errno})",
                     PR_WARN)
            return -err.errno
        if not self._active(patch):
            return 0
        self.log(f"applying patch '{patch.name}' to loading module '{mod.name}'")
        ret = self.pre_patch(ctx, obj)
        if ret:
            self.log(f"pre-patch callback failed for object '{obj.name}'", PR_WARN)
            return ret
        ret = self.patch_object(obj)
        if ret:
            self.log(f"failed to apply patch '{patch.name}' to module '{mod.name}' ({ret})", PR_WARN)
            self.post_unpatch(ctx, obj)
            return ret
        # a patch in transition runs post_patch when the transition completes
        if patch is not self.transition.patch:
            self.post_patch(ctx, obj)
        return 0

    def module_going(self, ctx: "ServiceContext", mod: Module) -> None:
        """klp_module_going: after the module's exit (or its failed init)."""
        self.lock(ctx)
        try:
            mod.data["klp_alive"] = False
            self.cleanup_module_patches(ctx, mod, limit=None)
        finally:
            self.unlock()

    def cleanup_module_patches(self, ctx: "ServiceContext", mod: Module, limit: KlpPatch | None) -> None:
        """klp_cleanup_module_patches_limited: revert `mod`'s object in every
        patch before `limit` (all of them when None)."""
        for patch in list(self.patches):
            if patch is limit:
                break
            obj = next((o for o in patch.objs if o.name == mod.name), None)
            if obj is None:
                continue
            if self._active(patch):
                # a patch in transition has not run post_patch on it either
                if patch is not self.transition.patch:
                    self.pre_unpatch(ctx, obj)
                self.log(f"reverting patch '{patch.name}' on unloading module '{mod.name}'")
                self.unpatch_object(obj)
                self.post_unpatch(ctx, obj)
            klp_relocs.write_object_relocs(self.machine, patch, obj, apply=False)
            self._free_object_loaded(obj)

    def _active(self, patch: KlpPatch) -> bool:
        """Patched into loading modules: enabled or in transition (before 5.1 a
        registered patch may be neither)."""
        return patch.enabled or patch is self.transition.patch

    def _free_object_loaded(self, obj: KlpObject) -> None:
        obj.mod = None
        for func in obj.funcs:
            func.old_func = 0
            if func.nop:
                func.new_func = 0
            self.mirror_func(func)
        self.mirror_obj(obj)

    # ------------------------------------------------------------ sysfs
    def _register_patch_sysfs(self, patch: KlpPatch) -> None:
        """The patch's attributes, in its directory (init_patch's kobject_add)."""
        vfs, root, p = self.machine.vfs, f"{SYSFS}/{patch.name}", self.profile
        vfs.register(f"{root}/enabled", lambda: f"{int(patch.enabled)}\n",
                     lambda ctx, text: self._enabled_store(ctx, patch, text), 0o644)
        if p.consistency_model:
            vfs.register(f"{root}/transition", lambda: f"{int(self.transition.patch is patch)}\n", None, 0o444)
        if p.signal_attr:
            vfs.register(f"{root}/signal", None, lambda ctx, text: self._signal_store(ctx, patch, text), 0o200)
        if p.force_attr:
            vfs.register(f"{root}/force", None, lambda ctx, text: self._force_store(ctx, patch, text), 0o200)
        if p.replace_attr:
            vfs.register(f"{root}/replace", lambda: f"{int(patch.replace)}\n", None, 0o444)
        if p.stack_order_attr:
            vfs.register(f"{root}/stack_order", lambda: f"{self._stack_order(patch)}\n", None, 0o444)

    def _register_object_sysfs(self, patch: KlpPatch, obj: KlpObject) -> None:
        """The object's kobject: a name already taken is -EEXIST."""
        vfs = self.machine.vfs
        root = f"{SYSFS}/{patch.name}/{obj.display_name}"
        self._kobject_add(root)
        if self.profile.obj_patched_attr:
            vfs.register(f"{root}/patched", lambda: f"{int(obj.patched)}\n", None, 0o444)

    def init_func(self, patch: KlpPatch, obj: KlpObject, func: KlpFunc) -> None:
        """klp_init_func: -EINVAL (no message) for a func without old_name,
        without new_func (a nop gets it later) or whose old_name is
        KSYM_NAME_LEN bytes or more; then its kobject "old_name,sympos", a
        name already taken being -EEXIST (two funcs of one function, or a
        replace's nop beside a func that names the same function with
        old_sympos 1 instead of 0)."""
        if func.old_name is None or (not func.new_func and not func.nop) or len(func.old_name) >= KSYM_NAME_LEN:
            raise KlpError(errno.EINVAL)
        self._kobject_add(f"{SYSFS}/{patch.name}/{obj.display_name}/{func.sysfs_name}")

    def _kobject_add(self, path: str) -> None:
        """kobject_add() of the directory PATH: a name already taken is
        -EEXIST after sysfs's warning (fs/sysfs/dir.c sysfs_warn_dup, whose
        dump_stack() is left out here) and kobject_add_internal's error."""
        vfs = self.machine.vfs
        if vfs.is_dir(path):
            self.machine.log(f"sysfs: cannot create duplicate filename '{path.removeprefix('/sys')}'", PR_WARN)
            self.machine.log(f"kobject: kobject_add_internal failed for {path.rsplit('/', 1)[1]} with -EEXIST, "
                             "don't try to register things with the same name in the same directory.", PR_ERR)
            raise KlpError(errno.EEXIST)
        vfs.register_dir(path)

    def _refresh_patch_sysfs(self, patch: KlpPatch) -> None:
        vfs = self.machine.vfs
        for name in vfs.listdir(f"{SYSFS}/{patch.name}"):
            if vfs.is_dir(f"{SYSFS}/{patch.name}/{name}") and name not in {o.display_name for o in patch.objs}:
                vfs.unregister_tree(f"{SYSFS}/{patch.name}/{name}")
        for obj in patch.objs:
            root = f"{SYSFS}/{patch.name}/{obj.display_name}"
            keep = {f.sysfs_name for f in obj.funcs} | {"patched"}
            for name in vfs.listdir(root):
                if name not in keep:
                    vfs.unregister_tree(f"{root}/{name}")

    def _stack_order(self, patch: KlpPatch) -> int:
        return self.patches.index(patch) + 1 if patch in self.patches else len(self.patches)

    def _enabled_store(self, ctx: "ServiceContext", patch: KlpPatch, text: str) -> int:
        value = _kstrtobool(text, self.profile)
        if value is None:
            return -errno.EINVAL
        self.lock(ctx)
        try:
            if value == patch.enabled:
                return -errno.EINVAL
            if patch is self.transition.patch:
                self.transition.reverse()
            elif not value:
                ret = self.disable_patch(ctx, patch)
                if ret:
                    return ret
            elif self.profile.register_api:      # re-enabling: before 5.1 only
                ret = self._enable(ctx, patch)
                if ret:
                    return ret
            else:
                return -errno.EINVAL
            return len(text)
        finally:
            self.unlock()

    def _force_store(self, ctx: "ServiceContext", patch: KlpPatch, text: str) -> int:
        value = _kstrtobool(text, self.profile)
        if value is None:
            return -errno.EINVAL
        if not value:
            return len(text)
        self.lock(ctx)
        try:
            if patch is not self.transition.patch:
                return -errno.EINVAL
            self.transition.force()
            return len(text)
        finally:
            self.unlock()

    def _signal_store(self, ctx: "ServiceContext", patch: KlpPatch, text: str) -> int:
        """signal_store (4.15-5.0): fake-signal the tasks the transition waits for."""
        value = _kstrtobool(text, self.profile)
        if value is None:
            return -errno.EINVAL
        if not value:
            return len(text)
        self.lock(ctx)
        try:
            if patch is not self.transition.patch:
                return -errno.EINVAL
            self.transition.signal(ctx)
            return len(text)
        finally:
            self.unlock()

    def _patch_state_node(self, match) -> FileNode | None:
        pid = int(match.group(1))
        task = find_task(self.machine.prog, pid)
        return None if task is None else FileNode(lambda: f"{task.patch_state}\n", None, 0o400)

    # ------------------------------------------------------------ the transition work
    def transition_work(self, ctx: "ServiceContext") -> None:
        """klp_transition_work_fn."""
        self.lock(ctx)
        try:
            if self.transition.patch is not None:
                self.transition.try_complete(ctx)
        finally:
            self.unlock()

    # ------------------------------------------------------------ hypercalls
    @hypercall("HC_KLP_ENABLE", blocking=True)
    def hc_klp_enable(self, ctx: "ServiceContext", patch: int, *_: int) -> int:
        """int klp_enable_patch(struct klp_patch *patch)"""
        return self.enable_patch(ctx, patch)

    @hypercall("HC_KLP_REGISTER", blocking=True)
    def hc_klp_register(self, ctx: "ServiceContext", patch: int, *_: int) -> int:
        """int klp_register_patch(struct klp_patch *patch)"""
        return self.register_patch(ctx, patch)

    @hypercall("HC_KLP_UNREGISTER", blocking=True)
    def hc_klp_unregister(self, ctx: "ServiceContext", patch: int, *_: int) -> int:
        """int klp_unregister_patch(struct klp_patch *patch)"""
        return self.unregister_patch(ctx, patch)

    @hypercall("HC_KLP_DISABLE", blocking=True)
    def hc_klp_disable(self, ctx: "ServiceContext", patch: int, *_: int) -> int:
        """int klp_disable_patch(struct klp_patch *patch)"""
        return self.disable_registered(ctx, patch)

    @hypercall("HC_KLP_WORK", blocking=True)
    def hc_klp_work(self, ctx: "ServiceContext", *_: int) -> int:
        """void klp_transition_work_fn(struct work_struct *work)"""
        self.transition_work(ctx)
        return 0

    @hypercall("HC_KLP_TRY_SWITCH", blocking=True)
    def hc_klp_try_switch(self, ctx: "ServiceContext", *_: int) -> int:
        """void __klp_sched_try_switch(void): switch current if its stack allows.
        As in the kernel, without klp_mutex: only a pending current is touched."""
        if self.transition.patch is not None:
            task = TaskView(self.machine.prog, ctx.task)
            if task.patch_pending:
                self.transition.try_switch_task(ctx, task)
        return 0

    @hypercall("HC_KLP_PREV_STATE")
    def hc_klp_prev_state(self, cpu: "Cpu", state_id: int, *_: int) -> int:
        """struct klp_state *klp_get_prev_state(unsigned long id): the state, 0, or -EINVAL"""
        found = prev_state(self.patches, self.transition.patch, state_id)
        return -errno.EINVAL if found is None else found


def _kstrtobool(text: str, profile: Profile) -> bool | None:
    """kstrtobool of a sysfs write (emu.fs.vfs hands over the bytes as
    latin-1), by the profile's rules: its value, or None for the kernel's
    -EINVAL."""
    try:
        return kstrtobool(text.encode("latin-1"), profile.kstrtobool_true_false)
    except ParseError:
        return None


def core_of(machine: "Machine") -> Livepatch | None:
    core = machine.extensions.get("klp")
    return core if isinstance(core, Livepatch) else None
