"""Building modules for the guest: gcc with the guest kernel's flags, and
klp-convert (KLP_MODULE_RELOC references become .klp.rela sections)."""
