"""The ELF64 x86-64 structures and constants klpemu reads and writes
(include/uapi/linux/elf.h, the System V gABI), defined once for the image
parser, the module loader and the livepatch build."""
from __future__ import annotations

import struct

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")       # Elf64_Ehdr, 64 bytes
PHDR = struct.Struct("<IIQQQQQQ")               # Elf64_Phdr, 56 bytes
SHDR = struct.Struct("<IIQQQQIIQQ")             # Elf64_Shdr, 64 bytes
SYM = struct.Struct("<IBBHQQ")                  # Elf64_Sym, 24 bytes
RELA = struct.Struct("<QQq")                    # Elf64_Rela, 24 bytes

ELFMAG = b"\x7fELF"
ELFCLASS64, ELFDATA2LSB, EV_CURRENT = 2, 1, 1     # e_ident[EI_CLASS], [EI_DATA], [EI_VERSION]
ET_REL, ET_EXEC = 1, 2
EM_X86_64 = 62
PT_LOAD = 1
SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA = 0, 1, 2, 3, 4
SHT_NOBITS, SHT_REL, SHT_GROUP, SHT_SYMTAB_SHNDX = 8, 9, 17, 18
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHF_STRINGS, SHF_INFO_LINK = 0x20, 0x40
SHF_RELA_LIVEPATCH = 0x00100000
SHN_UNDEF, SHN_LORESERVE = 0, 0xFF00
SHN_LIVEPATCH, SHN_ABS, SHN_COMMON = 0xFF20, 0xFFF1, 0xFFF2
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
