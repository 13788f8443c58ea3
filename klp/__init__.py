"""The livepatch core and the user surfaces (CLI, scenarios) on top of emu/."""
from .core import Livepatch

__all__ = ["Livepatch"]
