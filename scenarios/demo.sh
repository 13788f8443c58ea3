# The demo: boot, live-patch the running kernel, check it, and take it back.
# Every file operation is a genuine syscall of a guest shell; the patch is a
# gcc-built livepatch module (fixtures/modules/test_klp_livepatch.c) that
# replaces cmdline_proc_show, the function behind /proc/cmdline.
cat /proc/cmdline
cat /proc/meminfo

# as the kernel's selftests do: the transition's pr_debug lines on
setup_config

start_test "boot and patch"
load_lp test_klp_livepatch
grep 'live patched' /proc/cmdline > /dev/kmsg
disable_lp test_klp_livepatch
unload_lp test_klp_livepatch
grep 'live patched' /proc/cmdline > /dev/kmsg
check_result "% insmod test_modules/test_klp_livepatch.ko
livepatch: enabling patch 'test_klp_livepatch'
livepatch: 'test_klp_livepatch': initializing patching transition
livepatch: 'test_klp_livepatch': starting patching transition
livepatch: 'test_klp_livepatch': completing patching transition
livepatch: 'test_klp_livepatch': patching complete
test_klp_livepatch: this has been live patched
% echo 0 > /sys/kernel/livepatch/test_klp_livepatch/enabled
livepatch: 'test_klp_livepatch': initializing unpatching transition
livepatch: 'test_klp_livepatch': starting unpatching transition
livepatch: 'test_klp_livepatch': completing unpatching transition
livepatch: 'test_klp_livepatch': unpatching complete
% rmmod test_klp_livepatch"

cat /proc/cmdline
echo "klpemu demo: hello from user space" > /dev/kmsg
sleep 1
cat /proc/uptime
# the shell's own kernel stack, as the unwinder sees it
cat /proc/1/stack
