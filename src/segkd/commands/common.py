"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
from typing import Any

from segkd.config import load_config


def add_config_arguments(parser: argparse.ArgumentParser, config_required: bool = True) -> None:
    """Add the positional CONFIG and trailing ``key=value`` overrides every config-driven command takes."""
    parser.add_argument("config", nargs=None if config_required else "?", help="YAML config file")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=0.02"
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")


def config_from_args(args: argparse.Namespace) -> Any:
    """Load the config named on the command line with its overrides applied."""
    return load_config(args.config, args.overrides)
