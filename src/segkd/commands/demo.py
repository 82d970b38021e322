"""``segkd demo [--quick]``: the whole pipeline on built-in synthetic data, on CPU, in minutes.

Trains a teacher and a student baseline, distills the student with KD, SKD, Knowledge Adaptation, CIRKD
and DIST (methods whose losses are not registered are skipped with a note), evaluates every run and
prints one comparison table; the Markdown report and plots go to the output folder.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="train and compare KD methods on built-in data (CPU)", description=__doc__
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke-test budget (about 25 s on 2 cores; accuracy near chance)"
    )
    parser.add_argument("--output", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="NAME",
        help="subset of kd skd ka cirkd dist (default: all)",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segkd.demo.pipeline import METHODS, run_demo

    known = [m.key for m in METHODS]
    unknown = [m for m in args.methods or [] if m not in known]
    if unknown:
        raise ValueError(f"unknown demo method(s) {unknown}; choose from {known}")
    result = run_demo(args.output, quick=args.quick, methods=args.methods)
    print(f"segkd demo: report written to {result['report']} ({result['total_time_s']:.0f} s in all)")
    return 0
