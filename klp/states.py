"""System states (kernel/livepatch/state.c), the part that needs the core.

klp_get_state() is guest code (it only walks patch->states); the previous
state needs klp_patches and the transition patch, which the core keeps, so
the guest's klp_get_prev_state() asks here.
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from emu.kernel.hypercalls import hypercall
from klp.core import core_of

if TYPE_CHECKING:
    from emu import Machine
    from emu.arch.cpu import Cpu
    from klp.core import Livepatch


def prev_state(core: "Livepatch", state_id: int) -> int | None:
    """The guest struct klp_state of the newest patch before the transition
    patch in klp_patches that has `state_id`: its address, 0 when none, None
    when no transition runs (the kernel WARNs and returns NULL then)."""
    transition_patch = core.transition.patch
    if transition_patch is None:
        return None
    last = 0
    for patch in core.patches:
        if patch is transition_patch:
            break
        last = next((s.struct for s in patch.states if s.id == state_id), last)
    return last


@hypercall("HC_KLP_PREV_STATE")
def hc_klp_prev_state(m: "Machine", cpu: "Cpu", state_id: int, *_: int) -> int:
    """struct klp_state *klp_get_prev_state(unsigned long id): the state, 0, or -EINVAL"""
    core = core_of(m)
    found = None if core is None else prev_state(core, state_id)
    return -errno.EINVAL if found is None else found
