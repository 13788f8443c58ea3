# The switch_to/RIP hazard (README: "The switch_to/RIP hazard").
# Run on the legacy kernel, whose __schedule switches stacks inline and
# saves no resume address:
#     klpemu run scenarios/switch-to-hazard.sh --kernel legacy
# klpemu_sched_frame replaces __schedule with a version whose frame is
# larger; klpemu_sched_inline fixes finish_task_switch, which gcc inlined
# into __schedule, so it must replace __schedule too, and its frame grows as
# well. Either way a task that went to sleep in one __schedule would resume
# in the other's code on the wrong frame, so livepatch refuses both.
# `klpemu hazards --kernel legacy` lists what is unsafe to patch and why;
# `--unsafe-switch-to` lets the first patch through: watch the oops.

start_test "livepatch __schedule with another frame"
load_failing_mod klpemu_sched_frame
load_failing_mod klpemu_sched_inline
check_result "livepatch: function '__schedule' switches stacks without saving RIP: a task sleeping in it would resume in a different frame (old: 64 bytes, rbp@CFA-16 r15@CFA-24 r14@CFA-32 r13@CFA-40 r12@CFA-48 rbx@CFA-56 rbp@CFA-64; new: 88 bytes, rbp@CFA-16 r15@CFA-24 r14@CFA-32 r13@CFA-40 r12@CFA-48 rbx@CFA-56 rbp@CFA-88)
livepatch: function '__schedule' switches stacks without saving RIP: a task sleeping in it would resume in a different frame (old: 64 bytes, rbp@CFA-16 r15@CFA-24 r14@CFA-32 r13@CFA-40 r12@CFA-48 rbx@CFA-56 rbp@CFA-64; new: 72 bytes, rbp@CFA-16 r15@CFA-24 r14@CFA-32 r13@CFA-40 r12@CFA-48 rbx@CFA-56 rbp@CFA-72)"
