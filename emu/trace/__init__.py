"""ftrace (ops on function entry sites), kprobes, the function tracer and the
pool of generated-code slots they share."""
