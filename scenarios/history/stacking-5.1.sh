# The steps of seed 003 on 5.1: enable 1, enable 2, disable 2, enable 3,
# then disable 1 under 3, and 3. Registering is gone (each module's init
# calls klp_enable_patch alone), a disabled patch is freed at once (its sysfs
# directory goes, it cannot be enabled again), and there is no stacking
# rule: patch 3 stacks on 1, and 1 can be disabled while 3 stays on top of
# the func_stack.
# Run: klpemu run scenarios/history/stacking-5.1.sh --klp-version 5.1

. $(dirname $0)/functions.sh

P1=test_klp_livepatch
P2=klpemu_old_test_klp_enable2
P3=klpemu_old_test_klp_enable3

setup_config

start_test "no stacking rule: enable 1, 2; disable 2; enable 3; disable 1, 3"
load_lp $P1
load_lp $P2
grep 'live patched' /proc/cmdline > /dev/kmsg
disable_lp $P2
grep 'live patched' /proc/cmdline > /dev/kmsg
load_lp $P3
grep 'live patched' /proc/cmdline > /dev/kmsg
disable_lp $P1
grep 'live patched' /proc/cmdline > /dev/kmsg
disable_lp $P3
unload_lp $P1
unload_lp $P2
unload_lp $P3
check_result "% modprobe $P1
livepatch: enabling patch '$P1'
livepatch: '$P1': initializing patching transition
livepatch: '$P1': starting patching transition
livepatch: '$P1': completing patching transition
livepatch: '$P1': patching complete
% modprobe $P2
livepatch: enabling patch '$P2'
livepatch: '$P2': initializing patching transition
livepatch: '$P2': starting patching transition
livepatch: '$P2': completing patching transition
livepatch: '$P2': patching complete
$P2: this has been live patched
% echo 0 > /sys/kernel/livepatch/$P2/enabled
livepatch: '$P2': initializing unpatching transition
livepatch: '$P2': starting unpatching transition
livepatch: '$P2': completing unpatching transition
livepatch: '$P2': unpatching complete
$P1: this has been live patched
% modprobe $P3
livepatch: enabling patch '$P3'
livepatch: '$P3': initializing patching transition
livepatch: '$P3': starting patching transition
livepatch: '$P3': completing patching transition
livepatch: '$P3': patching complete
$P3: this has been live patched
% echo 0 > /sys/kernel/livepatch/$P1/enabled
livepatch: '$P1': initializing unpatching transition
livepatch: '$P1': starting unpatching transition
livepatch: '$P1': completing unpatching transition
livepatch: '$P1': unpatching complete
$P3: this has been live patched
% echo 0 > /sys/kernel/livepatch/$P3/enabled
livepatch: '$P3': initializing unpatching transition
livepatch: '$P3': starting unpatching transition
livepatch: '$P3': completing unpatching transition
livepatch: '$P3': unpatching complete
% rmmod $P1
% rmmod $P2
% rmmod $P3"
