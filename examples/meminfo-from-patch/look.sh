# Look at the patch at work: what ftrace shows, what /proc/meminfo says,
# and the transition on a timeline (klpemu run … --timeline look.svg).
load_lp livepatch_memavailable
cat /sys/kernel/tracing/enabled_functions
grep MemAvailable /proc/meminfo
disable_lp livepatch_memavailable
unload_lp livepatch_memavailable
