"""The native part of klpemu: a small C library loaded with ctypes (not a
Python extension: it has no PyInit and is never imported). Optional, so an
install without a C compiler still works and uses the pure-Python fallback
(emu/arch/native/__init__.py)."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("emu.arch.native._native", ["emu/arch/native/native.c"],
                             extra_compile_args=["-O2"], optional=True)])
