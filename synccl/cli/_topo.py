"""``synccl topo list`` and ``synccl topo show NAME [--json] [--draw out.png]``."""

from __future__ import annotations

import argparse
from collections import Counter

from synccl.cli._format import print_json, table
from synccl.topologies import draw_topology, get_topology, list_topologies, to_dict


def register(sub: argparse._SubParsersAction) -> None:
    topo = sub.add_parser("topo", help="list and show topologies")
    tsub = topo.add_subparsers(dest="topo_command", required=True, metavar="ACTION")
    lst = tsub.add_parser("list", help="the topology catalog")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=_list)
    show = tsub.add_parser("show", help="one topology's ranks, switches and links")
    show.add_argument("name", help="e.g. ring:8, torus2d:4x4, dgx1, dgx-a100:16, or a .json file")
    show.add_argument("--json", action="store_true", help="print the topology in the JSON file format")
    show.add_argument("--draw", metavar="PNG", help="draw the topology to this PNG file")
    show.set_defaults(func=_show)


def _list(args: argparse.Namespace) -> int:
    infos = list_topologies()
    if args.json:
        print_json([{"name": i.name, "description": i.description, "example": i.example} for i in infos])
    else:
        print(table(["name", "example", "description"], [[i.name, i.example, i.description] for i in infos]))
    return 0


def _show(args: argparse.Namespace) -> int:
    topo = get_topology(args.name)
    if args.draw:
        draw_topology(topo, args.draw)
    if args.json:
        print_json(to_dict(topo))
        return 0
    print(f"{topo.name}: {topo.nranks} ranks on {topo.nhosts} host(s), {len(topo.switches)} switch/NIC vertices, {topo.graph.number_of_edges()} directed links")
    if topo.description:
        print(topo.description)
    groups: Counter[tuple[str, str, float, float, int]] = Counter()
    for link in topo.links():
        ends = tuple("rank" if isinstance(v, int) else topo.vertex_kind(v).value for v in (link.src, link.dst))
        groups[f"{ends[0]}->{ends[1]}", link.kind.value, link.bandwidth, link.latency, link.lanes] += 1
    rows = [[ends, kind, bw, lat, lanes, count] for (ends, kind, bw, lat, lanes), count in sorted(groups.items())]
    print(table(["between", "kind", "GB/s", "latency us", "lanes", "links"], rows))
    if args.draw:
        print(f"drew {args.draw}")
    return 0
