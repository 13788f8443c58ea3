# The sequence of seed 003 (register 1, enable 1, register 2, enable 2,
# disable 2, register 3, enable 3) on 4.15, with modules written like the
# 4.x samples (klp_register_patch + klp_enable_patch in module_init).
# Before 5.1 a disabled patch stays registered and the stacking rule holds:
# only the first disabled patch may be enabled, only the last enabled one
# disabled. Patch 2, disabled, sits between 1 and 3 on klp_patches, so
# enabling 3 is refused (-EBUSY); klpemu_old_test_klp3's init unregisters
# it and fails. Only once 2 is unregistered (rmmod) can 3 stack on 1; then 1
# cannot be disabled under 3, and 3 then 1 can.
# (The module names carry "test_klp", as the selftests' do, so that
# check_result keeps their lines.)
# Run: klpemu run scenarios/history/stacking-4.15.sh --klp-version 4.15

. $(dirname $0)/functions.sh

P1=klpemu_old_test_klp
P2=klpemu_old_test_klp2
P3=klpemu_old_test_klp3

setup_config

start_test "stacking rule: a disabled patch between enabled ones"
load_lp $P1
load_lp $P2
grep 'live patched' /proc/cmdline > /dev/kmsg
disable_lp $P2
grep 'live patched' /proc/cmdline > /dev/kmsg
load_failing_mod $P3
grep 'live patched' /proc/cmdline > /dev/kmsg
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
modprobe: ERROR: could not insert '$P3': Device or resource busy
$P1: this has been live patched"

start_test "stacking rule: 3 on 1 once 2 is unregistered"
unload_lp $P2
load_lp $P3
grep 'live patched' /proc/cmdline > /dev/kmsg
echo 0 > /sys/kernel/livepatch/$P1/enabled || log "livepatch: $P1 is not the last enabled patch"
disable_lp $P3
grep 'live patched' /proc/cmdline > /dev/kmsg
disable_lp $P1
unload_lp $P3
unload_lp $P1
check_result "% rmmod $P2
% modprobe $P3
livepatch: enabling patch '$P3'
livepatch: '$P3': initializing patching transition
livepatch: '$P3': starting patching transition
livepatch: '$P3': completing patching transition
livepatch: '$P3': patching complete
$P3: this has been live patched
livepatch: $P1 is not the last enabled patch
% echo 0 > /sys/kernel/livepatch/$P3/enabled
livepatch: '$P3': initializing unpatching transition
livepatch: '$P3': starting unpatching transition
livepatch: '$P3': completing unpatching transition
livepatch: '$P3': unpatching complete
$P1: this has been live patched
% echo 0 > /sys/kernel/livepatch/$P1/enabled
livepatch: '$P1': initializing unpatching transition
livepatch: '$P1': starting unpatching transition
livepatch: '$P1': completing unpatching transition
livepatch: '$P1': unpatching complete
% rmmod $P3
% rmmod $P1"
