"""The commands the selftests' scripts call, in the real tools' words and
exit statuses: kmod's (modprobe, insmod, rmmod, modinfo), dmesg, sysctl,
stat, date, id, uname, getconf/nproc, cat, grep, sed, awk, diff, comm,
mktemp, rm, sleep, timeout, seq, basename/dirname, wc, tr, head; and the
namespace they see: the guest's /sys, /proc and /dev, the script's
directory (read-only, test_modules/NAME.ko), /tmp, /lib/modules."""
import re
import shutil
from pathlib import Path

import pytest

from emu import Machine
from klpemu.scenario import FIXTURE_MODULES, ScenarioError
from klp_helpers import run_script

LP = "test_klp_livepatch"
MOD = "test_klp_callbacks_mod"


@pytest.fixture
def m() -> Machine:
    return Machine(cpus=2, seed=0).boot()


@pytest.fixture(scope="module")
def shared() -> Machine:
    """For scripts that leave the guest as they found it."""
    return Machine(cpus=2, seed=0).boot()


def sh(m: Machine, tmp_path: Path, text: str) -> tuple[str, str, int]:
    r = run_script(m, tmp_path, text)
    return r.stdout, r.stderr, r.exit_status


# ---------------------------------------------------------------- kmod
def test_modprobe_finds_modules_by_name(m: Machine, tmp_path: Path) -> None:
    out, err, _ = sh(m, tmp_path, f"""\
modprobe --dry-run {LP}; echo "dry $?"
modprobe --dry-run no_such_module &>/dev/null; echo "missing $?"
modprobe no_such_module
modprobe {MOD}; echo "load $?"
modprobe {MOD}; echo "again $?"
[[ -e /sys/module/{MOD} ]] && echo loaded
modprobe -r {MOD}; echo "removed $?"
""")
    assert out == "dry 0\nmissing 1\nload 0\nagain 0\nloaded\nremoved 0\n"
    assert err == "modprobe: FATAL: Module no_such_module not found in directory /lib/modules/6.13.0-klpemu\n"
    assert not m.exists(f"/sys/module/{MOD}")


def test_modprobe_and_insmod_say_why_the_kernel_refused(m: Machine, tmp_path: Path) -> None:
    out, err, _ = sh(m, tmp_path, f"""\
sysctl -q kernel.ftrace_enabled=0
ret=$(modprobe {LP} 2>&1); echo "[$ret] $?"
ret=$(insmod test_modules/{LP}.ko 2>&1); echo "[$ret] $?"
sysctl -q kernel.ftrace_enabled=1
insmod test_modules/{MOD}.ko; insmod test_modules/{MOD}.ko; echo "twice $?"
insmod test_modules/no_such.ko; echo "no file $?"
insmod; echo "no args $?"
""")
    assert out == (f"[modprobe: ERROR: could not insert '{LP}': Device or resource busy] 1\n"
                   f"[insmod: ERROR: could not insert module test_modules/{LP}.ko: Device or resource busy] 1\n"
                   "twice 1\nno file 1\nno args 1\n")
    assert err == (f"insmod: ERROR: could not insert module test_modules/{MOD}.ko: File exists\n"
                   "insmod: ERROR: could not load module test_modules/no_such.ko: No such file or directory\n"
                   "insmod: ERROR: missing filename.\n")


def test_rmmod_in_kmods_words(m: Machine, tmp_path: Path) -> None:
    out, err, _ = sh(m, tmp_path, f"""\
rmmod {MOD}; echo "not loaded $?"
insmod test_modules/{LP}.ko
rmmod {LP}; echo "in use $?"
""")
    assert out == "not loaded 1\nin use 1\n"
    assert err == (f"rmmod: ERROR: Module {MOD} is not currently loaded\n"
                   f"rmmod: ERROR: Module {LP} is in use\n")


def test_modinfo_reads_the_modules_modinfo(shared: Machine, tmp_path: Path) -> None:
    out, err, _ = sh(shared, tmp_path, f"""\
modinfo {LP} | grep -E '^(livepatch|license):'
modinfo test_modules/{LP}.ko | awk '/^livepatch:/{{print $NF}}'
modinfo -F livepatch {LP}
modinfo test_modules/{MOD}.ko | awk '/^livepatch:/{{print $NF}}' | wc -l
modinfo no_such_module; echo "missing $?"
modinfo test_modules/nothere.ko; echo "no file $?"
""")
    assert out == "livepatch:      Y\nlicense:        GPL\nY\nY\n0\nmissing 1\nno file 1\n"
    assert err == ("modinfo: ERROR: Module no_such_module not found.\n"
                   "modinfo: ERROR: could not get modinfo from 'test_modules/nothere.ko': No such file or directory\n")
    filename = sh(shared, tmp_path, f"modinfo {LP} | head -n 1\n")[0]
    assert filename == f"filename:       {FIXTURE_MODULES / (LP + '.ko')}\n"


def test_test_modules_are_the_scripts_own_first(m: Machine, tmp_path: Path) -> None:
    """test_modules/NAME.ko is the file beside the script when there is one,
    else the module NAME built for the guest."""
    (tmp_path / "test_modules").mkdir()
    shutil.copy(FIXTURE_MODULES / f"{MOD}.ko", tmp_path / "test_modules" / f"{MOD}.ko")
    out, _, _ = sh(m, tmp_path, f"""\
modinfo test_modules/{MOD}.ko | head -n 1
[[ -f test_modules/{MOD}.ko ]] && [[ -f test_modules/{LP}.ko ]] && echo both
[[ -f test_modules/nothere.ko ]] || echo not-there
""")
    assert out == f"filename:       {tmp_path / 'test_modules' / (MOD + '.ko')}\nboth\nnot-there\n"


# ---------------------------------------------------------------- procps, util-linux
def test_sysctl(m: Machine, tmp_path: Path) -> None:
    out, err, _ = sh(m, tmp_path, f"""\
sysctl kernel.ftrace_enabled; sysctl --values kernel.ftrace_enabled; sysctl -n kernel/ftrace_enabled
sysctl kernel.ftrace_enabled=0; sysctl --values kernel.ftrace_enabled
sysctl -q -w kernel.ftrace_enabled=1; echo "quiet $?"
insmod test_modules/{LP}.ko
err=$(sysctl -q kernel.ftrace_enabled=0 2>&1); echo "[$err] $(sysctl -n kernel.ftrace_enabled)"
sysctl kernel.no_such_key; echo "read $?"
sysctl -w kernel.no_such_key=1; echo "write $?"
""")
    assert out == ("kernel.ftrace_enabled = 1\n1\n1\nkernel.ftrace_enabled = 0\n0\nquiet 0\n"
                   '[sysctl: setting key "kernel.ftrace_enabled": Device or resource busy] 1\nread 1\nwrite 1\n')
    assert err == ("sysctl: cannot stat /proc/sys/kernel/no_such_key: No such file or directory\n" * 2)


def test_dmesg_prints_and_clears_the_log(m: Machine, tmp_path: Path) -> None:
    out, _, _ = sh(m, tmp_path, """\
echo first > /dev/kmsg
dmesg | tail -n 1 | grep -cE '^\\[ +[0-9]+\\.[0-9]{6}\\] first$'
dmesg --notime | tail -n 1
dmesg -C; dmesg | wc -l
echo second > /dev/kmsg
dmesg -c --notime
dmesg | wc -l
""")
    assert out == "1\nfirst\n0\nsecond\n0\n"
    assert "first" in m.dmesg() and "second" in m.dmesg()     # the ring itself keeps everything


def test_date_and_sleep_are_virtual_time(m: Machine, tmp_path: Path) -> None:
    out, err, status = sh(m, tmp_path, "date --rfc-3339=ns; sleep 2.5; date --rfc-3339=ns; sleep .1\n")
    stamps = out.splitlines()
    assert all(re.fullmatch(r"1970-01-01 00:00:\d\d\.\d{9}\+00:00", s) for s in stamps), out
    seconds = [int(s[17:19]) + int(s[20:29]) / 1e9 for s in stamps]
    assert seconds[1] - seconds[0] == pytest.approx(2.5, abs=0.01)
    assert m.clock_ns / 1e9 == pytest.approx(seconds[1] + 0.1, abs=0.01)
    assert sh(m, tmp_path, "sleep soon\n") == ("", "sleep: invalid time interval ‘soon’\n"
                                                  "Try 'sleep --help' for more information.\n", 1)


def test_timeout_stops_a_wait_in_virtual_time(m: Machine, tmp_path: Path) -> None:
    start = m.clock_ns
    out, err, _ = sh(m, tmp_path, "timeout 1 sleep 5; echo $?; timeout 5 sleep 1; echo $?; timeout 1 log x; echo $?\n")
    assert out == "124\n0\n127\n"
    assert err == "timeout: failed to run command ‘log’: No such file or directory\n"
    assert (m.clock_ns - start) / 1e9 == pytest.approx(2, abs=0.05)


def test_stat_id_uname_getconf(shared: Machine, tmp_path: Path) -> None:
    out, err, _ = sh(shared, tmp_path, """\
/bin/stat --format '%A' /sys/kernel/livepatch /proc/cmdline /proc/sys/kernel/ftrace_enabled
stat -c '%a %F' /sys/kernel/livepatch
stat --format '%A' /sys/kernel/livepatch/nothere; echo "missing $?"
id -u; uname -r; uname -s; uname -m
getconf _NPROCESSORS_ONLN; nproc
[ -d "/lib/modules/$(uname -r)/build" ] && echo kdir
""")
    assert out == ("drwxr-xr-x\n-r--r--r--\n-rw-r--r--\n755 directory\nmissing 1\n"
                   "0\n6.13.0-klpemu\nLinux\nx86_64\n2\n2\nkdir\n")
    assert err == "stat: cannot statx '/sys/kernel/livepatch/nothere': No such file or directory\n"


# ---------------------------------------------------------------- files and text
def test_cat_grep_on_guest_files(shared: Machine, tmp_path: Path) -> None:
    out, err, _ = sh(shared, tmp_path, """\
cat /proc/cmdline
cat /proc/nothere; echo "missing $?"
grep -q kprobe_ftrace_ops /proc/kallsyms && echo kprobes-on-ftrace
grep -c . /proc/cmdline; grep klpemu /proc/cmdline /proc/meminfo | head -n 1
grep 'live patched' /proc/cmdline; echo "no match $?"
grep -Fwq klpemu /proc/cmdline && echo word
echo "$(cat /proc/cmdline)" | grep -o 'console=[^ ]*'
""")
    assert out == ("console=ttyS0 klpemu\nmissing 1\nkprobes-on-ftrace\n1\n/proc/cmdline:console=ttyS0 klpemu\n"
                   "no match 1\nword\nconsole=ttyS0\n")
    assert err == "cat: /proc/nothere: No such file or directory\n"


def test_the_namespace(shared: Machine, tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("beside the script\n")
    out, err, _ = sh(shared, tmp_path, """\
cat data.txt; cat "$(pwd)/data.txt" | wc -l
cat /etc/passwd; echo "host $?"
echo x > data.txt; echo "read-only $?"
t=$(mktemp); echo kept > "$t"; cat "$t"; rm "$t"; [[ -e $t ]] || echo removed
mktemp -d | grep -c '^/tmp/tmp\\.'
ls /sys/kernel | head -n 2
mods=(/sys/kernel/livepatch/*); echo "${#mods[@]} [${mods[0]}]"
""")
    assert out == ("beside the script\n1\nhost 1\nread-only 1\nkept\nremoved\n1\ndebug\nlivepatch\n"
                   "1 [/sys/kernel/livepatch/*]\n")
    assert err == ("cat: /etc/passwd: No such file or directory\n"
                   "./t.sh: line 3: data.txt: Read-only file system\n")


def test_upstream_awk_programs(shared: Machine, tmp_path: Path) -> None:
    out, _, _ = sh(shared, tmp_path, """\
printf 'kernel/livepatch/core.c:123 [livepatch]klp_enable_patch =p "x"\\n' | \\
	awk -F'[: ]' '{print "file " $1 " line " $2 " " $4}'
printf 'filename:       x.ko\\nlivepatch:      Y\\n' | awk '/^livepatch:/{print $NF}'
printf '[ 1.0] a\\n[ 2.0] MARK\\n[ 3.0] b\\n[ 4.0] c\\n' | awk -v last_dmesg="[ 2.0] MARK" 'p; $0 == last_dmesg { p=1 }'
""")
    assert out == "file kernel/livepatch/core.c line 123 =p\nY\n[ 3.0] b\n[ 4.0] c\n"


def test_awk(shared: Machine, tmp_path: Path) -> None:
    out, _, _ = sh(shared, tmp_path, """\
echo "3 apples 1.5" | awk '{ print $2, $1 * $3; print NF, length($2), toupper(substr($2, 1, 1)) }'
printf '1\\n2\\n3\\n' | awk 'NR > 1 { s += $1 } END { print "sum", s, NR }'
echo "a:b:c" | awk -F: -v sep=- '{ n = split($0, f, ":"); for (i = n; i > 0; i--) printf "%s%s", f[i], (i > 1 ? sep : "\\n") }'
printf 'x 1\\ny 2\\nx 3\\n' | awk '{ c[$1] += $2 } END { print c["x"], c["y"], ("z" in c) }'
echo "aXbXc" | awk '{ n = gsub(/X/, "-"); print n, $0; sub("a", "[&]"); print; if (match($0, /b-c/)) print RSTART, RLENGTH }'
echo "10 9" | awk '$1 > $2 { print "numeric" } "10" > "9" { print "never" }'
echo "one" | awk 'function twice(s) { return s s } { print twice($1); $3 = "three"; print; print NF }'
awk 'BEGIN { printf "%d|%5.2f|%-4s|%x\\n", "42abc", 3.14159, "ab", 255; x = 2 ^ 10; print x, 7 % 3, -7 % 3, int(-2.5) }'
""")
    assert out == ("apples 4.5\n3 6 A\nsum 5 3\nc-b-a\n4 2 0\n2 a-b-c\n[a]-b-c\n5 3\nnumeric\n"
                   "oneone\none  three\n3\n42| 3.14|ab  |ff\n1024 1 -1 -2\n")


def test_awk_range_pattern_starts_each_run_off(shared: Machine, tmp_path: Path) -> None:
    """POSIX awk: a range pattern matches from a record matching its start to
    the next matching its stop; a program parsed once per process and run
    again starts off, whatever the last run ended in."""
    out, _, _ = sh(shared, tmp_path, """\
for k in 1 2; do printf 'a\\nB\\nc\\nE\\nd\\nB\\ne\\n' | awk '/B/,/E/ { printf "%s", $0 } END { print "" }'; done
""")
    assert out == "BcEBe\nBcEBe\n"


def test_awk_says_what_it_does_not_do(shared: Machine, tmp_path: Path) -> None:
    out, err, status = sh(shared, tmp_path, "echo x | awk '{ getline line }'; echo $?; "
                                            "echo x | awk '{ print > \"/tmp/f\" }'; echo $?\n")
    assert out == "2\n2\n"
    assert "awk: getline is not supported" in err and "awk: output redirection (>) is not supported" in err


def test_sed(shared: Machine, tmp_path: Path) -> None:
    out, err, _ = sh(shared, tmp_path, """\
printf '[    1.500000] livepatch: x\\n[   12.000001] test_klp: y\\n' | sed 's/^\\[[ 0-9.]*\\] //'
printf '[   T123] a\\n[ C1] b\\nc\\n' | sed 's/^\\[[ ]*[CT][0-9]*\\] //'
echo 'sysctl: setting key "/proc/sys/kernel/ftrace_enabled": busy' | sed 's#/proc/sys/kernel/#kernel.#'
printf 'f\\n#### all functions enabled ####\\n' | sed -e "/#### all functions enabled ####/d"
printf 'a\\nb\\nc\\n' | sed -n '2p'; printf 'a\\nb\\nc\\n' | sed '1d;$d'; echo abcabc | sed 's/b/_/2'
echo abc | sed -E 's/(a)(b)/\\2\\1/'; echo abc | sed 'y/abc/xyz/'; echo "$?"
""")
    assert out == ("livepatch: x\ntest_klp: y\na\nb\nc\n"
                   'sysctl: setting key "kernel.ftrace_enabled": busy\nf\nb\nb\nabca_c\nbac\n1\n')
    assert err == "sed: -e expression #1, char 1: the `y' command is not supported (supported: s, d, p, q, =)\n"


def test_sed_range_starts_each_run_off(shared: Machine, tmp_path: Path) -> None:
    """POSIX sed: an address range applies from a line matching its first
    address to the next matching its second; a script parsed once per
    process and run again starts outside its range."""
    out, _, _ = sh(shared, tmp_path, """\
for k in 1 2; do printf 'a\\nB\\nc\\nE\\nd\\nB\\ne\\n' | sed -n '/B/,/E/p' | tr -d '\\n'; echo; done
""")
    assert out == "BcEBe\nBcEBe\n"


def test_grep_options(shared: Machine, tmp_path: Path) -> None:
    out, err, _ = sh(shared, tmp_path, r"""
printf 'a tainting kernel\nlivepatch: x\nb taints kernel\ntest_klp: y\nz\n' | grep -e 'livepatch:' -e 'test_klp' -e taint | grep -v '\(tainting\|taints\) kernel'
printf 'AB\nab\nabc\n' | grep -ix ab; printf 'b\na\n' | grep -n a; printf 'a1\nb22\n' | grep -E '[0-9]{2}'
printf 'x.y\nxzy\n' | grep -F x.y; printf 'x\n' | grep -c y; grep -q x /nonexistent; echo "error $?"
grep -s x /nonexistent; echo "silent $?"; grep --bogus x; echo "bad option $?"
""")
    assert out == ("livepatch: x\ntest_klp: y\nAB\nab\n2:a\nb22\nx.y\n0\nerror 2\nsilent 2\nbad option 2\n")
    assert err == ("grep: /nonexistent: No such file or directory\ngrep: unrecognized option '--bogus'\n"
                   "Usage: grep [OPTION]... PATTERNS [FILE]...\nTry 'grep --help' for more information.\n")


def test_grep_fixed_strings(shared: Machine, tmp_path: Path) -> None:
    """grep -F: each pattern a fixed string found anywhere in a line (not a
    regular expression: `.` and `*` are themselves), any of several -e."""
    out, _, _ = sh(shared, tmp_path, r"""
printf '[ 1.0] canary 1.5* here\nnot this\n[ 2.0] other\n' | grep -F 'canary 1.5*'
printf 'a.c\nabc\nx\n' | grep -cF -e a.c -e x; printf 'abc\n' | grep -vF b; echo "v $?"
""")
    assert out == "[ 1.0] canary 1.5* here\n2\nv 1\n"


def test_diff_and_comm(shared: Machine, tmp_path: Path) -> None:
    out, _, _ = sh(shared, tmp_path, """\
expect="a
b
c"
result="a
B
c
d"
echo -e "not ok\\n\\n$(diff -upr --label expected --label result <(echo "$expect") <(echo "$result"))\\n"
diff -u <(echo same) <(echo same); echo "same $?"
t=$(mktemp --tmpdir -t klp-dmesg-XXXXXX); printf '1\\n2\\n' > "$t"
printf '1\\n2\\n3\\n4\\n' | comm --nocheck-order -13 "$t" -; rm -f "$t"
""")
    assert out == ("not ok\n\n--- expected\n+++ result\n@@ -1,3 +1,4 @@\n a\n-b\n+B\n c\n+d\n\n"
                   "same 0\n3\n4\n")


def test_coreutils(shared: Machine, tmp_path: Path) -> None:
    out, err, _ = sh(shared, tmp_path, """\
seq 3; seq 2 4 | tr '\\n' ' '; echo; seq 5 -2 1 | wc -l; seq -s, 3; seq 1 0; echo "empty $?"
basename /a/b/c.sh; basename /a/b/c.sh .sh; dirname /a/b/c; dirname c; dirname /c; dirname ./t.sh
echo hello world | wc -w; printf 'a\\nb\\n' | wc -l; echo abc | tr a-c x-z; echo "a b c" | tr ' ' ','
echo aabbcc | tr -s ab; echo abc | tr -d b; printf '1\\n2\\n3\\n' | head -n 2; printf '1\\n2\\n3\\n' | head -1
tr; echo "tr $?"
""")
    assert out == ("1\n2\n3\n2 3 4 \n3\n1,2,3\nempty 0\nc.sh\nc\n/a/b\n.\n/\n.\n2\n2\nxyz\na,b,c\nabcc\nac\n"
                   "1\n2\n1\ntr 1\n")
    assert err == "tr: missing operand\nTry 'tr --help' for more information.\n"


@pytest.mark.parametrize("script, message", [
    ("cat -n /proc/cmdline\n", "cat -n: options are not supported"),
    ("dmesg --level=err\n", "dmesg --level=err is not supported"),
    ("sysctl -a\n", "sysctl -a is not supported"),
    ("stat /proc/cmdline\n", "stat without --format is not supported"),
    ("modprobe --first-time x\n", "modprobe --first-time is not supported"),
    ("diff /proc/cmdline /proc/cmdline\n", "diff without -u (the normal format) is not supported"),
])
def test_options_the_commands_do_not_have_are_named(shared: Machine, tmp_path: Path, script: str,
                                                    message: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        run_script(shared, tmp_path, "echo first\n" + script)
    assert str(exc.value).startswith(f"./t.sh: line 2: {message}")
