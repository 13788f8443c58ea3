/* A second, minimal test module: module_init without module_exit (so the
 * build's weak cleanup_module stays undefined), and a global array accessed by
 * index, which becomes R_X86_64_32 when compiled with -mcmodel=small. */
#include <linux/module.h>
#include <linux/printk.h>

long modmini_data[4] = { 1, 2, 3, 4 };

noinline long modmini_get(long i)
{
	return modmini_data[i & 3];
}

static int __init modmini_init(void)
{
	pr_info("modmini: %ld\n", modmini_get(2));
	return 0;
}

module_init(modmini_init);
MODULE_LICENSE("GPL");
