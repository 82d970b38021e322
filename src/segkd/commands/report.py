"""``segkd report RUN_DIR... [--out DIR]``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="compare finished runs: table (Markdown/CSV) and plots",
        description="Reads RUN_DIR/summary.json and eval/metrics.json of each run. The qualitative grid "
                    "rebuilds every run's student from config.yaml + checkpoint and predicts the first "
                    "validation images of the first run's dataset, so all columns show the same images.")
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--out", default="report",
                        help="output folder (default: report; OUT-2 ... when it holds an earlier report)")
    parser.add_argument("--num-images", type=int, default=3, help="rows of the qualitative grid")
    parser.add_argument("--no-qualitative", action="store_true", help="skip the qualitative grid")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segkd.report import make_report

    path = make_report(args.runs, args.out, args.num_images, not args.no_qualitative)
    print(path.read_text().split("\n## ")[0])
    print(f"wrote {path}")
    return 0
