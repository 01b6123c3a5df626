"""Command line: ``python -m stnlib <command> ...``.

Each command lives in the module that owns its concept; that module defines
``add_cli(subparsers)``, which adds its sub-parser(s) and sets ``func`` on them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute commands, in the order ``--help`` lists them.
_COMMAND_MODULES: tuple[str, ...] = (
    "stnlib.train",
    "stnlib.bench",
    "stnlib.paper",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stnlib", description="Spatial Transformer Networks course tools."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).add_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
