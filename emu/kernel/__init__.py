"""The kernel as the emulator sees it: the Program (memory, image, offsets,
kallsyms), tasks, the log, hypercalls and Python->guest calls, text_poke,
the kernel's own services and the guest shell task driver. Everything above
(the unwinder, the VFS, ftrace, modules) builds on these."""
