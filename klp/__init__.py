"""The livepatch core and the user surfaces (CLI, scenarios) on top of emu/."""
from . import states  # noqa: F401  (registers the klp_get_prev_state hypercall)
from .core import Livepatch

__all__ = ["Livepatch"]
