# PYTHON_ARGCOMPLETE_OK
"""The `klpemu` console script. `klpemu --version` answers before anything
heavy is imported (the machine, Unicorn, Capstone: ~0.3 s that every other
command needs); everything else goes to klpemu.cli."""
from __future__ import annotations

import sys

from klpemu.version import package_version


def main() -> int:
    if sys.argv[1:] == ["--version"]:
        print(f"klpemu {package_version()}")
        return 0
    from klpemu.cli import main as cli_main
    return cli_main()
