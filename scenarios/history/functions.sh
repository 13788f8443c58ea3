#!/bin/bash
# klpemu's functions.sh for the scenarios of this directory: the selftests'
# helpers as the kernels before 6.9 had them, which load modules by name
# with modprobe, so that the kernel log reads "% modprobe NAME ARGS" and a
# refused module logs modprobe's complaint. Written for klpemu.
#
# These scenarios also run on kernels older than the selftests (4.x): there
# a disabled patch stays registered (disable_lp waits for its transition to
# end rather than for it to go), and before 4.12 there is no transition at
# all (load_lp does not wait for one).

MAX_RETRIES=600
RETRY_INTERVAL=".1"
ksft_skip=4
KLP_SYSFS_DIR="/sys/kernel/livepatch"

log() {
	echo "$1" > /dev/kmsg
}

skip() {
	log "SKIP: $1"
	echo "SKIP: $1" >&2
	exit $ksft_skip
}

die() {
	log "ERROR: $1"
	echo "ERROR: $1" >&2
	exit 1
}

function is_root {
	if [ $(id -u) -ne 0 ]; then
		echo "skip all tests: must be run as root" >&2
		exit $ksft_skip
	fi
}

# The configuration a test changes, saved and restored when the script exits.
function push_config {
	DYNAMIC_DEBUG=$(grep '^kernel/livepatch' /sys/kernel/debug/dynamic_debug/control 2> /dev/null | \
			awk -F'[: ]' '{print "file " $1 " line " $2 " " $4}')
	FTRACE_ENABLED=$(sysctl --values kernel.ftrace_enabled)
}

function pop_config {
	if [[ -n "$DYNAMIC_DEBUG" ]]; then
		echo -n "$DYNAMIC_DEBUG" > /sys/kernel/debug/dynamic_debug/control
	fi
	if [[ -n "$FTRACE_ENABLED" ]]; then
		sysctl kernel.ftrace_enabled="$FTRACE_ENABLED" &> /dev/null
	fi
}

function set_dynamic_debug {
	local control=/sys/kernel/debug/dynamic_debug/control
	if [[ -w $control ]]; then
		printf '%s\n' "file kernel/livepatch/* +p" "func klp_try_switch_task -p" > $control
	fi
}

function set_ftrace_enabled {
	local can_fail=0
	if [[ "$1" == "--fail" ]]; then
		can_fail=1
		shift
	fi
	local err=$(sysctl -q kernel.ftrace_enabled="$1" 2>&1)
	local result=$(sysctl --values kernel.ftrace_enabled)

	if [[ "$result" != "$1" ]]; then
		if [[ $can_fail -eq 1 ]]; then
			echo "livepatch: $err" | sed 's#/proc/sys/kernel/#kernel.#' > /dev/kmsg
			return
		fi
		skip "failed to set kernel.ftrace_enabled = $1"
	fi
	echo "livepatch: kernel.ftrace_enabled = $result" > /dev/kmsg
}

function cleanup {
	pop_config
}

function setup_config {
	is_root
	push_config
	set_dynamic_debug
	set_ftrace_enabled 1
	trap cleanup EXIT INT TERM HUP
}

# loop_until CMD...: CMD, evaluated until it succeeds (MAX_RETRIES more tries)
function loop_until {
	local cmd="$*"
	local i
	for (( i = 0; i <= MAX_RETRIES; i++ )); do
		eval "$cmd" && return 0
		(( i == MAX_RETRIES )) || sleep $RETRY_INTERVAL
	done
	return 1
}

function modprobe_mod {		# log the command, then load; modprobe's complaint, if any
	local mod="$1"; shift
	local msg="% modprobe $mod $*"

	log "${msg%% }"
	modprobe "$mod" "$@" 2>&1
}

function is_livepatch_mod {
	modinfo "$1" | grep -q '^livepatch: *Y$'
}

function __load_mod {
	local mod="$1"; shift
	local ret

	ret=$(modprobe_mod "$mod" "$@")
	[[ -z "$ret" ]] || die "$ret"
	loop_until '[[ -e "/sys/module/$mod" ]]' || die "failed to load module $mod"
}

function load_mod {
	local mod="$1"; shift

	modprobe --dry-run "$mod" &> /dev/null ||
		skip "unable to load module ${mod}, verify CONFIG_TEST_LIVEPATCH=m and run self-tests as root"
	! is_livepatch_mod "$mod" || die "use load_lp() to load the livepatch module $mod"
	__load_mod "$mod" "$@"
}

function load_lp_nowait {
	local mod="$1"; shift

	modprobe --dry-run "$mod" &> /dev/null ||
		skip "unable to load module ${mod}, verify CONFIG_TEST_LIVEPATCH=m and run self-tests as root"
	is_livepatch_mod "$mod" || die "module $mod is not a livepatch"
	__load_mod "$mod" "$@"
	loop_until '[[ -e "$KLP_SYSFS_DIR/$mod" ]]' || die "failed to load module $mod (sysfs)"
}

# transition_over NAME: no transition runs for the patch (4.11 has none at all)
function transition_over {
	local transition="$KLP_SYSFS_DIR/$1/transition"
	[[ ! -e "$transition" ]] || [[ "$(cat "$transition")" == 0 ]]
}

function load_lp {
	local mod="$1"; shift

	load_lp_nowait "$mod" "$@"
	loop_until 'transition_over "$mod"' || die "failed to complete transition"
}

function load_failing_mod {
	local mod="$1"; shift
	local ret

	ret=$(modprobe_mod "$mod" "$@")
	[[ -n "$ret" ]] || die "$mod unexpectedly loaded"
	log "$ret"
}

function unload_mod {
	local mod="$1"
	local ret

	loop_until '[[ $(cat "/sys/module/$mod/refcnt") == "0" ]]' ||
		die "failed to unload module $mod (refcnt)"
	log "% rmmod $mod"
	ret=$(rmmod "$mod" 2>&1)
	[[ -z "$ret" ]] || die "$ret"
	loop_until '[[ ! -e "/sys/module/$mod" ]]' || die "failed to unload module $mod (/sys/module)"
}

function unload_lp {
	unload_mod "$1"
}

# disabled NAME: the patch is gone (5.1 on), or off and out of its transition (4.x)
function disabled {
	local dir="$KLP_SYSFS_DIR/$1"
	[[ ! -e "$dir" ]] || { [[ "$(cat "$dir/enabled")" == 0 ]] && transition_over "$1"; }
}

function disable_lp {
	local mod="$1"

	log "% echo 0 > $KLP_SYSFS_DIR/$mod/enabled"
	echo 0 > "$KLP_SYSFS_DIR/$mod/enabled"
	loop_until 'disabled "$mod"' || die "failed to disable livepatch $mod"
}

function set_pre_patch_ret {
	local mod="$1"; shift
	local ret="$1"

	log "% echo $ret > /sys/module/$mod/parameters/pre_patch_ret"
	echo "$ret" > /sys/module/"$mod"/parameters/pre_patch_ret
	loop_until '[[ $(cat "/sys/module/$mod/parameters/pre_patch_ret") == "$ret" ]]' ||
		die "failed to set pre_patch_ret parameter for $mod module"
}

function start_test {
	local canary="livepatch kselftest timestamp: $(date --rfc-3339=ns)"

	log "$canary"
	loop_until 'dmesg | grep -q "$canary"' || die "buffer busy? can't find canary dmesg message: $canary"
	LAST_DMESG=$(dmesg | grep "$canary")
	echo -n "TEST: $1 ... "
	log "===== TEST: $1 ====="
}

function check_result {
	local expect="$*"
	local result

	result=$(dmesg | awk -v last="$LAST_DMESG" 'after; $0 == last { after = 1 }' | \
		 grep -e 'livepatch:' -e 'test_klp' | grep -v '\(tainting\|taints\) kernel' | \
		 sed 's/^\[[ 0-9.]*\] //')
	if [[ "$expect" == "$result" ]]; then
		echo "ok"
	elif [[ -z "$result" ]]; then
		echo -e "not ok\n\nbuffer overrun? can't find canary dmesg entry: $LAST_DMESG\n"
		die "livepatch kselftest(s) failed"
	else
		echo -e "not ok\n\n$(diff -upr --label expected --label result <(echo "$expect") <(echo "$result"))\n"
		die "livepatch kselftest(s) failed"
	fi
}
