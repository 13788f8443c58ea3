"""kallsyms: symbolisation, and duplicate names in the kernel's sympos order."""
from emu import Machine
from emu.elf.image import Symbol
from emu.kernel.kallsyms import Kallsyms


def test_symbolize_like_the_kernel() -> None:
    m = Machine(cpus=1)
    sched = m.kernel.get_symbol("schedule")
    assert m.symbolize(sched.address + 0x12) == f"schedule+0x12/{sched.size:#x}"
    # a return address just past a noreturn call belongs to the caller
    end = sched.address + sched.size
    assert m.kallsyms.symbolize_return(end) == f"schedule+{sched.size:#x}/{sched.size:#x}"
    assert m.symbolize(0x1000) == "0x1000"


def test_duplicate_names_are_numbered_by_address_within_their_object() -> None:
    ks = Kallsyms()
    ks.add([Symbol("show", 0x3000, 0x10, True, False), Symbol("show", 0x1000, 0x10, True, False),
            Symbol("only", 0x2000, 0x10, True, True)])
    ks.add([Symbol("show", 0x9000, 0x10, True, False)], module="mod")
    assert ks.count("show") == 2
    assert ks.find("show") is None                         # ambiguous without sympos
    assert ks.find("show", sympos=1).address == 0x1000
    assert ks.find("show", sympos=2).address == 0x3000
    assert ks.find("show", sympos=3) is None
    assert ks.find("only").address == 0x2000
    assert ks.find("show", module="mod").address == 0x9000
    assert str(ks.lookup(0x9004)) == "show+0x4/0x10 [mod]"
    ks.remove_module("mod")
    assert ks.lookup(0x9004) is None and ks.count("show", "mod") == 0


def test_sympos_is_the_position_find_resolves() -> None:
    """klp_find_object_symbol: sympos 0 names a unique symbol; otherwise the
    sympos-th symbol of that name in the object, in kallsyms order."""
    ks = Kallsyms()
    ks.add([Symbol("show", 0x3000, 0x10, True, False), Symbol("show", 0x1000, 0x10, True, False),
            Symbol("only", 0x2000, 0x10, True, True)])
    ks.add([Symbol("show", 0x9000, 0x10, True, False)], module="mod")
    assert ks.sympos("show", 0x1000) == 1 and ks.sympos("show", 0x3000) == 2
    assert ks.sympos("only", 0x2000) == 0
    assert ks.sympos("show", 0x9000, "mod") == 0           # unique in its own object
    assert ks.sympos("show", 0x2000) is None and ks.sympos("none", 0x1000) is None
    for address in (0x1000, 0x3000):
        assert ks.find("show", sympos=ks.sympos("show", address)).address == address


def test_sympos_of_every_vmlinux_function_resolves_back_to_it() -> None:
    m = Machine(cpus=1)
    for sym in m.kallsyms.functions():
        pos = m.kallsyms.sympos(sym.name, sym.address)
        assert m.kallsyms.find(sym.name, sympos=pos) == sym


def test_removing_a_module_leaves_the_table_a_fresh_one_would_have() -> None:
    """A module's symbols are cut out as one run of the table; modules whose
    symbols interleave (no run) are removed entry by entry, to the same end."""
    def table(ks: Kallsyms) -> list[tuple[int, str, str | None]]:
        return [(sym.address, sym.name, module) for sym, module in ks._entries]

    def sym(name: str, address: int) -> Symbol:
        return Symbol(name, address, 0x10, True, False)

    ks, fresh = Kallsyms(), Kallsyms()
    for k in (ks, fresh):
        k.add([sym("show", 0x1000), sym("other", 0x2000)])
    ks.add([sym("show", 0x9000), sym("a", 0x9100), sym("a", 0x9200)], module="block")
    ks.add([sym("b", 0x5000), sym("b", 0x7000)], module="spread")
    ks.add([sym("c", 0x6000), sym("show", 0x2000)], module="between")     # one at vmlinux's address
    fresh.add([sym("b", 0x5000), sym("b", 0x7000)], module="spread")
    ks.remove_module("block")
    ks.remove_module("between")
    assert table(ks) == table(fresh)
    assert ks.find("a", module="block") is None and ks.find("show", module="between") is None
    assert [s.address for s, _ in ks._by_name["show"]] == [0x1000]
    ks.remove_module("spread")
    fresh.remove_module("spread")
    assert table(ks) == table(fresh) == [(0x1000, "show", None), (0x2000, "other", None)]
