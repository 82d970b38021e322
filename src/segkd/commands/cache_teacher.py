"""``segkd cache-teacher CONFIG [key=value ...]``: run the frozen teacher once over the training images and
store the outputs its terms read; ``distill.teacher.cache: DIR`` then trains from them
(see :mod:`segkd.cache` and docs/TEACHER_CACHE.md). Resumable: run it again after an interruption."""

from __future__ import annotations

import argparse

from segkd.commands.common import add_config_arguments, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache-teacher", help="store the teacher's outputs once for distillation without the teacher",
        description=__doc__,
    )
    add_config_arguments(parser)
    parser.add_argument("--out", default=None, help="cache folder (default: distill.teacher.cache)")
    parser.add_argument("--split", action="append", default=None,
                        help="split to cache (repeatable; default: data.train_split)")
    parser.add_argument("--codec", choices=("float16", "topk", "float32"), default="float16",
                        help="storage of each map (default float16; topk: k largest logits + a rest value)")
    parser.add_argument("--topk", type=int, default=4, help="k of --codec topk (default 4)")
    parser.add_argument("--keys", nargs="+", default=None, choices=("logits", "aux_logits", "feat"),
                        help="teacher outputs to store (default: what the recipe's terms read)")
    parser.add_argument("--error-images", type=int, default=8,
                        help="images on which the stored targets are compared with float32 (default 8)")
    parser.add_argument("--overwrite", action="store_true", help="replace another cache in the folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segkd.engine.teacher_cache import cache_teacher, describe

    cfg = config_from_args(args)
    manifest = cache_teacher(cfg, args.out, args.split, args.codec, args.topk, args.keys, args.overwrite,
                             args.error_images, progress=not args.no_progress)
    print(describe(manifest))
    return 0
