"""``segkd eval CONFIG checkpoint=PATH [key=value ...]``: mIoU, per-class IoU, accuracies, plots.

``checkpoint=PATH`` is shorthand for ``eval.checkpoint=PATH``; modes via ``eval.mode=whole|slide|multiscale``.
"""

from __future__ import annotations

import argparse

from segkd.commands.common import add_config_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a checkpoint on the validation split", description=__doc__
    )
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def normalize_overrides(overrides: list[str]) -> list[str]:
    """Turn a bare ``checkpoint=PATH`` into ``eval.checkpoint=PATH``."""
    return [f"eval.{o}" if o.startswith("checkpoint=") else o for o in overrides]


def run(args: argparse.Namespace) -> int:
    from segkd.config import load_config
    from segkd.distributed import cleanup_distributed
    from segkd.engine import evaluate

    cfg = load_config(args.config, normalize_overrides(args.overrides))
    try:
        if str(cfg.eval.checkpoint or "").endswith(".onnx"):  # an exported student, run by ONNX Runtime
            from segkd.export import evaluate_onnx

            evaluate_onnx(cfg, cfg.eval.checkpoint)
        else:
            evaluate(cfg)
    finally:
        cleanup_distributed()
    return 0
