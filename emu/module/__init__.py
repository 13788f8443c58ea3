"""The kernel's module subsystem (kernel/module/): init_module and
delete_module with the kernel's order of events, parameters, /sys/module,
references and the notifier chain. The ELF side is emu.elf.module_loader."""
