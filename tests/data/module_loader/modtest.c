/* Test module for tests/test_module_loader.py: exercises every relocation
 * type the loader supports (PLT32, PC32, 32S, 64) and every module table
 * (params, exports, modinfo, __mcount_loc, this_module). */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/printk.h>

static int count = 3;
module_param(count, int, 0644);
MODULE_PARM_DESC(count, "how many times");
static bool verbose;
module_param(verbose, bool, 0444);
static char *greeting = "hello";
module_param(greeting, charp, 0);
static int vals[4];
static unsigned int nvals;
module_param_array(vals, int, &nvals, 0644);
/* a second "parm" key, spelled out: MODULE_INFO pastes tag##__LINE__ literally,
 * so two MODULE_PARM_DESC in one file would collide in the fixture header */
static const char modtest_parm_vals[] __attribute__((section(".modinfo"), used, aligned(1))) =
	"parm=vals:some values";

long modtest_table[8] = { 10, 20, 30, 40, 50, 60, 70, 80 };
/* global and writable, so gcc reads it RIP-relative (R_X86_64_PC32) instead of folding it */
char modtest_banner[] = "modtest banner";
long modtest_bss[16];

static noinline int add_one(int x)
{
	return x + 1;
}

static noinline int times_two(int x)
{
	return x * 2;
}

int (*const modtest_ops[2])(int) = { add_one, times_two };

/* ops[i&1](x) + table[i&7] + add_one(x) */
noinline long modtest_compute(long i, int x)
{
	modtest_bss[i & 15] = x;
	return modtest_ops[i & 1](x) + modtest_table[i & 7] + add_one(x);
}
EXPORT_SYMBOL(modtest_compute);

noinline int modtest_first_char(void)
{
	return modtest_banner[0];
}

noinline int modtest_banner_char(long i)
{
	return modtest_banner[i & 7];
}
EXPORT_SYMBOL_GPL(modtest_first_char);

long *modtest_bss_addr(void)
{
	return modtest_bss;
}

static int __init modtest_init(void)
{
	pr_info("modtest: count=%d %s\n", count, greeting);
	return count + (int)modtest_compute(1, 2);
}

static void __exit modtest_exit(void)
{
	pr_info("modtest: bye\n");
}

module_init(modtest_init);
module_exit(modtest_exit);
MODULE_INFO(livepatch, "Y");
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("module loader test");
