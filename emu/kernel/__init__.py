"""The kernel services the machine offers: tasks, the log, modules, kallsyms,
hypercalls and Python->guest calls, oops reports, the shell task driver."""
