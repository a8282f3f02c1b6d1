"""``synccl sim``: simulate library algorithms on a topology and compare with the lower bound."""

from __future__ import annotations

import argparse
from typing import Any

from synccl.cli._format import print_json, table
from synccl.collectives import Program, library, parse_collective
from synccl.exceptions import TopologyError
from synccl.sim import simulate
from synccl.synth import lower_bound
from synccl.topologies import Topology, get_topology
from synccl.units import format_size, parse_size

_BUILD_OPTIONS = ("channels", "chunks", "root", "inplace", "bidirectional")


def register(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser("sim", help="simulate an algorithm on a topology")
    sim.add_argument("--topology", "-t", required=True, help="e.g. ring:8, dgx1, dgx-a100:4, or a .json file")
    sim.add_argument("--collective", "-c", required=True, help="all_reduce, all_gather, reduce_scatter, all_to_all, broadcast, reduce, gather, scatter")
    sim.add_argument("--algorithm", "-a", help="library algorithm (default: every one that applies)")
    sim.add_argument("--size", "-s", default="64MiB", help="message size as nccl-tests counts it, e.g. 4096, 1M, 64MiB (default 64MiB)")
    sim.add_argument("--channels", type=int, help="parallel rings (ring algorithms)")
    sim.add_argument("--chunks", type=int, help="pipeline depth (tree algorithms)")
    sim.add_argument("--root", type=int, help="root rank (rooted collectives)")
    sim.add_argument("--inplace", action="store_true", default=None, help="in-place variant")
    sim.add_argument("--bidirectional", action="store_true", default=None, help="alternate ring directions (ring algorithms)")
    sim.add_argument("--json", action="store_true", help="print JSON (an object with --algorithm, else a list)")
    sim.set_defaults(func=_run)


def local_size_of(topo: Topology) -> int:
    """Ranks per machine of ``topo`` (all of them on a single machine)."""
    sizes = {len(topo.ranks_on_host(h)) for h in {topo.host_of(r) for r in topo.ranks}}
    if len(sizes) != 1:
        raise TopologyError(f"sim: topology {topo.name!r} has machines of different sizes {sorted(sizes)}")
    return sizes.pop()


def record(topo: Topology, program: Program, algorithm: str, size: int) -> dict[str, Any]:
    """One simulation as the stable JSON record of ``synccl sim``."""
    result = simulate(program, topo, size)
    bound = lower_bound(topo, program.spec, size)
    return {
        "topology": topo.name,
        "collective": program.collective.value,
        "algorithm": algorithm,
        "nranks": program.nranks,
        "size_bytes": size,
        "time_us": result.time_us,
        "algbw_gbps": result.algbw_gbps,
        "busbw_gbps": result.busbw_gbps,
        "lower_bound_us": bound.time_us,
        "latency_bound_us": bound.latency_us,
        "bandwidth_bound_us": bound.bandwidth_us,
        "efficiency": bound.time_us / result.time_us if result.time_us > 0 else 1.0,
        "messages": result.messages,
    }


def _run(args: argparse.Namespace) -> int:
    topo = get_topology(args.topology)
    collective = parse_collective(args.collective)
    size = parse_size(args.size)
    local_size = local_size_of(topo)
    given = {k: getattr(args, k) for k in _BUILD_OPTIONS if getattr(args, k) is not None}
    if args.algorithm:
        infos = [library.get(args.algorithm, collective)]
    else:
        infos = library.applicable(collective, topo.nranks, local_size=local_size)
    records = []
    for info in infos:
        options = given if args.algorithm else {k: v for k, v in given.items() if k in info.options}
        program = library.build(info.name, collective, topo.nranks, local_size=local_size, **options)
        records.append(record(topo, program, info.name, size))
    if args.json:
        print_json(records[0] if args.algorithm else records)
        return 0
    print(f"{collective.value} of {format_size(size)} on {topo.name} ({topo.nranks} ranks)")
    rows = [[r["algorithm"], r["time_us"], r["algbw_gbps"], r["busbw_gbps"], r["lower_bound_us"], f"{100 * r['efficiency']:.1f}%"] for r in sorted(records, key=lambda r: r["time_us"])]
    print(table(["algorithm", "time us", "algbw GB/s", "busbw GB/s", "bound us", "of bound"], rows))
    return 0
