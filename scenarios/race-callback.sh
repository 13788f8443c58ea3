# A planted race between a livepatch callback and a kthread (issue #13):
# klpemu_race_target's reader (a kthread on CPU 1) takes a configuration
# pointer once and calls through it after some work; klpemu_race_patch's
# post_patch callback (on CPU 0, in the task that completes the transition)
# kicks the reader, builds a new configuration, publishes it and frees the
# old one without waiting for the reader. The callback takes more work than
# the reader's report, so on CPUs of similar speed the report is done first
# and this passes; the reader oopses (NULL pointer dereference in
# klpemu_race_report) when it took the old pointer before the swap (1) and
# is then slowed down enough that the swap comes before its call (2):
#     klpemu explore scenarios/race-callback.sh --strategy pct,depth=2,steps=… --runs 500
# See benchmarks/README.md ("explore") for how often each strategy finds it.

MOD_TARGET=klpemu_race_target
MOD_LIVEPATCH=klpemu_race_patch

setup_config

start_test "post_patch callback replaces a configuration in use"

load_mod $MOD_TARGET
load_lp $MOD_LIVEPATCH
sleep 1
if [[ "$(cat /proc/$MOD_TARGET)" != "$MOD_TARGET: config v2, patched" ]] ; then
	echo -e "FAIL\n\n"
	die "livepatch kselftest(s) failed"
fi
disable_lp $MOD_LIVEPATCH
unload_lp $MOD_LIVEPATCH
unload_mod $MOD_TARGET

check_result "livepatch: enabling patch '$MOD_LIVEPATCH'
livepatch: '$MOD_LIVEPATCH': initializing patching transition
livepatch: '$MOD_LIVEPATCH': starting patching transition
livepatch: '$MOD_LIVEPATCH': completing patching transition
livepatch: '$MOD_LIVEPATCH': patching complete
livepatch: '$MOD_LIVEPATCH': initializing unpatching transition
livepatch: '$MOD_LIVEPATCH': starting unpatching transition
livepatch: '$MOD_LIVEPATCH': completing unpatching transition
livepatch: '$MOD_LIVEPATCH': unpatching complete"
