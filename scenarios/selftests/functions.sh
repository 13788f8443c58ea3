#!/bin/bash
# klpemu's functions.sh for the kernel's livepatch selftests in this
# directory (the test-*.sh are the kernel's own, unmodified). Written for
# klpemu: the same helpers, the same kernel log, output and exit statuses
# as the newest functions.sh of tools/testing/selftests/livepatch/, so that
# the tests' expected transcripts hold. The built-in helpers of the
# scenario language (klpemu/selftest) do the same in Python.

MAX_RETRIES=600
RETRY_INTERVAL=".1"		# seconds between two tries of loop_until
ksft_skip=4			# kselftest's exit status for a skipped test

SYSFS_KERNEL_DIR="/sys/kernel"
SYSFS_KLP_DIR="$SYSFS_KERNEL_DIR/livepatch"
SYSFS_DEBUG_DIR="$SYSFS_KERNEL_DIR/debug"
SYSFS_KPROBES_DIR="$SYSFS_DEBUG_DIR/kprobes"
SYSFS_TRACING_DIR="$SYSFS_DEBUG_DIR/tracing"
DYNDBG_CONTROL="$SYSFS_DEBUG_DIR/dynamic_debug/control"

# ---------------------------------------------------------------- messages

# log MSG: one line of the kernel log
log() {
	echo "$1" > /dev/kmsg
}

# skip MSG / die MSG: log why, say it on stderr, and end the test
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

is_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "skip all tests: must be run as root" >&2
		exit $ksft_skip
	fi
}

# has_kdir: the modules are built against $KDIR (the running kernel's build tree)
has_kdir() {
	[ -n "$KDIR" ] || KDIR="/lib/modules/$(uname -r)/build"
	if [ ! -d "$KDIR" ]; then
		echo "skip all tests: KDIR ($KDIR) not available to compile modules."
		exit $ksft_skip
	fi
}

# loop_until CMD...: evaluate CMD until it succeeds, up to MAX_RETRIES more
# times, RETRY_INTERVAL apart; the status says whether it ever did
loop_until() {
	local condition="$*"
	local tries=0

	until eval "$condition"; do
		if (( tries++ >= MAX_RETRIES )); then
			return 1
		fi
		sleep "$RETRY_INTERVAL"
	done
	return 0
}

# ---------------------------------------------------------------- configuration

# The settings a test changes, saved by push_config and put back by
# pop_config when the script exits (setup_config's trap).
push_config() {
	DYNAMIC_DEBUG=""
	if [[ -r "$DYNDBG_CONTROL" ]]; then
		DYNAMIC_DEBUG=$(grep '^kernel/livepatch' "$DYNDBG_CONTROL" | \
				awk -F'[: ]' '{ printf "file %s line %s %s\n", $1, $2, $4 }')
	fi
	FTRACE_ENABLED=$(sysctl --values kernel.ftrace_enabled)
	KPROBE_ENABLED=$(cat "$SYSFS_KPROBES_DIR/enabled")
	TRACING_ON=$(cat "$SYSFS_TRACING_DIR/tracing_on")
	CURRENT_TRACER=$(cat "$SYSFS_TRACING_DIR/current_tracer")
	FTRACE_FILTER=$(cat "$SYSFS_TRACING_DIR/set_ftrace_filter")
}

restore() {			# restore FILE VALUE: write VALUE back if one was saved
	[[ -z "$2" ]] || echo "$2" > "$1"
}

pop_config() {
	[[ -z "$DYNAMIC_DEBUG" ]] || echo -n "$DYNAMIC_DEBUG" > "$DYNDBG_CONTROL"
	[[ -z "$FTRACE_ENABLED" ]] || sysctl kernel.ftrace_enabled="$FTRACE_ENABLED" &> /dev/null
	restore "$SYSFS_KPROBES_DIR/enabled" "$KPROBE_ENABLED"
	restore "$SYSFS_TRACING_DIR/tracing_on" "$TRACING_ON"
	restore "$SYSFS_TRACING_DIR/current_tracer" "$CURRENT_TRACER"
	if [[ -n "$FTRACE_FILTER" ]]; then
		# the kernel lists an empty filter as a comment line
		grep -v '^#### all functions enabled ####$' <<< "$FTRACE_FILTER" \
			> "$SYSFS_TRACING_DIR/set_ftrace_filter"
	fi
}

cleanup() {
	pop_config
}

# set_dynamic_debug: the livepatch core's pr_debug lines (its transitions)
# into the kernel log, but not klp_try_switch_task's for every task
set_dynamic_debug() {
	[[ -w "$DYNDBG_CONTROL" ]] || return 0
	cat > "$DYNDBG_CONTROL" <<-END_OF_CONTROL
		file kernel/livepatch/* +p
		func klp_try_switch_task -p
	END_OF_CONTROL
}

# set_ftrace_enabled [--fail] VALUE: log kernel.ftrace_enabled once set;
# when the kernel refuses, skip the test, or (--fail) log sysctl's error
set_ftrace_enabled() {
	local may_fail=false
	if [[ "$1" == "--fail" ]]; then
		may_fail=true
		shift
	fi
	local value="$1"
	local error
	local now

	error=$(sysctl -q kernel.ftrace_enabled="$value" 2>&1)
	now=$(sysctl --values kernel.ftrace_enabled)
	if [[ "$now" == "$value" ]]; then
		log "livepatch: kernel.ftrace_enabled = $now"
	elif $may_fail; then
		log "livepatch: ${error//\/proc\/sys\/kernel\//kernel.}"
	else
		skip "failed to set kernel.ftrace_enabled = $value"
	fi
}

setup_config() {
	is_root
	has_kdir
	push_config
	set_dynamic_debug
	set_ftrace_enabled 1
	trap cleanup EXIT INT TERM HUP
}

# ---------------------------------------------------------------- modules
# Modules are test_modules/NAME.ko; each load and unload is logged as the
# command that does it ("% insmod test_modules/NAME.ko ARGS").

is_livepatch_mod() {
	local ko="test_modules/$1.ko"

	[[ -f "$ko" ]] || die "Can't find \"$ko\", try \"make\""
	[[ "$(modinfo "$ko" | awk '$1 == "livepatch:" { flag = $2 } END { print flag }')" == Y ]]
}

insert_mod() {			# insert_mod NAME ARGS...: log it, then insmod's own messages
	local mod="$1"; shift
	local line="% insmod test_modules/$mod.ko"

	(( $# == 0 )) || line+=" $*"
	log "$line"
	insmod "test_modules/$mod.ko" "$@" 2>&1
}

load_module() {			# the common part of load_mod, load_lp_nowait and load_lp
	local mod="$1"; shift
	local said

	said=$(insert_mod "$mod" "$@")
	[[ -z "$said" ]] || die "$said"
	loop_until '[[ -e "/sys/module/$mod" ]]' || die "failed to load module $mod"
}

# load_mod NAME ARGS...: a module that is not a livepatch
load_mod() {
	local mod="$1"; shift

	if is_livepatch_mod "$mod"; then
		die "use load_lp() to load the livepatch module $mod"
	fi
	load_module "$mod" "$@"
}

# load_lp_nowait NAME ARGS...: a livepatch, without waiting for its transition
load_lp_nowait() {
	local mod="$1"; shift

	is_livepatch_mod "$mod" || die "module $mod is not a livepatch"
	load_module "$mod" "$@"
	loop_until '[[ -e "$SYSFS_KLP_DIR/$mod" ]]' || die "failed to load module $mod (sysfs)"
}

# load_lp NAME ARGS...: a livepatch, once its transition is over
load_lp() {
	local mod="$1"; shift

	load_lp_nowait "$mod" "$@"
	loop_until '[[ "$(cat "$SYSFS_KLP_DIR/$mod/transition")" == 0 ]]' ||
		die "failed to complete transition"
}

# load_failing_mod NAME ARGS...: a module that must not load; insmod's
# complaint goes to the kernel log
load_failing_mod() {
	local mod="$1"; shift
	local said

	said=$(insert_mod "$mod" "$@")
	[[ -n "$said" ]] || die "$mod unexpectedly loaded"
	log "$said"
}

unload_mod() {
	local mod="$1"
	local said

	loop_until '[[ "$(cat "/sys/module/$mod/refcnt")" == 0 ]]' ||
		die "failed to unload module $mod (refcnt)"
	log "% rmmod $mod"
	said=$(rmmod "$mod" 2>&1)
	[[ -z "$said" ]] || die "$said"
	loop_until '! [[ -e "/sys/module/$mod" ]]' ||
		die "failed to unload module $mod (/sys/module)"
}

unload_lp() {
	unload_mod "$1"
}

# disable_lp NAME: until the livepatch is gone from sysfs
disable_lp() {
	local mod="$1"
	local enabled="$SYSFS_KLP_DIR/$mod/enabled"

	log "% echo 0 > $enabled"
	echo 0 > "$enabled"
	loop_until '! [[ -e "$SYSFS_KLP_DIR/$mod" ]]' || die "failed to disable livepatch $mod"
}

# set_pre_patch_ret NAME VALUE: what the module's pre-patch callback returns
set_pre_patch_ret() {
	local mod="$1"
	local ret="$2"
	local param="/sys/module/$mod/parameters/pre_patch_ret"

	log "% echo $ret > $param"
	echo "$ret" > "$param"
	loop_until '[[ "$(cat "$param")" == "$ret" ]]' ||
		die "failed to set pre_patch_ret parameter for $mod module"
}

# ---------------------------------------------------------------- checking

# start_test NAME: a canary in the kernel log (check_result reads what comes
# after it), then "TEST: NAME ... " on stdout
start_test() {
	local canary

	canary="livepatch kselftest timestamp: $(date --rfc-3339=ns)"
	log "$canary"
	loop_until 'dmesg | grep -qF "$canary"' ||
		die "buffer busy? can't find canary dmesg message: $canary"
	LAST_DMESG=$(dmesg | grep -F "$canary")
	echo -n "TEST: $1 ... "
	log "===== TEST: $1 ====="
}

# The kernel log since the canary, as the tests spell their expectations:
# the livepatch and test module lines, without timestamps, caller ids and
# taint notices.
test_log() {
	dmesg | awk -v canary="$LAST_DMESG" 'seen { print } $0 == canary { seen = 1 }' | \
		grep -e 'livepatch:' -e 'test_klp' | \
		grep -v -e 'tainting kernel' -e 'taints kernel' | \
		sed -e 's/^\[[ 0-9.]*\] //' -e 's/^\[ *[CT][0-9]*\] //'
}

# check_result EXPECTED: "ok", or "not ok" and how the log differs
check_result() {
	local expect="$*"
	local result

	result=$(test_log)
	if [[ "$result" == "$expect" ]]; then
		echo "ok"
		return
	fi
	if [[ -z "$result" ]]; then
		echo -e "not ok\n\nbuffer overrun? can't find canary dmesg entry: $LAST_DMESG\n"
	else
		echo -e "not ok\n\n$(diff -u --label expected --label result <(echo "$expect") <(echo "$result"))\n"
	fi
	die "livepatch kselftest(s) failed"
}

# check_sysfs_rights NAME REL_PATH RIGHTS / check_sysfs_value NAME REL_PATH VALUE:
# a file of the livepatch's sysfs directory
check_sysfs_rights() {
	local path="$SYSFS_KLP_DIR/$1/$2"
	local rights

	rights=$(/bin/stat --format '%A' "$path")
	[[ "$rights" == "$3" ]] || die "Unexpected access rights of $path: $3 vs. $rights"
}

check_sysfs_value() {
	local path="$SYSFS_KLP_DIR/$1/$2"
	local value

	value=$(cat "$path")
	[[ "$value" == "$3" ]] || die "Unexpected value in $path: $3 vs. $value"
}

# ---------------------------------------------------------------- function tracer

cleanup_tracing() {
	echo 0 > "$SYSFS_TRACING_DIR/tracing_on"
	echo "" > "$SYSFS_TRACING_DIR/set_ftrace_filter"
	echo nop > "$SYSFS_TRACING_DIR/current_tracer"
	echo "" > "$SYSFS_TRACING_DIR/trace"
}

# trace_function FUNCTION: the function tracer on FUNCTION alone
trace_function() {
	cleanup_tracing
	echo function > "$SYSFS_TRACING_DIR/current_tracer"
	echo "$1" > "$SYSFS_TRACING_DIR/set_ftrace_filter"
	echo 1 > "$SYSFS_TRACING_DIR/tracing_on"
}

# check_traced_functions FUNCTION...: each one is in the trace; then stop tracing
check_traced_functions() {
	local name

	for name; do
		grep -Fwq "$name" "$SYSFS_TRACING_DIR/trace" ||
			die "Function ($name) did not appear in the trace"
	done
	cleanup_tracing
}
