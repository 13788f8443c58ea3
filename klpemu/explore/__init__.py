"""Exploring interleavings: one scenario over many schedules, each run
forked from one booted machine, each outcome classified (pass, a
check_result diff, an oops, a hang, a transition still blocked), summed up
with a replay line per class. `klpemu explore` is the command; the local
pool over all cores is the default, Ray (`--ray`) spreads the same runs
over a cluster with the same results."""
