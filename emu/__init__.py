"""The machine: memory, CPUs, ELF images, hypercalls, tasks, ftrace, unwinder.

Only this package touches unicorn and capstone. It knows
nothing about livepatching; klp/ builds on the services it offers.
"""
from emu.errors import EmuError, GuestCallError, GuestFault, GuestHang, ImageError, MachineCrashed, ShellError
from emu.machine import Machine, MachineConfig

__all__ = ["EmuError", "ImageError", "GuestFault", "GuestHang", "MachineCrashed",
           "GuestCallError", "ShellError", "Machine", "MachineConfig"]
