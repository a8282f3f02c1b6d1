"""The ``synccl`` command line: it parses, calls library functions and formats, nothing more.

Subcommands are registered in one place (:data:`_COMMANDS`); ``python -m synccl`` works too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from synccl import __version__
from synccl.cli import _algo, _bench, _kernels, _run, _sim, _synth, _topo, _verify, _xml
from synccl.exceptions import SyncclError, VerificationError

__all__ = ["main"]

_COMMANDS = (_topo, _algo, _sim, _verify, _xml, _run, _bench, _synth, _kernels)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="synccl", description="Topology-aware collective communication: write, verify, simulate and run collective algorithms.")
    parser.add_argument("--version", action="version", version=f"synccl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 verification failed, 2 bad input).

    >>> main(["algo", "list", "--collective", "broadcast"])  # doctest: +ELLIPSIS
    collective ...
    0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except VerificationError as err:
        print(f"synccl {args.command}: {err}", file=sys.stderr)
        for violation in err.violations[1:]:
            print(f"  {violation}", file=sys.stderr)
        return 1
    except (SyncclError, ValueError, OSError) as err:
        print(f"synccl {args.command}: error: {err}", file=sys.stderr)
        return 2
