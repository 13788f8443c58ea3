"""CFA tables from disassembly, checked against gcc's own `.eh_frame`.

Rule checked (DESIGN.md, "The unwinder"): for every function of a built image that
has an FDE, at every instruction the tracker reaches, the CFA (register and
offset) equals the `.eh_frame` row, and so does the save slot of the caller's rbp.
Real gcc output only: a set of kernel-style functions compiled here with the
kernel's flags, and `fixtures/build/vmlinux-*` when those exist.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from elftools.dwarf.callframe import FDE
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from emu.errors import ImageError
from emu.unwind import HINTS_SECTION, Hint, HintType, SpReg, build_tables, parse_hints, tables_from_elf

ROOT = Path(__file__).resolve().parents[1]
KERNEL_CFLAGS = (
    "-O2 -ffreestanding -fno-pic -fno-pie -mcmodel=kernel -mno-red-zone -mno-sse "
    "-mno-mmx -mno-avx -pg -mfentry -mrecord-mcount -fno-omit-frame-pointer "
    "-fno-jump-tables -fcf-protection=none -fasynchronous-unwind-tables "
    "-fno-stack-protector"
).split()
TEXT_BASE = 0xFFFFFFFF81000000

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")

# --- sources -----------------------------------------------------------------

HANDWRITTEN_C = r"""
typedef unsigned long size_t;
struct list_head { struct list_head *next, *prev; };
struct item { struct list_head node; long key; char name[24]; };
struct big { long v[12]; };

extern long ext_l(long);
extern int ext_i(int);
extern void *ext_p(void *);
extern long ext8(long, long, long, long, long, long, long, long);
extern void panic_fn(const char *) __attribute__((noreturn));
extern int printk_like(const char *fmt, ...);
extern long jiffies_like;

static inline unsigned long irq_save(void)
{
	unsigned long flags;
	asm volatile("pushfq; pop %0; cli" : "=r"(flags) :: "memory");
	return flags;
}
static inline void irq_restore(unsigned long flags)
{
	asm volatile("push %0; popfq" :: "r"(flags) : "memory", "cc");
}

long locked_counter(long *p)
{
	unsigned long f = irq_save();
	long v = ++*p;
	irq_restore(f);
	return v;
}

long list_sum(struct list_head *head)
{
	long s = 0;
	for (struct list_head *n = head->next; n != head; n = n->next) {
		struct item *it = (struct item *)n;
		if (it->key < 0)
			return ext_l(it->key);
		s += it->key + ext_i(it->name[0]);
	}
	return s;
}

void *copy_bytes(void *dst, const void *src, size_t n)
{
	char *d = dst; const char *s = src;
	while (n--)
		*d++ = *s++;
	return dst;
}

long fib(long n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

int tail_only(int x) { return ext_i(x + 3); }

long leaf_noframe(long a, long b) { return a * b + (a >> 3); }

long many_args(long a, long b)
{
	return ext8(a, b, a + b, a - b, a * b, a ^ b, a | b, a & b) + ext8(b, a, 1, 2, 3, 4, 5, 6);
}

long aligned_local(long x)
{
	long buf[8] __attribute__((aligned(64)));
	for (int i = 0; i < 8; i++)
		buf[i] = x + i;
	ext_p(buf);
	return buf[x & 7];
}

long vla_user(int n)
{
	long v[n + 1];
	for (int i = 0; i <= n; i++)
		v[i] = ext_l(i);
	ext_p(v);
	return v[n / 2];
}

long checked_div(long a, long b)
{
	if (b == 0)
		panic_fn("division by zero");
	return a / b;
}

int classify(int c)
{
	switch (c) {
	case 0: return ext_i(10);
	case 1: return ext_i(11) + 2;
	case 2: case 3: return 7;
	case 17: return ext_i(c) * 3;
	case 40: panic_fn("forty");
	default: return -1;
	}
}

struct big make_big(long seed)
{
	struct big b;
	for (int i = 0; i < 12; i++)
		b.v[i] = ext_l(seed + i);
	return b;
}

long use_big(long seed)
{
	struct big b = make_big(seed);
	return b.v[3] + b.v[11];
}

long callee_saved_heavy(long a, long b, long c)
{
	long x1 = ext_l(a), x2 = ext_l(b), x3 = ext_l(c), x4 = ext_l(a + b);
	long x5 = ext_l(b + c), x6 = ext_l(x1 + x2);
	return ext_l(x1 * x2 + x3 * x4 + x5 * x6) + x1 + x6;
}

int log_values(int a, long b)
{
	if (a < 0)
		return 0;
	return printk_like("a=%d b=%ld j=%ld\n", a, b, jiffies_like);
}

int vprint_count(const char *fmt, ...)
{
	__builtin_va_list ap;
	int n = 0;
	__builtin_va_start(ap, fmt);
	while (*fmt)
		if (*fmt++ == '%')
			n += __builtin_va_arg(ap, int);
	__builtin_va_end(ap);
	return n;
}

static __attribute__((noinline)) long helper_static(long x) { return ext_l(x) * 2 + 1; }

long uses_static(long x) { return helper_static(x) + helper_static(x + 1); }

long deep_loop(long n)
{
	long acc = 0;
	for (long i = 0; i < n; i++) {
		for (long j = 0; j < i; j++) {
			if ((i ^ j) == 13)
				continue;
			acc += ext_l(i * j);
			if (acc > 100000)
				goto out;
		}
	}
out:
	return acc;
}
"""

STUBS_C = r"""
long jiffies_like;
long ext_l(long x) { return x + 1; }
int ext_i(int x) { return x - 1; }
void *ext_p(void *p) { return p; }
long ext8(long a, long b, long c, long d, long e, long f, long g, long h)
{ return a + b + c + d + e + f + g + h; }
void panic_fn(const char *m) { (void)m; for (;;) ; }
int printk_like(const char *fmt, ...) { return fmt[0]; }
"""

HINTS_ASM = r"""
	.intel_syntax noprefix
.macro HINT type, reg=0, off=0
.Lhint_\@:
	.pushsection .klpemu_unwind_hints, "a"
	.quad .Lhint_\@
	.short \off
	.byte \reg
	.byte \type
	.long 0
	.popsection
.endm
	.text
	.globl __fentry__
	.type __fentry__, @function
__fentry__:
	ret
	.size __fentry__, .-__fentry__

	.globl switch_asm, switch_asm_resume
	.type switch_asm, @function
switch_asm:
	push rbp
	push rbx
	push r12
	push r13
	push r14
	push r15
	mov [rdi], rsp
	mov rsp, [rsi]
switch_asm_resume:
	HINT 0, 0, 56
	pop r15
	pop r14
	pop r13
	pop r12
	pop rbx
	pop rbp
	ret
	.size switch_asm, .-switch_asm

	.globl bad_asm, bad_asm_after
	.type bad_asm, @function
bad_asm:
	push rbp
	and rsp, -16
bad_asm_after:
	call ext_i
	ret
	.size bad_asm, .-bad_asm

	.globl irq_asm, irq_asm_regs, irq_asm_popped
	.type irq_asm, @function
irq_asm:
	HINT 2
	push -1
	push rdi
	push rsi
	push rdx
	push rcx
	push rax
	push r8
	push r9
	push r10
	push r11
	push rbx
	push rbp
	push r12
	push r13
	push r14
	push r15
irq_asm_regs:
	HINT 1
	mov rdi, rsp
	call ext_p
	pop r15
	pop r14
irq_asm_popped:
	add rsp, 112
	HINT 2
	iretq
	.size irq_asm, .-irq_asm

	.globl boot_asm
	.type boot_asm, @function
boot_asm:
	HINT 3
	xor ebp, ebp
	call fib
	ud2
	.size boot_asm, .-boot_asm
	.section .note.GNU-stack, "", @progbits
"""


def _generated_c(n: int, seed: int = 1234) -> str:
    """`n` random kernel-style functions (deterministic for a seed)."""
    rnd = random.Random(seed)
    out = ["extern long ext_l(long); extern int ext_i(int); extern void *ext_p(void *);",
           "extern long ext8(long, long, long, long, long, long, long, long);",
           "extern void panic_fn(const char *) __attribute__((noreturn));"]
    for k in range(n):
        body = []
        size = rnd.choice([0, 0, 4, 16, 40, 100])
        if size:
            body.append(f"long arr[{size}]; arr[0] = a; ext_p(arr);")
        for _ in range(rnd.randint(1, 5)):
            kind = rnd.randrange(8)
            if kind == 0:
                body.append(f"if (a == {rnd.randint(1, 99)}) return ext_l(b);")
            elif kind == 1:
                body.append(f"if (b < -{rnd.randint(1, 99)}) panic_fn(\"g{k}\");")
            elif kind == 2:
                lim = "a" if not size else f"(a & {size - 1 if size & (size - 1) == 0 else 3})"
                tgt = f"arr[i % {size}]" if size else "b"
                body.append(f"for (long i = 0; i < {lim}; i++) {tgt} += ext_l(i ^ b);")
            elif kind == 3:
                m = rnd.randint(2, 7)
                names = [f"x{k}_{j}" for j in range(m)]
                decls = " ".join(f"long {v} = ext_l(a + {j});" for j, v in enumerate(names))
                body.append(f"{{ {decls} b += ext_l({' + '.join(names)}) * {names[0]} - {names[-1]}; }}")
            elif kind == 4:
                body.append("b += ext8(a, b, a + 1, b + 2, a * 3, b * 4, 5, 6);")
            elif kind == 5:
                cases = " ".join(f"case {c}: b += ext_i({c}); break;"
                                 for c in rnd.sample(range(50), 4))
                body.append(f"switch (a) {{ {cases} default: b--; }}")
            elif kind == 6:
                body.append(f"if (a > b) {{ b = ext_l(a) + {rnd.randint(0, 9)}; }} "
                            f"else if (a < 0) return b;")
            else:
                body.append(f"while (b > {rnd.randint(10, 99)}) b = ext_l(b >> 1);")
        ret = rnd.choice(["return ext_l(a + b);", "return a + b;",
                          f"return b + {'arr[a & 3]' if size else 'a'};"])
        out.append(f"long gen{k}(long a, long b)\n{{\n\t" + "\n\t".join(body) + f"\n\t{ret}\n}}")
    return "\n".join(out) + "\n"


def _compile_image(workdir: Path, sources: dict[str, str], base: int,
                   flags: list[str] = KERNEL_CFLAGS) -> Path:
    """Compile C/asm sources with the kernel flags and link them at `base`."""
    objs = []
    for name, text in sources.items():
        src = workdir / name
        src.write_text(text)
        obj = src.with_suffix(".o")
        subprocess.run(["gcc", *flags, "-c", str(src), "-o", str(obj)], check=True)
        objs.append(str(obj))
    out = workdir / "image.elf"
    subprocess.run(["ld", f"-Ttext=0x{base:x}", "-e", "0", "-o", str(out), *objs], check=True)
    return out


def _selfbuilt_sources() -> dict[str, str]:
    return {"hand.c": HANDWRITTEN_C, "gen.c": _generated_c(150), "stubs.c": STUBS_C,
            "hints.S": HINTS_ASM}


@pytest.fixture(scope="session")
def selfbuilt(tmp_path_factory) -> Path:
    """The self-compiled image, built with exactly the kernel's flags."""
    return _compile_image(tmp_path_factory.mktemp("unwind_selfbuilt"), _selfbuilt_sources(),
                          TEXT_BASE)


@pytest.fixture(scope="session")
def selfbuilt_nofp(tmp_path_factory) -> Path:
    """The same sources without frame pointers (and so with a 5-byte patchable
    entry instead of -pg): rsp-based CFAs, rbp a plain callee-saved register."""
    drop = {"-pg", "-mfentry", "-mrecord-mcount", "-fno-omit-frame-pointer"}
    flags = [f for f in KERNEL_CFLAGS if f not in drop]
    flags += ["-fomit-frame-pointer", "-fpatchable-function-entry=5"]
    return _compile_image(tmp_path_factory.mktemp("unwind_selfbuilt_nofp"), _selfbuilt_sources(),
                          TEXT_BASE, flags)


def _image_params():
    found = sorted((ROOT / "fixtures" / "build").glob("vmlinux-*"))
    params = [pytest.param("selfbuilt", id="selfbuilt"),
              pytest.param("selfbuilt_nofp", id="selfbuilt-nofp")]
    params += [pytest.param(p, id=p.name) for p in found]
    if not any(p.name == "vmlinux-modern" for p in found):
        params.append(pytest.param(
            ROOT / "fixtures/build/vmlinux-modern", id="vmlinux-modern",
            marks=pytest.mark.skip(reason="fixtures/build/vmlinux-modern not built yet")))
    return params


# --- .eh_frame decoding ---------------------------------------------------------

_DW_RSP, _DW_RBP = 7, 6


def _eh_frame_rows(elf: ELFFile) -> dict[int, tuple[int, list[tuple[int, int, int, int | None]]]]:
    """FDE start -> (end, [(pc, cfa_reg, cfa_offset, rbp_offset or None)])."""
    fdes = {}
    for entry in elf.get_dwarf_info().EH_CFI_entries():
        if not isinstance(entry, FDE):
            continue
        start = entry.header["initial_location"]
        rows = []
        for row in entry.get_decoded().table:
            rule = row.get(_DW_RBP)
            bp = rule.arg if rule is not None and rule.type == "OFFSET" else None
            rows.append((row["pc"], row["cfa"].reg, row["cfa"].offset, bp))
        fdes[start] = (start + entry.header["address_range"], rows)
    return fdes


def _is_inline_asm_push_pop(prev: tuple | None, insn: tuple) -> bool:
    """`push x; pop y` / `pushfq; pop y`: inline asm (irq_save/restore) that gcc's
    CFI cannot describe; at the pop the tracker is right and .eh_frame is not."""
    return prev is not None and prev[2].startswith("push") and insn[2].startswith("pop")


def _compare(path: Path) -> dict[str, int]:
    """Compare tracker and .eh_frame at every instruction of every FDE function."""
    tables = tables_from_elf(path, use_cache=False)
    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    stats = dict(functions=0, compared=0, rbp_based=0, bp_saved=0, skipped_inline_asm=0,
                 switch_asm_undefined=0, unreached=0, unreached_not_nop=0, mismatches=0)
    mismatches = []
    with open(path, "rb") as f:
        elf = ELFFile(f)
        fdes = _eh_frame_rows(elf)
        hint_section = elf.get_section_by_name(HINTS_SECTION)
        hints = parse_hints(hint_section.data()) if hint_section else []
        # inline asm between UNWIND_HINT_SAVE and RESTORE switches stacks (the
        # legacy switch_to pops another task's registers before a `ret`): the
        # tracker calls it undefined; gcc's CFI cannot know about it
        saves = sorted(h.ip for h in hints if h.type == HintType.SAVE)
        restores = sorted(h.ip for h in hints if h.type == HintType.RESTORE)

        def in_switch_asm(addr: int) -> bool:
            return any(a <= addr < b for a, b in zip(saves, restores))
        text = {s["sh_addr"]: s.data() for s in elf.iter_sections()
                if s["sh_flags"] & 0x4 and s["sh_size"]}
        for name, start, size in sorted(set(iter_function_symbols(elf)), key=lambda t: t[1]):
            if start not in fdes:
                continue  # asm: no FDE
            fde_end, rows = fdes[start]
            sec = max(a for a in text if a <= start)
            code = text[sec][start - sec:start - sec + size]
            stats["functions"] += 1
            prev = None
            r = 0
            for insn in cs.disasm_lite(code, start):
                addr = insn[0]
                while r + 1 < len(rows) and rows[r + 1][0] <= addr:
                    r += 1
                e = tables.lookup(addr)
                if e is None:
                    stats["unreached"] += 1
                    if "nop" not in insn[2] and insn[2] not in ("int3", "xchg") :
                        stats["unreached_not_nop"] += 1
                        mismatches.append(f"{name}+0x{addr - start:x}: unreached {insn[2]} {insn[3]}")
                    prev = insn
                    continue
                if _is_inline_asm_push_pop(prev, insn):
                    stats["skipped_inline_asm"] += 1
                    prev = insn
                    continue
                if e.type == HintType.UNDEFINED and in_switch_asm(addr):
                    stats["switch_asm_undefined"] += 1
                    prev = insn
                    continue
                prev = insn
                _pc, reg, off, bp = rows[r]
                want_base = {_DW_RSP: SpReg.RSP, _DW_RBP: SpReg.RBP}.get(reg)
                got = (e.type, e.base, e.offset, e.bp_offset)
                want = (HintType.CALL, want_base, off, bp)
                stats["compared"] += 1
                stats["rbp_based"] += want_base is SpReg.RBP
                stats["bp_saved"] += bp is not None
                if got != want:
                    stats["mismatches"] += 1
                    mismatches.append(f"{name}+0x{addr - start:x} {insn[2]} {insn[3]}: "
                                      f"tracker {got} eh_frame {want}")
    stats["mismatch_list"] = mismatches[:20]
    return stats


@pytest.mark.parametrize("image", _image_params())
def test_cfa_matches_eh_frame(image, request):
    path = request.getfixturevalue(image) if isinstance(image, str) else image
    stats = _compare(path)
    print(f"\n{image if isinstance(image, str) else path.name}: {stats}")
    assert stats["mismatches"] == 0, stats["mismatch_list"]
    assert stats["unreached_not_nop"] == 0, stats["mismatch_list"]
    selfbuilt = isinstance(image, str)
    assert stats["compared"] >= (8000 if selfbuilt else 1000), "too few instructions compared"
    assert stats["functions"] >= (150 if selfbuilt else 20)
    if image != "selfbuilt_nofp":
        assert stats["rbp_based"] > stats["compared"] // 2
    assert stats["bp_saved"] > stats["compared"] // 4


# --- hints and asm ------------------------------------------------------------


def _symbols(path: Path) -> dict[str, int]:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()}


def test_parse_hints_from_section(selfbuilt):
    with open(selfbuilt, "rb") as f:
        data = ELFFile(f).get_section_by_name(HINTS_SECTION).data()
    hints = parse_hints(data)
    sym = _symbols(selfbuilt)
    assert Hint(sym["switch_asm_resume"], 56, SpReg.RSP, HintType.CALL) in hints
    assert Hint(sym["irq_asm"], 0, SpReg.RSP, HintType.IRET_REGS) in hints
    assert Hint(sym["boot_asm"], 0, SpReg.RSP, HintType.END_OF_STACK) in hints
    assert len(hints) == 5
    with pytest.raises(ImageError):
        parse_hints(data[:-1])
    with pytest.raises(ImageError):
        parse_hints(bytes(8) + bytes([0, 0, 0, 9]) + bytes(4))


def test_asm_functions_follow_hints(selfbuilt):
    """A stack switch followed by a hint stays defined; an unknown RSP write
    without one makes the rest of the path undefined; pushes and pops after a
    REGS/IRET hint move the registers' offset."""
    t = tables_from_elf(selfbuilt, use_cache=False)
    s = _symbols(selfbuilt)
    e = t.lookup(s["switch_asm"] + 7)  # after 6 pushes (1+1+2+2+2+2 bytes = 10; +7 is r13)
    assert e.type is HintType.CALL and e.base is SpReg.RSP and e.bp_offset == -16
    for sym in t.iter_functions():
        if sym.name == "switch_asm":
            cs = Cs(CS_ARCH_X86, CS_MODE_64)
            code = _read(selfbuilt, sym.start, sym.size)
            for addr, *_ in cs.disasm_lite(code, sym.start):
                assert t.lookup(addr).type is HintType.CALL
    assert t.lookup(s["switch_asm_resume"]).offset == 56
    assert t.lookup(s["bad_asm"] + 1).offset == 16
    assert t.lookup(s["bad_asm_after"]).type is HintType.UNDEFINED
    assert t.lookup(s["bad_asm_after"] + 5).type is HintType.UNDEFINED
    iret = t.lookup(s["irq_asm"] + 2)  # after push -1
    assert (iret.type, iret.offset) == (HintType.IRET_REGS, 8)
    regs = t.lookup(s["irq_asm_regs"])
    assert (regs.type, regs.base, regs.offset) == (HintType.REGS, SpReg.RSP, 0)
    popped = t.lookup(s["irq_asm_popped"])
    assert (popped.type, popped.offset) == (HintType.REGS, -16)
    assert t.lookup(s["boot_asm"] + 3).type is HintType.END_OF_STACK


def _read(path: Path, addr: int, size: int) -> bytes:
    with open(path, "rb") as f:
        for s in ELFFile(f).iter_sections():
            if s["sh_addr"] <= addr < s["sh_addr"] + s["sh_size"] and s["sh_type"] == "SHT_PROGBITS":
                off = addr - s["sh_addr"]
                return s.data()[off:off + size]
    raise KeyError(hex(addr))


# --- tables: lookup, modules, cache ---------------------------------------------

# push rbp; mov rbp,rsp; call x; pop rbp; ret; int3 (padding)
_SMALL_FN = bytes.fromhex("55 48 89 e5 e8 00 00 00 00 5d c3 cc".replace(" ", ""))


def test_lookup_ranges_and_module_add_remove():
    code = {0x1000: _SMALL_FN, 0x2000: _SMALL_FN}
    t = build_tables([("a", 0x1000, 11)], lambda a, n: code[a][:n])
    assert t.lookup(0x1000).offset == 8
    assert t.lookup(0x1004).base is SpReg.RBP  # the call
    assert t.lookup(0x1008) is t.lookup(0x1004)  # ret - 1 lands in the call
    assert t.lookup(0x1009).bp_offset == -16  # pop rbp: not yet executed
    assert t.lookup(0x100A).offset == 8 and t.lookup(0x100A).bp_offset is None
    assert t.lookup(0x100B) is None and t.lookup(0xFFF) is None
    t.add_functions([("mod_fn", 0x2000, 11)], lambda a, n: code[a][:n])
    assert len(t) == 2 and t.describe(0x2004) == "mod_fn+0x4"
    assert t.lookup(0x2004).base is SpReg.RBP
    assert t.remove_functions(0x2000, 0x3000) == 1
    assert t.lookup(0x2004) is None and t.find_function(0x2004) is None
    assert t.describe(0x2004) == "0x2004"


def test_a_module_block_is_spliced_as_a_full_rebuild_would_flatten_it():
    """Blocks of functions added and removed in random order (apart, adjacent
    to a neighbour, overlapping one, replacing a start): the arrays the
    splices leave are the ones a full rebuild makes, and so is every lookup."""
    rng = random.Random(5)
    code = _SMALL_FN * 4096
    t = build_tables([("vmlinux_fn", 0x1000, 11)], lambda a, n: code[:n])
    blocks: list[tuple[int, int]] = []
    for _ in range(300):
        if blocks and rng.random() < 0.4:
            low, high = blocks.pop(rng.randrange(len(blocks)))
            t.remove_functions(low, high)
        else:
            low = 0x2000 + rng.randrange(64) * 0x40 + rng.choice((0, 0, 11, 5))
            funcs = [(f"f{low:x}_{k}", low + k * rng.choice((11, 12, 16)), 11) for k in range(rng.randrange(1, 4))]
            t.add_functions(funcs, lambda a, n: code[:n])
            blocks.append((low, funcs[-1][1] + 11))
        spliced = (list(t._addrs), list(t._entries), list(t._fsyms)) if not t._stale else None
        probes = [rng.randrange(0xF00, 0x3200) for _ in range(20)]
        answers = [(t.lookup(ip), t.find_function(ip)) for ip in probes]
        t._rebuild()
        if spliced is not None:
            assert spliced == (t._addrs, t._entries, t._fsyms)
        t._memo = {}
        assert answers == [(t.lookup(ip), t.find_function(ip)) for ip in probes]


def test_cache_roundtrip_and_disable(selfbuilt, tmp_path, monkeypatch):
    from emu.unwind import cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cache, "_memory", OrderedDict())
    t0 = time.perf_counter()
    built = tables_from_elf(selfbuilt)
    t_build = time.perf_counter() - t0
    files = list((tmp_path / "klpemu").glob("unwind-*.pickle"))
    assert len(files) == 1
    monkeypatch.setattr(cache, "_memory", OrderedDict())  # force the disk path
    t0 = time.perf_counter()
    loaded = tables_from_elf(selfbuilt)
    t_load = time.perf_counter() - t0
    print(f"\nbuild {t_build * 1e3:.1f} ms for {len(built)} functions "
          f"({t_build / len(built) * 1e3:.3f} ms/function), cache load {t_load * 1e3:.1f} ms")
    for sym in built.iter_functions():
        for addr in range(sym.start, sym.end):
            assert built.lookup(addr) == loaded.lookup(addr)
    files[0].unlink()
    monkeypatch.setenv("KLPEMU_NO_UNWIND_CACHE", "1")
    tables_from_elf(selfbuilt)
    assert not list((tmp_path / "klpemu").glob("unwind-*.pickle"))


def test_the_disk_cache_keeps_the_newest_max_files(tmp_path, monkeypatch):
    from emu.unwind import cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cache, "_memory", OrderedDict())
    monkeypatch.setattr(cache, "MAX_FILES", 3)
    for i in range(5):
        cache.store(f"module-{i}", [i])
        os.utime(cache._path(f"module-{i}"), ns=(i * 10**9, i * 10**9))   # written in this order
    assert sorted(f.name for f in (tmp_path / "klpemu").glob("unwind-*")) == \
        [cache._path(f"module-{i}").name for i in (2, 3, 4)]
    monkeypatch.setattr(cache, "_memory", OrderedDict())
    assert cache.load("module-1") is None and cache.load("module-4") == [4]
    # a load is a use: the oldest written, read since, outlives newer unread ones
    assert cache.load("module-2") == [2]
    cache.store("module-5", [5])
    os.utime(cache._path("module-5"), ns=(5 * 10**9, 5 * 10**9))
    cache.store("module-6", [6])
    assert sorted(f.name for f in (tmp_path / "klpemu").glob("unwind-*")) == \
        sorted(cache._path(f"module-{i}").name for i in (2, 4, 6))


def test_the_memory_cache_keeps_the_most_recently_used_max_in_memory(tmp_path, monkeypatch):
    from emu.unwind import cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cache, "_memory", OrderedDict())
    monkeypatch.setattr(cache, "MAX_IN_MEMORY", 3)
    for i in range(3):
        cache.store(f"module-{i}", [i])
    assert cache.load("module-0") == [0]             # a use: module-1 is now the least recent
    cache.store("module-3", [3])
    assert list(cache._memory) == ["module-2", "module-0", "module-3"]
    # the one dropped from memory is still on disk, and comes back as the most recent
    assert cache.load("module-1") == [1]
    assert list(cache._memory) == ["module-0", "module-3", "module-1"]
    for i in range(4, 100):
        cache.store(f"module-{i}", [i])
    assert len(cache._memory) == 3


def iter_function_symbols(elf: ELFFile) -> Iterator[tuple[str, int, int]]:
    """Yield (name, value, size) of every STT_FUNC symbol with a size."""
    for sec in elf.iter_sections():
        if isinstance(sec, SymbolTableSection):
            for sym in sec.iter_symbols():
                if sym["st_info"]["type"] == "STT_FUNC" and sym["st_size"] > 0:
                    yield sym.name, sym["st_value"], sym["st_size"]
