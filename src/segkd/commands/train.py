"""``segkd train CONFIG [key=value ...]``: train a teacher, a baseline or a distilled student.

Works the same under plain ``python`` and ``torchrun --nproc_per_node=N``.
"""

from __future__ import annotations

import argparse
import sys

from segkd.commands.common import add_config_arguments, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model (optionally distilled from a teacher)", description=__doc__
    )
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segkd.distributed import cleanup_distributed
    from segkd.engine import train
    from segkd.engine.distiller import NonFiniteLossError
    from segkd.engine.trainer import ValidationFailed

    cfg = config_from_args(args)
    try:
        run_dir = train(cfg)
    except NonFiniteLossError as err:
        print(f"segkd train: error: {err}", file=sys.stderr)
        return 3
    except ValidationFailed as err:
        print(f"segkd train: error: {err}", file=sys.stderr)
        return 1
    finally:
        cleanup_distributed()
    print(f"segkd train: run directory {run_dir}")
    return 0
