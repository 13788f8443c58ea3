"""The guest's file system as Python sees it: the VFS of /proc and /sys
files implemented in Python, beside the guest's own table."""
