"""The wheel carries every package of the source tree (a package missing
from pyproject's list installs nothing and breaks `klpemu` outside the
checkout, where the test suite cannot see it)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_in_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("emu", "klp", "klpemu")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found - listed == set(), "packages missing from pyproject.toml"
    for name, folder in config["package-dir"].items():
        assert name in listed and (ROOT / folder).is_dir()
