"""One error root for the user surfaces: every failure klpemu/ raises for a
bad input (a scenario, a build, a conversion) is a KlpemuError."""
from __future__ import annotations


class KlpemuError(Exception):
    """Root of every error raised by klpemu/."""
