"""``synccl algo list [--collective C]``."""

from __future__ import annotations

import argparse

from synccl.cli._format import print_json, table
from synccl.collectives import library


def register(sub: argparse._SubParsersAction) -> None:
    algo = sub.add_parser("algo", help="the algorithm library")
    asub = algo.add_subparsers(dest="algo_command", required=True, metavar="ACTION")
    lst = asub.add_parser("list", help="library algorithms and their options")
    lst.add_argument("--collective", help="only algorithms for this collective (e.g. all_reduce)")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=_list)


def _list(args: argparse.Namespace) -> int:
    infos = library.algorithms(args.collective)
    if args.json:
        print_json([{"name": i.name, "collective": i.collective.value, "description": i.description, "options": list(i.options)} for i in infos])
    else:
        print(table(["collective", "algorithm", "options", "description"], [[i.collective.value, i.name, ",".join(i.options), i.description] for i in infos]))
    return 0
