"""``segkd demo [--quick]``: a fair comparison of distillation methods on built-in data, on a CPU.

Trains a teacher once, then a student baseline with few labelled images and the student distilled with
pixel KD, CWD on features, DIST and CIRKD (which also learn from unlabelled images through the teacher),
the unlabelled-image bundle (the teacher's hard labels on the unlabelled images plus DIST, configs/_base/
methods/unlabeled.yaml) and the offline pseudo-label baseline (predict, then train: the teacher cache's
labels, a plain run), over 3
seeds at equal compute, and prints each method's mean ± std and the gain's 95 % confidence
interval; ``compare.md``, ``compare.json`` and plots go to the output folder.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="train and compare KD methods on built-in data (CPU)", description=__doc__
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run (tiny sizes, 2 seeds; accuracy near chance)"
    )
    parser.add_argument(
        "--setting",
        default="default",
        choices=["default", "shapes64", "digits", "textured"],
        help="the task: default (shapes, 96 px, 32 labels), or a held-out one that no default was chosen "
        "on: shapes64 (6 classes, 64 px, 200 labels), digits (handwritten digits, 11 classes, 100 labels), "
        "textured (textured shapes, 5 classes, 80 px, 64 labels)",
    )
    parser.add_argument("--output", default=None, help="output folder (default runs/demo[-SETTING])")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="NAME",
        help="rows besides the baseline, from kd cwd dist cirkd unlabeled offline kd@cache (default: all "
        "but kd@cache)",
    )
    parser.add_argument(
        "--match",
        choices=["time", "iters", "both"],
        default="time",
        help="equal compute (time, default), equal iterations (iters), or both",
    )
    parser.add_argument(
        "--time-by",
        choices=["clock", "ratio"],
        default="clock",
        help="how equal compute becomes steps: clock (default; each run stops at its seed's baseline "
        "seconds) or ratio (each method trains budget / its step ratio measured once before training: "
        "every seed the same steps)",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segkd.demo.pipeline import CACHED_METHODS, METHODS, run_demo

    known = [*METHODS, *CACHED_METHODS]
    unknown = [m for m in args.methods or [] if m not in known]
    if unknown:
        raise ValueError(f"unknown demo method(s) {unknown}; choose from {known}")
    matches = ["iters", "time"] if args.match == "both" else [args.match]
    output = args.output or ("runs/demo" if args.setting == "default" else f"runs/demo-{args.setting}")
    result = run_demo(output, quick=args.quick, methods=args.methods, matches=matches,
                      setting_name=args.setting, time_by=args.time_by)
    print(f"segkd demo: report written to {result['report']} ({result['total_time_s']:.0f} s in all)")
    for line in result.get("notes", []):
        print(f"  {line}")
    return 0
