"""ELF images: the vmlinux/user images (segments, symbols, sections), the
ET_REL module loader with its validated parser, and the x86-64 relocations."""
