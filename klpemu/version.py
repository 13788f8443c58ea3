"""klpemu's version, as installed (cheap: no machine import)."""
from __future__ import annotations


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("klpemu")
    except PackageNotFoundError:                   # run from a checkout that is not installed
        return "unknown"
