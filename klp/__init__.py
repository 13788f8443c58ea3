"""The livepatch core and the user surfaces (CLI, scenarios) on top of emu/.

`Livepatch` is imported on first use, so that loading the pytest plugin
(klp.pytest_plugin, which every pytest run in this environment loads) does
not import the emulator until a test asks for a machine.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import Livepatch

__all__ = ["Livepatch"]


def __getattr__(name: str) -> object:
    if name == "Livepatch":
        from .core import Livepatch
        return Livepatch
    raise AttributeError(f"module 'klp' has no attribute {name!r}")
