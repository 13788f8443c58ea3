// SPDX-License-Identifier: GPL-2.0
/*
 * A livepatch in the usual kernel style: the guest kernel's /proc/meminfo
 * lacks the MemAvailable line that tools such as free(1) read; this patch
 * replaces meminfo_proc_show() with a version that prints it.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

unsigned long totalram_pages(void);
unsigned long nr_free_pages(void);

/* show_val_kb() is static in the kernel: a livepatch carries its own copy */
static void show_val_kb(struct seq_file *m, const char *s, unsigned long pages)
{
	seq_printf(m, "%s%8lu kB\n", s, pages << 2);
}

static int livepatch_meminfo_proc_show(struct seq_file *m, void *v)
{
	show_val_kb(m, "MemTotal:       ", totalram_pages());
	show_val_kb(m, "MemFree:        ", nr_free_pages());
	/* nothing reclaimable in this kernel: all free memory is available */
	show_val_kb(m, "MemAvailable:   ", nr_free_pages());
	return 0;
}

static struct klp_func funcs[] = {
	{
		.old_name = "meminfo_proc_show",
		.new_func = livepatch_meminfo_proc_show,
	}, { }
};

static struct klp_object objs[] = {
	{
		/* name being NULL means vmlinux */
		.funcs = funcs,
	}, { }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int livepatch_meminfo_init(void)
{
	return klp_enable_patch(&patch);
}

static void livepatch_meminfo_exit(void)
{
}

module_init(livepatch_meminfo_init);
module_exit(livepatch_meminfo_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
MODULE_DESCRIPTION("Add MemAvailable to /proc/meminfo");
