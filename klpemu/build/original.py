"""The original build of the guest kernel, made once per flavour and kept
(cached by the hash of sources, flags, gcc and image): the sources as they
boot, built twice, once with the image's own flags to check that they give
back the image's code, once with function and data sections for the diff."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from klpemu.build.image_check import check_reproduces_image, check_same_functions
from klpemu.build.kernel_tree import (Flavour, OriginalBuild, build_flags, cache_key, cache_root,
                                      compile_units, copy_sources, kernel_units, object_path)


def original_build(fl: Flavour, cache_dir: Path | None = None) -> tuple[OriginalBuild, bool]:
    """The original build of `fl` and whether it came from the cache; made
    (and checked against the image) when it is not there yet."""
    root = cache_root(cache_dir)
    path = root / "klp-build" / f"{fl.name}-{cache_key(fl)[:24]}"
    if (path / "complete").exists():
        return OriginalBuild(fl, path), True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    try:
        copy_sources(tmp / "src")
        units = kernel_units(tmp / "src")
        compile_units(tmp / "src", units, list(fl.cflags), tmp / "plain")
        plain = {u: object_path(tmp / "plain", u) for u in units}
        check_reproduces_image(fl, plain)
        compile_units(tmp / "src", units, build_flags(fl), tmp / "obj", deps=True)
        check_same_functions(plain, {u: object_path(tmp / "obj", u) for u in units})
        shutil.rmtree(tmp / "plain")
        (tmp / "complete").write_text(fl.name + "\n")
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / "complete").exists():      # not another build's: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return OriginalBuild(fl, path), False
