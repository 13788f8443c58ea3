/* Parameters as tests/test_module_params.py reaches them: a charp writable
 * through sysfs, and a bool whose name has an underscore (parameq takes a
 * dash for it). */
#include <linux/module.h>
#include <linux/printk.h>

static char *text = "init";
module_param(text, charp, 0644);
static bool dry_run;
module_param(dry_run, bool, 0644);

static int __init modparam_init(void)
{
	pr_info("modparam: text=<%s> dry_run=%d\n", text, dry_run);
	return 0;
}

static void __exit modparam_exit(void)
{
}

module_init(modparam_init);
module_exit(modparam_exit);
MODULE_LICENSE("GPL");
