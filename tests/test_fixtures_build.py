"""The committed guest images are exactly what the sources build to: both
kernels, the user program and every module (the legacy kernel's DWARF maps
the checkout's path away, so a clone anywhere builds the same bytes)."""
import shutil
import subprocess
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None, reason="needs gcc and make")
def test_committed_images_match_a_fresh_build(tmp_path: Path) -> None:
    subprocess.run(["make", "-s", "-C", str(FIXTURES), f"BUILD={tmp_path}"], check=True,
                   capture_output=True, text=True)
    modules = sorted(p.relative_to(FIXTURES / "build") for p in (FIXTURES / "build" / "modules").glob("*.ko"))
    assert modules
    for name in ("vmlinux-modern", "vmlinux-legacy", "user.elf", *map(str, modules)):
        assert (tmp_path / name).read_bytes() == (FIXTURES / "build" / name).read_bytes(), \
            f"fixtures/build/{name} is stale: run make -C fixtures and commit the images"
