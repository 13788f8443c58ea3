# An immediate patch on 4.12: klp_patch.immediate skips the per-task
# consistency model. klp_target_state is set before the early return in
# klp_init_transition (the fix of seed 002), so the messages name the right
# direction and disabling takes the funcs off the func_stack: /proc/cmdline
# is the original again. The module reference of an immediate patch is
# kept for good (refcnt stays 1: the module cannot be removed).
# Run: klpemu run scenarios/history/immediate-4.12.sh --klp-version 4.12

. $(dirname $0)/functions.sh

P=klpemu_old_test_klp

setup_config

start_test "immediate patch enabled and disabled"
load_lp $P immediate=1
grep 'live patched' /proc/cmdline > /dev/kmsg
disable_lp $P
if ! grep -q 'live patched' /proc/cmdline; then
	log "$P: cmdline is the original"
fi
cat /sys/module/$P/refcnt
check_result "% modprobe $P immediate=1
livepatch: enabling patch '$P'
livepatch: '$P': initializing patching transition
livepatch: '$P': starting patching transition
livepatch: '$P': completing patching transition
livepatch: '$P': patching complete
$P: this has been live patched
% echo 0 > /sys/kernel/livepatch/$P/enabled
livepatch: '$P': initializing unpatching transition
livepatch: '$P': starting unpatching transition
livepatch: '$P': completing unpatching transition
livepatch: '$P': unpatching complete
$P: cmdline is the original"
