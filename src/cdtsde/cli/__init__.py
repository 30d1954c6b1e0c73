"""The `cdtsde` command. Each sub-command lives in its own module with an `add_parser(subparsers)`
function that registers it and sets `func(args) -> int` (the exit code)."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import CdtsdeError

# module names under cdtsde.cli, one per sub-command group
COMMAND_MODULES: list[str] = ["methods", "train", "translate", "evaluate", "data", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdtsde", description="Cross-modality image translation: CDTSDE and other methods behind one interface."
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"cdtsde {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CdtsdeError as exc:
        print(f"cdtsde {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cdtsde {args.command}: interrupted", file=sys.stderr)
        return 130
