"""The ``segkd`` command line: one entry point, one sub-command per module in :mod:`segkd.commands`.

Each command module defines ``register(subparsers)`` which adds its parser and sets ``func`` to the
function that runs it. Command modules import heavy dependencies inside their run function so that
``segkd --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from segkd.config import ConfigError
from segkd.outputs import DiskFullError, files_written
from segkd.registry import RegistryError

# Order shown in ``segkd --help``.
COMMAND_MODULES = (
    "demo", "train", "compare", "cache_teacher", "eval", "profile", "data", "export", "predict", "bench",
    "report",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="segkd", description="Knowledge distillation for semantic segmentation."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"segkd.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command; user errors print one clear line, exit code 2; a full
    disk one line, exit code 1; Ctrl-C that reaches here (start-up, or a command without its own handling)
    one line, exit code 130 (``--debug`` shows the traceback instead)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # ``key=value`` overrides may also follow the options (``segkd compare CFG --methods kd data.root=X``).
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    from segkd.engine.allocator import fix_malloc_thresholds

    fix_malloc_thresholds()  # every command: CPU costs that do not depend on the process's history
    written = files_written()
    try:
        result = args.func(args)
    except (ConfigError, RegistryError, FileNotFoundError, ValueError) as err:
        if getattr(args, "debug", False):
            raise
        print(f"segkd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except DiskFullError as err:
        if getattr(args, "debug", False):
            raise
        print(f"segkd {args.command}: error: {err.strerror}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        from segkd.engine.stop import TrainingInterrupted  # already loaded when training raised it

        if not isinstance(err, TrainingInterrupted):
            raise
        print(f"segkd {args.command}: {err}", file=sys.stderr)  # train, compare, demo: a checkpoint was saved
        return err.exit_code
    except KeyboardInterrupt as err:
        if getattr(args, "debug", False):
            raise
        print(f"segkd {args.command}: {interrupted_message(err, files_written() - written)}", file=sys.stderr)
        return 130
    return int(result or 0)


def interrupted_message(err: KeyboardInterrupt, written: int) -> str:
    """One line for a Ctrl-C that reached the command line: the interrupting code's own message (e.g. a
    second Ctrl-C during training), else what was written before it (``written``: files this command wrote
    through :mod:`segkd.outputs`, each complete or not at all)."""
    if str(err):
        return str(err)
    if not written:
        return "interrupted during start-up, before it wrote anything; nothing was trained or written"
    return f"interrupted; the {written} file(s) it had written are complete (each is written atomically)"


if __name__ == "__main__":
    sys.exit(main())
