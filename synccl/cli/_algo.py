"""``synccl algo list [--collective C]``."""

from __future__ import annotations

import argparse

from synccl.cli._format import print_json, table
from synccl.collectives import library, parse_collective
from synccl.synth import installed
from synccl.topologies import get_topology


def register(sub: argparse._SubParsersAction) -> None:
    algo = sub.add_parser("algo", help="the algorithm library")
    asub = algo.add_subparsers(dest="algo_command", required=True, metavar="ACTION")
    lst = asub.add_parser("list", help="library algorithms and their options")
    lst.add_argument("--collective", help="only algorithms for this collective (e.g. all_reduce)")
    lst.add_argument("--topology", help="also list the algorithms installed for this topology (synccl synth --install)")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=_list)


def _list(args: argparse.Namespace) -> int:
    infos = library.algorithms(args.collective)
    rows = [{"name": i.name, "collective": i.collective.value, "description": i.description, "options": list(i.options), "source": "library"} for i in infos]
    if args.topology:
        wanted = parse_collective(args.collective) if args.collective else None
        for prog in installed(get_topology(args.topology)):
            if wanted is None or prog.collective is wanted:
                span = f"{prog.min_bytes} B and up" if prog.max_bytes is None else f"{prog.min_bytes} to {prog.max_bytes} B"
                rows.append({"name": prog.name, "collective": prog.collective.value, "description": f"installed for {args.topology}, {span}", "options": [], "source": "installed"})
    if args.json:
        print_json(rows)
    else:
        print(table(["collective", "algorithm", "options", "description"], [[r["collective"], r["name"], ",".join(r["options"]), r["description"]] for r in rows]))
    return 0
