# The demo: boot, look around through the guest's own /proc, talk to the log.
cat /proc/cmdline
cat /proc/meminfo
echo "klpemu demo: hello from user space" > /dev/kmsg
sleep 2
cat /proc/uptime
# the shell's own kernel stack, as the unwinder sees it
cat /proc/1/stack
