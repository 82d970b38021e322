"""``segkd data check``: scan a dataset and print counts, class histogram, size range and problems."""

from __future__ import annotations

import argparse

from segkd.commands.common import add_config_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``segkd data`` with its ``check`` sub-command."""
    parser = subparsers.add_parser("data", help="inspect datasets")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="scan a dataset and list every problem",
        description="Scan a dataset (from CONFIG, or --dataset/--root) and print sample counts, class "
        "frequencies, the image size range and every problem found, with file paths. "
        "Exit code 1 when problems were found.",
    )
    add_config_arguments(check, config_required=False)
    check.add_argument("--dataset", help="dataset name (instead of CONFIG), e.g. cityscapes, folder")
    check.add_argument("--root", help="dataset root folder (with --dataset)")
    check.add_argument("--split", action="append", help="split to scan (repeatable; default: train and val)")
    check.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, e.g. num_classes=5 (with --dataset; repeatable)",
    )
    check.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    check.set_defaults(func=run_check)
    parser.set_defaults(func=lambda args: parser.print_help() or 1)


def _target(args: argparse.Namespace) -> tuple[str, str | None, list[str], dict]:
    """(name, root, splits, options) from CONFIG or from --dataset/--root/--option."""
    from segkd.config import parse_override

    if args.dataset:
        if args.config:
            raise ValueError("give either CONFIG or --dataset, not both")
        options = {}
        for text in args.option:
            keys, value = parse_override(text)
            options[".".join(keys)] = value
        return args.dataset, args.root, args.split or ["train", "val"], options
    if not args.config:
        raise ValueError("give a CONFIG file or --dataset NAME --root PATH")
    from segkd.commands.common import config_from_args

    cfg = config_from_args(args).data
    root = args.root or cfg.root
    return (
        cfg.name,
        root,
        args.split or list(dict.fromkeys([cfg.train_split, cfg.val_split])),
        dict(cfg.options),
    )


def run_check(args: argparse.Namespace) -> int:
    """Scan each requested split; return 1 if any problem was found."""
    from segkd.data import check

    name, root, splits, options = _target(args)
    found = 0
    for split in splits:
        dataset = check.open_for_check(name, root, split, options)
        report = check.scan(dataset, name, split, progress=not args.no_progress)
        print(check.format_report(report))
        found += len(report.problems)
    return 1 if found else 0
