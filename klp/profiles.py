"""Kernel version profiles: which livepatch semantics the core reproduces.

A profile is a set of feature switches named after the kernel release that
introduced the behaviour (klp-spec.md §9; the kernel's history is the
authority). The core reads the switches where behaviour differs, so that no
version comparison is scattered through it. The guest image is the same for
every profile; what a kernel did not export (the pre-5.1 register API on
newer kernels, shadow variables before 4.13, states before 5.5) is withheld
from the module loader, so a module using it fails to load with "Unknown
symbol", as it did; a rule the guest's own code follows (kstrtobool's) is a
guest variable the profile sets (ModuleManager.kstrtobool_true_false).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from klp.errors import LivepatchError

REGISTER_API = ("klp_register_patch", "klp_unregister_patch", "klp_disable_patch")
SHADOW_API = ("klp_shadow_get", "klp_shadow_alloc", "klp_shadow_get_or_alloc",
              "klp_shadow_free", "klp_shadow_free_all")
STATE_API = ("klp_get_state", "klp_get_prev_state")


@dataclass(frozen=True)
class Profile:
    name: str
    consistency_model: bool   # 4.12: per-task patch_state, `transition`, /proc/<pid>/patch_state
    immediate_flag: bool      # 4.12-4.15: klp_patch/klp_func.immediate
    callbacks: bool           # 4.15: pre/post (un)patch callbacks
    signal_attr: bool         # 4.15-5.0: sysfs `signal` (a notice on every use)
    force_attr: bool          # 4.15: sysfs `force`
    register_api: bool        # up to 5.0: register, enable, disable, unregister; patches
                              # stay registered (and re-enablable) when disabled
    stacking_rule: bool       # up to 5.0: enable only the first disabled, disable only the last enabled
    atomic_replace: bool      # 5.1: klp_patch.replace, nops
    auto_signals: bool        # 5.1: fake signals every 15th retry, a notice the first time
    shadow_vars: bool         # 4.13: klp_shadow_*
    states: bool              # 5.5: klp_state, klp_get_(prev_)state, the compatibility check
    permanent_ftrace_ops: bool  # 5.5: klp's ftrace ops are PERMANENT: kernel.ftrace_enabled=0 is
                                # refused (-EBUSY) while a patch is registered; before, it was
                                # accepted and silently took the patches out of effect
    obj_patched_attr: bool    # 6.1: <obj>/patched
    sched_try_switch: bool    # 6.4: cond_resched() switches a pending task
    replace_attr: bool        # 6.11: sysfs `replace`
    stack_order_attr: bool    # 6.13: sysfs `stack_order`
    kstrtobool_true_false: bool  # 5.19: kstrtobool takes t/T and f/F (the sysfs
                                 # files above, module bool parameters)

    @property
    def withheld_exports(self) -> frozenset[str]:
        """The livepatch API this kernel does not export."""
        missing = [] if self.register_api else list(REGISTER_API)
        missing += [] if self.shadow_vars else SHADOW_API
        missing += [] if self.states else STATE_API
        return frozenset(missing)


_V4_11 = Profile(
    name="4.11", consistency_model=False, immediate_flag=False, callbacks=False,
    signal_attr=False, force_attr=False, register_api=True, stacking_rule=True,
    atomic_replace=False, auto_signals=False, shadow_vars=False, states=False,
    permanent_ftrace_ops=False, obj_patched_attr=False, sched_try_switch=False,
    replace_attr=False, stack_order_attr=False, kstrtobool_true_false=False)
_V4_12 = replace(_V4_11, name="4.12", consistency_model=True, immediate_flag=True)
_V4_15 = replace(_V4_12, name="4.15", callbacks=True, signal_attr=True, force_attr=True,
                 shadow_vars=True)
_V5_1 = replace(_V4_15, name="5.1", immediate_flag=False, signal_attr=False, register_api=False,
                stacking_rule=False, atomic_replace=True, auto_signals=True)
_CURRENT = replace(_V5_1, name="6.13", states=True, permanent_ftrace_ops=True, obj_patched_attr=True,
                   sched_try_switch=True, replace_attr=True, stack_order_attr=True,
                   kstrtobool_true_false=True)

PROFILES: dict[str, Profile] = {p.name: p for p in (_V4_11, _V4_12, _V4_15, _V5_1, _CURRENT)}
DEFAULT = _CURRENT.name


def get_profile(name: str | None) -> Profile:
    """The profile called `name` ("current" or None: the newest)."""
    if name is None or name == "current":
        return PROFILES[DEFAULT]
    try:
        return PROFILES[name]
    except KeyError:
        raise LivepatchError(f"unknown klp version {name!r} (known: {', '.join(PROFILES)}, current)") from None
