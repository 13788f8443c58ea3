"""The livepatch core (kernel/livepatch/): patches, func_stack dispatch,
the transition, callbacks, atomic replace, shadow variables, system states.

`Livepatch` is imported on first use, so that importing klp (as the pytest
plugin's fixtures do) does not import the emulator until it is needed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from klp.core import Livepatch

__all__ = ["Livepatch"]


def __getattr__(name: str) -> object:
    if name == "Livepatch":
        from klp.core import Livepatch
        return Livepatch
    raise AttributeError(f"module 'klp' has no attribute {name!r}")
