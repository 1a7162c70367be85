"""The ``fvstudio`` command: no arguments opens the explorer; subcommands run the engine headless."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fvstudio",
        description="Fisher Vector image classification: explorer (no arguments) and headless runner.",
    )
    parser.add_argument("--version", action="version", version="fvstudio 0.1.0")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
