"""``segkd compare CONFIG --methods kd,cwd,... --seeds N --match iters|time|both [--budget B]``.

Trains the baseline and every method for every seed (one teacher: named by the recipes, or trained once
with ``--teacher-config``), at equal iterations and/or equal compute, and writes ``compare.md``,
``compare.json`` and plots. Run the same command again to continue a killed comparison. Works under
``torchrun --nproc_per_node=N -m segkd compare ...``.
"""

from __future__ import annotations

import argparse
import shlex
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare distillation methods over seeds at equal iterations or equal compute",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "config", help="folder of recipes (baseline.yaml, kd.yaml, ...) or the baseline's file"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides applied to every run")
    parser.add_argument(
        "--methods", required=True, help="comma-separated recipes (kd,cwd,cirkd,dist) or recipe files"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (default 3)")
    parser.add_argument(
        "--match",
        choices=["iters", "time", "both"],
        default="time",
        help="equal iterations, equal compute (student-step equivalents) or both",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=0.0,
        help="iterations (iters) or student-step equivalents (time) per run; "
        "default: the baseline's train.iters",
    )
    parser.add_argument(
        "--time-by",
        choices=["ratio", "clock"],
        default="ratio",
        help="time matching: each method's step ratio measured once, every seed then trains budget/ratio "
        "iterations (ratio, default: seeds differ by their seed alone), or each method's run charges its "
        "own clock and stops at the training seconds of the same seed's baseline run (clock)",
    )
    parser.add_argument(
        "--search-weights",
        default=None,
        metavar="F1,F2,...",
        help="search each method's loss weight: one row per factor (every distillation weight of the "
        "method times it, e.g. 0.5,1,2,4), same seeds and matching; compare.md names the best and what "
        "the search cost",
    )
    parser.add_argument(
        "--cache-cost",
        choices=["charge", "amortize", "free"],
        default="charge",
        help="<method>@cache rows under --match time: charge each run the cache's one-off cost (charge), "
        "a share per seed (amortize), or nothing (free)",
    )
    parser.add_argument("--teacher-config", help="train this teacher once and distil every method from it")
    parser.add_argument("--output", help="output folder (default runs/compare/<config name>)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segkd.compare import plan_from_files, run_compare
    from segkd.distributed import cleanup_distributed

    matches = ["iters", "time"] if args.match == "both" else [args.match]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    plan = plan_from_files(
        args.config,
        methods,
        args.seeds,
        matches,
        args.budget,
        args.output,
        args.teacher_config,
        args.overrides,
        args.cache_cost,
        args.time_by,
        _factors(args.search_weights),
    )
    try:
        run_compare(plan, header={"title": str(args.config), "command": shlex.join(["segkd", *sys.argv[1:]])})
    finally:
        cleanup_distributed()
    return 0


def _factors(text: str | None) -> list[float] | None:
    """``0.5,1,2`` -> [0.5, 1.0, 2.0]; a value that is not a number is named in one line."""
    if not text:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--search-weights: expected numbers separated by commas, got {text!r}") from None
