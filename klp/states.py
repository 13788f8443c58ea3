"""System states (kernel/livepatch/state.c), the part that needs klp_patches.

klp_get_state() is guest code (it only walks patch->states); the previous
state needs klp_patches and the transition patch, which the core keeps, so
the guest's klp_get_prev_state() asks the core (its HC_KLP_PREV_STATE),
which answers with prev_state().
"""
from __future__ import annotations

from klp.objects import KlpPatch


def prev_state(patches: list[KlpPatch], transition_patch: KlpPatch | None, state_id: int) -> int | None:
    """The guest struct klp_state of the newest patch before the transition
    patch in klp_patches that has `state_id`: its address, 0 when none, None
    when no transition runs (the kernel WARNs and returns NULL then)."""
    if transition_patch is None:
        return None
    last = 0
    for patch in patches:
        if patch is transition_patch:
            break
        last = next((s.struct for s in patch.states if s.id == state_id), last)
    return last
