"""The CPU side of the machine: the Unicorn engine (the only module that
imports unicorn and capstone for execution), a CPU with its interrupts and
syscall entry, guest RAM and the page tables."""
