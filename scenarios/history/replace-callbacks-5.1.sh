# Atomic replace on 5.1 (the test "atomic replace" of test-callbacks.sh):
# only the new patch's callbacks run; the replaced patch gets no unpatch
# callbacks, not even when it is removed.
# Run: klpemu run scenarios/history/replace-callbacks-5.1.sh --klp-version 5.1

. $(dirname $0)/functions.sh

D=test_klp_callbacks_demo
D2=test_klp_callbacks_demo2

setup_config

start_test "atomic replace: callbacks of the replaced patch do not run"
load_lp $D
load_lp $D2 replace=1
disable_lp $D2
unload_lp $D2
unload_lp $D
check_result "% modprobe $D
livepatch: enabling patch '$D'
livepatch: '$D': initializing patching transition
$D: pre_patch_callback: vmlinux
livepatch: '$D': starting patching transition
livepatch: '$D': completing patching transition
$D: post_patch_callback: vmlinux
livepatch: '$D': patching complete
% modprobe $D2 replace=1
livepatch: enabling patch '$D2'
livepatch: '$D2': initializing patching transition
$D2: pre_patch_callback: vmlinux
livepatch: '$D2': starting patching transition
livepatch: '$D2': completing patching transition
$D2: post_patch_callback: vmlinux
livepatch: '$D2': patching complete
% echo 0 > /sys/kernel/livepatch/$D2/enabled
livepatch: '$D2': initializing unpatching transition
$D2: pre_unpatch_callback: vmlinux
livepatch: '$D2': starting unpatching transition
livepatch: '$D2': completing unpatching transition
$D2: post_unpatch_callback: vmlinux
livepatch: '$D2': unpatching complete
% rmmod $D2
% rmmod $D"
