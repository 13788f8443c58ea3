"""The arguments of `klpemu explore`: apart from the command, so that the
CLI's parser is built without importing the explorer."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("script", help="the scenario")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--seeds", default=None, metavar="A..B", help="seeds A up to B-1 (B-A runs per configuration)")
    which.add_argument("--runs", type=int, default=None, metavar="N", help="seeds 0 to N-1 (default 100)")
    p.add_argument("--strategy", default="random", metavar="STRATEGY[,NAME=VALUE…]",
                   help="rr, random, pct or targeted, with parameters (e.g. pct,depth=3,steps=4000)")
    p.add_argument("--cpus", default="2", metavar="N[,N…]", help="CPU counts to try (e.g. 1,2,4)")
    p.add_argument("--kernel", default="modern", metavar="K[,K…]", help="kernels: modern, legacy or paths")
    p.add_argument("--dispatch", default=None, metavar="B[,B…]", help="dispatch backends: native, python")
    p.add_argument("--klp-version", default=None, metavar="V[,V…]", help="kernel version profiles")
    p.add_argument("--module-dir", action="append", default=[], type=Path, help="where modules are found")
    p.add_argument("--unsafe-switch-to", action="store_true", help="let patches through the switch_to check")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: every core; 1: this one)")
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS", help="run on a Ray cluster instead")
    p.add_argument("--stop-on-first", action="store_true", help="stop at the first run that does not pass")
    p.add_argument("--minimize", action="store_true", help="shrink the first failing run (fewer CPUs, gentler schedule)")
    p.add_argument("--json", action="store_true", help="the results as JSON (klpemu/schemas/explore.schema.json)")
    p.add_argument("--report", type=Path, default=None, metavar="FILE.svg", help="write the SVG report there")
