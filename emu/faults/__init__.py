"""What happens when the guest goes wrong: oops reports in the kernel's
format (a fault kills the task or panics the machine) and the lockup
watchdog."""
