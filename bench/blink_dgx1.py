"""Blink's setting: a job given only part of a DGX-1. Packed trees against the ring on every allocation.

``python -m synccl.bench.blink_dgx1 [--size 256MiB] [--json FILE]`` enumerates every connected
allocation of 3 to 7 GPUs of ``dgx1`` up to symmetry (two allocations are the same when their
NVLink graphs are isomorphic with equal link bandwidths), and simulates all_reduce and broadcast
on each at one large size with

* ``trees``: :func:`synccl.synth.pack_trees`' spanning-tree packing on the allocation;
* ``ring``: what NCCL would run, a ring in rank order -- the library ring for all_reduce, a
  pipelined chain ``0 -> 1 -> ... -> k-1`` for broadcast -- whose neighbours need not share an
  NVLink, in which case the simulator routes the pair through other GPUs (Blink's baseline);
* ``best library``: the fastest library algorithm (default options, plus pipelined and
  two-channel bidirectional variants);
* ``bound``: :func:`synccl.synth.lower_bound` as bus bandwidth.

It prints a table per collective and the geometric-mean, smallest and largest speed-up of trees
over the ring. Broadcast's root is the allocation's first GPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import networkx as nx

from synccl.collectives import Buffer, Collective, CollectiveSpec, Program, chunk, library, parse_collective, program
from synccl.exceptions import CollectiveError, Infeasible, SolverTimeout, SyncclError
from synccl.sim import busbw_factor, simulate
from synccl.synth import lower_bound, pack_trees
from synccl.topologies import BANDWIDTH, LATENCY, MEMORY_BANDWIDTH, VERTEX_KIND, Topology, get_topology
from synccl.units import format_size, parse_size

__all__ = ["Allocation", "BlinkRow", "allocations", "chain_broadcast", "measure", "main"]

#: Pieces the broadcast chain and the pipelined library trees cut the message into (64 keeps a
#: 7-GPU chain within 5% of its slowest link at 256 MiB).
PIPELINE = 64


@dataclass(frozen=True, slots=True)
class Allocation:
    """One class of sub-allocations: ``ranks`` (physical ranks, the first in lexicographic order)
    stands for ``count`` connected allocations whose induced topologies are isomorphic to it."""

    ranks: tuple[int, ...]
    count: int
    topology: Topology


def _same_vertex(a: dict, b: dict) -> bool:
    return a[VERTEX_KIND] == b[VERTEX_KIND] and a.get(MEMORY_BANDWIDTH) == b.get(MEMORY_BANDWIDTH)


def _same_link(a: dict, b: dict) -> bool:
    return a[BANDWIDTH] == b[BANDWIDTH] and a[LATENCY] == b[LATENCY]


def _invariant(topo: Topology) -> tuple:
    """A cheap isomorphism invariant: the sorted per-vertex multisets of outgoing and incoming bandwidths."""
    g = topo.graph
    return tuple(
        sorted(
            (
                str(g.nodes[v][VERTEX_KIND]),
                tuple(sorted(d[BANDWIDTH] for *_, d in g.out_edges(v, data=True))),
                tuple(sorted(d[BANDWIDTH] for *_, d in g.in_edges(v, data=True))),
            )
            for v in g
        )
    )


def allocations(topology: Topology, *, min_ranks: int = 3, max_ranks: int | None = None) -> list[Allocation]:
    """Every connected allocation of ``min_ranks..max_ranks`` ranks of ``topology``, up to symmetry.

    An allocation is a set of ranks; the job sees :meth:`Topology.subset` of it (renumbered in
    ascending physical order). It is connected when every kept rank reaches every other along
    the kept links (switches stay, so traffic may cross them). Two allocations are the same when
    their subset topologies are isomorphic as directed graphs with equal vertex kinds, memory
    bandwidths, link bandwidths and latencies (:func:`networkx.is_isomorphic`).

    Parameters
    ----------
    topology : Topology
        The machine, e.g. ``get_topology("dgx1")``.
    min_ranks, max_ranks : int
        Allocation sizes; ``max_ranks`` defaults to all but one rank.

    Returns
    -------
    list of Allocation
        One per class, by size then by representative.

    Raises
    ------
    CollectiveError
        If the size range is empty or out of ``1..nranks``.

    Examples
    --------
    >>> from synccl.topologies import get_topology
    >>> [(a.ranks, a.count) for a in allocations(get_topology("ring:5"), min_ranks=2, max_ranks=4)]
    [((0, 1), 5), ((0, 1, 2), 5), ((0, 1, 2, 3), 5)]
    """
    n = topology.nranks
    top = n - 1 if max_ranks is None else max_ranks
    if not 1 <= min_ranks <= top <= n:
        raise CollectiveError(f"allocations: need 1 <= min_ranks <= max_ranks <= {n}, got {min_ranks!r} and {top!r}")
    found: list[Allocation] = []
    for k in range(min_ranks, top + 1):
        classes: dict[tuple, list[list]] = {}  # invariant -> [representative ranks, count, topology]
        for ranks in itertools.combinations(topology.ranks, k):
            sub = topology.subset(ranks)
            if not sub.is_connected():
                continue
            bucket = classes.setdefault(_invariant(sub), [])
            for entry in bucket:
                if nx.is_isomorphic(entry[2].graph, sub.graph, node_match=_same_vertex, edge_match=_same_link):
                    entry[1] += 1
                    break
            else:
                bucket.append([ranks, 1, sub])
        found.extend(sorted((Allocation(r, c, t) for bucket in classes.values() for r, c, t in bucket), key=lambda a: a.ranks))
    return found


def chain_broadcast(nranks: int, *, chunks: int = PIPELINE) -> Program:
    """Broadcast from rank 0 down the chain ``0 -> 1 -> ... -> n-1``, pipelined over ``chunks`` pieces (NCCL's ring broadcast).

    Every rank receives on channel 0 and forwards on channel 1, so piece ``m + 1`` arrives while
    piece ``m`` moves on (in one channel all receives would come before all sends, since the
    lowering orders a channel by dependency depth); the root's local copy has channel 0 to itself.
    Every rank must call the collective; out of place, the input is not modified.

    >>> [len(ch.instructions) for ch in chain_broadcast(3, chunks=2).ranks[1].channels]
    [2, 2]
    """
    spec = CollectiveSpec("broadcast", nranks, chunk_factor=chunks, root=0)
    with program(f"chain_broadcast_n{nranks}", spec) as p:
        for m in range(chunks):
            ref = chunk(0, Buffer.INPUT, m)
            ref.copy(0, Buffer.OUTPUT, m, send_channel=0)
            for r in range(1, nranks):
                ref = ref.copy(r, Buffer.OUTPUT, m, send_channel=1, recv_channel=0)
    return p.program


def _library_variants(collective: Collective, nranks: int) -> dict[str, Program]:
    """Every applicable library algorithm with default options, and its pipelined / two-way variant."""
    programs = {}
    for info in library.applicable(collective, nranks, local_size=nranks):
        programs[info.name] = library.build(info.name, collective, nranks, local_size=nranks)
        if "chunks" in info.options:
            programs[f"{info.name} (chunks={PIPELINE})"] = library.build(info.name, collective, nranks, local_size=nranks, chunks=PIPELINE)
        if "bidirectional" in info.options:
            programs[f"{info.name} (2 channels, both ways)"] = library.build(
                info.name, collective, nranks, local_size=nranks, channels=2, bidirectional=True
            )
    return programs


def _ring(collective: Collective, nranks: int) -> Program:
    if collective is Collective.BROADCAST:
        return chain_broadcast(nranks)
    return library.build("ring", collective, nranks)


def _trees(collective: Collective, topo: Topology) -> Program:
    return pack_trees(collective, topo, root=0).to_program()


@dataclass(frozen=True, slots=True)
class BlinkRow:
    """One allocation and collective: simulated busbw (GB/s) of each contender and the bound's."""

    ranks: tuple[int, ...]
    count: int
    collective: str
    size_bytes: int
    trees_busbw: float | None
    ring_busbw: float
    best_library: str
    best_library_busbw: float
    bound_busbw: float
    note: str = ""

    @property
    def trees_over_ring(self) -> float | None:
        """Speed-up of the trees over the ring (``None`` when synthesis failed)."""
        return None if self.trees_busbw is None else self.trees_busbw / self.ring_busbw

    @property
    def trees_over_bound(self) -> float | None:
        """Fraction of the bound's busbw the trees reach (``None`` when synthesis failed)."""
        return None if self.trees_busbw is None else self.trees_busbw / self.bound_busbw


def measure(allocation: Allocation, collective: Collective | str, size_bytes: int) -> BlinkRow:
    """Simulate trees, the ring and the library on ``allocation`` at ``size_bytes``; a synthesis that fails is noted, not raised."""
    coll = parse_collective(collective)
    topo, k = allocation.topology, allocation.topology.nranks
    ring = simulate(_ring(coll, k), topo, size_bytes).busbw_gbps
    lib = {name: simulate(prog, topo, size_bytes).busbw_gbps for name, prog in _library_variants(coll, k).items()}
    best = max(lib, key=lib.__getitem__)
    bound = lower_bound(topo, CollectiveSpec(coll, k, root=0 if coll.is_rooted else None), size_bytes)
    bound_busbw = size_bytes / bound.time_us / 1e3 * busbw_factor(coll, k)
    trees, note = None, ""
    try:
        trees = simulate(_trees(coll, topo), topo, size_bytes).busbw_gbps
    except (Infeasible, SolverTimeout) as err:
        note = f"trees: {err}"
    return BlinkRow(allocation.ranks, allocation.count, coll.value, size_bytes, trees, ring, best, lib[best], bound_busbw, note)


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _busbw(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, headers)), *([str(v) for v in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def report(rows: Sequence[BlinkRow]) -> str:
    """The table of ``rows`` (one collective) and its summary line."""
    lines = [
        _table(
            ["subset", "ranks", "allocs", "trees", "ring", "best library", "", "bound", "trees/ring", "trees/bound"],
            [
                [
                    ",".join(map(str, r.ranks)),
                    len(r.ranks),
                    r.count,
                    _busbw(r.trees_busbw),
                    _busbw(r.ring_busbw),
                    _busbw(r.best_library_busbw),
                    r.best_library,
                    _busbw(r.bound_busbw),
                    _ratio(r.trees_over_ring),
                    _ratio(r.trees_over_bound),
                ]
                for r in rows
            ],
        )
    ]
    speedups = [r.trees_over_ring for r in rows if r.trees_over_ring is not None]
    of_bound = [r.trees_over_bound for r in rows if r.trees_over_bound is not None]
    if speedups:
        geo = math.exp(sum(math.log(s) for s in speedups) / len(speedups))
        lines.append(
            f"trees over ring: geo-mean {geo:.2f}x, min {min(speedups):.2f}x, max {max(speedups):.2f}x over {len(speedups)} allocations; "
            f"trees reach {min(of_bound):.0%}..{max(of_bound):.0%} of the bound"
        )
    lines.extend(r.note for r in rows if r.note)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Enumerate, simulate and print; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m synccl.bench.blink_dgx1", description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="dgx1", help="the whole machine (default dgx1)")
    parser.add_argument("--size", default="256MiB", help="message size as nccl-tests counts it (default 256MiB)")
    parser.add_argument("--collective", action="append", help="all_reduce, broadcast, ... (repeatable; default all_reduce and broadcast)")
    parser.add_argument("--min-ranks", type=int, default=3, help="smallest allocation (default 3)")
    parser.add_argument("--max-ranks", type=int, help="largest allocation (default all GPUs but one)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    try:
        topo = get_topology(args.topology)
        size = parse_size(args.size)
        collectives = [parse_collective(c) for c in args.collective or ("all_reduce", "broadcast")]
        allocs = allocations(topo, min_ranks=args.min_ranks, max_ranks=args.max_ranks)
        rows = {c: [measure(a, c, size) for a in allocs] for c in collectives}
    except (SyncclError, ValueError) as err:
        print(f"blink_dgx1: error: {err}", file=sys.stderr)
        return 2
    print(
        f"{topo.name}: {sum(a.count for a in allocs)} connected allocations of {allocs[0].topology.nranks}..{allocs[-1].topology.nranks} GPUs, {len(allocs)} up to symmetry"
    )
    for coll, coll_rows in rows.items():
        print(f"\n{coll.value} of {format_size(size)} on allocations of {topo.name}: simulated busbw GB/s")
        print(report(coll_rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for rs in rows.values() for r in rs], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
