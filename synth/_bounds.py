"""Lower bounds on the time of a collective on a topology: latency from shortest paths, bandwidth from cuts.

Notation: ``R`` the ranks, ``N = |R|``, ``M`` the nccl-tests message size (see
:attr:`~synccl.collectives.CollectiveSpec.size_chunks`), ``B+(S)`` the total bandwidth of the
links leaving a vertex set ``S`` and ``d(a, b)`` the smallest summed link latency of a path
``a -> b`` (through any vertices, other ranks included).

Bandwidth bounds are cut arguments: whatever data must leave ``S`` takes at least its size over
``B+(S)``. For all_gather (ForestColl's statement) the best cut gives
``T >= (M/N) * max_S |S & R| / B+(S)`` over the sets ``S`` that miss some rank. By Edmonds'
branching theorem the best per-rank throughput ``x*`` is the largest ``x`` such that, with a
super source ``s`` feeding every rank at rate ``x``, every rank ``u`` can draw ``N x`` from ``s``;
:func:`_max_rate` finds ``x*`` exactly (``Fraction``; the max flows run on integers scaled by a
common denominator) by Dinkelbach's parametric search: each violated max-flow check returns a
cut whose ratio is the next, strictly smaller, candidate, and it stops at the best cut, usually
after one or two rounds of ``N`` max flows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import networkx as nx
import numpy as np

from synccl.collectives import Collective, CollectiveSpec, parse_collective
from synccl.exceptions import CollectiveError, Infeasible, TopologyError
from synccl.topologies import BANDWIDTH, LATENCY, Topology

__all__ = ["Bound", "latency_bound", "bandwidth_bound", "lower_bound"]

logger = logging.getLogger(__name__)

#: Topologies with at most this many vertices get the exact all_to_all cut bound by enumeration.
EXACT_CUT_VERTICES = 16
_CAPACITY = "capacity"
_BYTES_PER_US_PER_GBPS = 1000
_SOURCE = ("super-source",)  # a vertex name no topology uses (ranks are ints, switches strings)


@dataclass(frozen=True, slots=True)
class Bound:
    """A lower bound on the completion time of a collective at one message size.

    ``time_us`` is ``max(latency_us, bandwidth_us)``: each term alone is a valid bound, and
    their maximum is; their sum is not in general (pipelining overlaps the two).
    """

    collective: Collective
    nranks: int
    size_bytes: int
    latency_us: float
    bandwidth_us: float

    @property
    def time_us(self) -> float:
        """The bound, ``max(latency_us, bandwidth_us)``."""
        return max(self.latency_us, self.bandwidth_us)


def latency_bound(topology: Topology, spec: CollectiveSpec | Collective | str) -> float:
    """Smallest time (µs) for the first byte of every needed input to reach where it is needed.

    all_gather, reduce_scatter, all_reduce and all_to_all: ``max d(i, j)`` over rank pairs
    (rank ``j``'s output depends on rank ``i``'s input); broadcast and scatter:
    ``max_r d(root, r)``; reduce and gather: ``max_r d(r, root)``. Zero for one rank.

    Parameters
    ----------
    topology : Topology
        The network.
    spec : CollectiveSpec, Collective or str
        The collective; a bare collective means ``topology.nranks`` ranks, root 0.

    Returns
    -------
    float
        The bound in microseconds.

    Raises
    ------
    TopologyError
        If the rank counts of spec and topology differ.
    Infeasible
        If a needed pair of ranks has no path.

    Examples
    --------
    >>> from synccl.topologies import TopologyBuilder
    >>> b = TopologyBuilder()
    >>> for _ in range(4):
    ...     _ = b.add_rank()
    >>> for i in range(4):
    ...     b.add_link(i, (i + 1) % 4, bandwidth=10.0, latency=1.5, kind="nvlink")
    >>> latency_bound(b.build("ring:4"), "all_gather")
    3.0
    """
    spec = _as_spec(topology, spec, "latency_bound")
    return _max_distance(topology, spec, "latency_bound")


def bandwidth_bound(topology: Topology, spec: CollectiveSpec | Collective | str, size_bytes: int) -> float:
    """Smallest time (µs) to move the data the collective must move across the topology's cuts.

    * all_gather: ``(M/N) / x*`` with ``x* = min_S B+(S) / |S & R|`` over the vertex sets ``S``
      that contain a rank and miss one, computed exactly with max flows (module docstring).
    * reduce_scatter: the same on the reversed topology (the dual of all_gather).
    * all_reduce: reduce_scatter's bound plus all_gather's -- the bound of the
      reduce-scatter + all-gather class (every output chunk is fully reduced somewhere, then
      copied out), to which every library algorithm and synthesizer here belongs.
    * broadcast: ``M / min_u maxflow(root, u)``; reduce: the same reversed.
    * gather: ``(M/N) / y*`` with ``y* = min_S B+(S) / |S & (R - root)|`` over the sets ``S``
      without the root: every non-root rank's ``M/N`` bytes must reach the root, a
      single-sink flow (max flow from a super source feeding each non-root rank at rate
      ``y`` must reach ``(N-1) y``); scatter: the same reversed.
    * all_to_all: ``(M/N) * max_S |S & R| |R - S| / B+(S)``: every rank sends ``M/N`` bytes to
      every other. Exact (every cut enumerated) when the topology has at most
      ``EXACT_CUT_VERTICES`` vertices; otherwise the maximum over a family of cuts only --
      every single vertex, every host's vertices, every rank prefix ``{0..k-1}`` (with the
      switches and NICs of the hosts it holds whole; row-major grids and host-major clusters
      make these the bisections), and the complements of all of them -- which is still a
      valid, possibly weaker, bound.

    Zero for one rank.

    Parameters
    ----------
    topology : Topology
        The network.
    spec : CollectiveSpec, Collective or str
        The collective; a bare collective means ``topology.nranks`` ranks, root 0.
    size_bytes : int
        The nccl-tests message size ``M`` in bytes, > 0.

    Returns
    -------
    float
        The bound in microseconds.

    Raises
    ------
    TopologyError
        If the rank counts of spec and topology differ.
    CollectiveError
        If ``size_bytes`` is not a positive integer.
    Infeasible
        If a needed pair of ranks has no path.

    Examples
    --------
    A unidirectional ring of 4 ranks at 10 GB/s gathers 4 MB in ``3/4 * M / B``:

    >>> from synccl.topologies import TopologyBuilder
    >>> b = TopologyBuilder()
    >>> for _ in range(4):
    ...     _ = b.add_rank()
    >>> for i in range(4):
    ...     b.add_link(i, (i + 1) % 4, bandwidth=10.0, latency=1.0, kind="nvlink", bidirectional=False)
    >>> bandwidth_bound(b.build("ring:4"), "all_gather", 4_000_000)
    300.0
    """
    spec = _as_spec(topology, spec, "bandwidth_bound")
    _check_size(size_bytes, "bandwidth_bound")
    _max_distance(topology, spec, "bandwidth_bound")  # raises Infeasible naming an unreachable pair
    return float(size_bytes * _us_per_byte(topology, spec.collective, spec.root))


def lower_bound(topology: Topology, spec: CollectiveSpec | Collective | str, size_bytes: int) -> Bound:
    """Both bounds at once; ``Bound.time_us`` is their maximum.

    Parameters
    ----------
    topology : Topology
        The network.
    spec : CollectiveSpec, Collective or str
        The collective; a bare collective means ``topology.nranks`` ranks, root 0.
    size_bytes : int
        The nccl-tests message size in bytes, > 0.

    Returns
    -------
    Bound
        Latency, bandwidth and overall bound in microseconds.

    Raises
    ------
    TopologyError, CollectiveError, Infeasible
        As :func:`latency_bound` and :func:`bandwidth_bound`.

    Examples
    --------
    >>> from synccl.topologies import TopologyBuilder
    >>> b = TopologyBuilder()
    >>> _ = b.add_rank(), b.add_rank()
    >>> b.add_link(0, 1, bandwidth=10.0, latency=2.0, kind="nvlink")
    >>> bound = lower_bound(b.build("pair"), "broadcast", 1_000_000)
    >>> bound.latency_us, bound.bandwidth_us, bound.time_us
    (2.0, 100.0, 100.0)
    """
    spec = _as_spec(topology, spec, "lower_bound")
    return Bound(
        collective=spec.collective,
        nranks=spec.nranks,
        size_bytes=size_bytes,
        latency_us=latency_bound(topology, spec),
        bandwidth_us=bandwidth_bound(topology, spec, size_bytes),
    )


# -- checks ------------------------------------------------------------------------------------


def _as_spec(topology: Topology, spec: CollectiveSpec | Collective | str, op: str) -> CollectiveSpec:
    if not isinstance(spec, CollectiveSpec):
        spec = CollectiveSpec(parse_collective(spec), topology.nranks)
    if spec.nranks != topology.nranks:
        raise TopologyError(f"{op}: {spec.collective.value} has {spec.nranks} ranks but topology {topology.name!r} has {topology.nranks}")
    return spec


def _check_size(size_bytes: int, op: str) -> None:
    if not isinstance(size_bytes, int) or isinstance(size_bytes, bool) or size_bytes <= 0:
        raise CollectiveError(f"{op}: size_bytes must be a positive integer, got {size_bytes!r}")


def _needed_pairs(spec: CollectiveSpec) -> Iterator[tuple[int, int]]:
    """Rank pairs ``(src, dst)`` such that ``dst``'s output depends on ``src``'s input, grouped by source."""
    n, root, coll = spec.nranks, spec.root, spec.collective
    if coll in (Collective.BROADCAST, Collective.SCATTER):
        return ((root, r) for r in range(n) if r != root)
    if coll in (Collective.REDUCE, Collective.GATHER):
        return ((r, root) for r in range(n) if r != root)
    return ((i, j) for i in range(n) for j in range(n) if i != j)


def _max_distance(topology: Topology, spec: CollectiveSpec, op: str) -> float:
    """Largest latency distance over the needed pairs; raises :class:`Infeasible` for one without a path."""
    farthest = 0.0
    source, reach = None, {}
    for src, dst in _needed_pairs(spec):
        if src != source:  # pairs come grouped by source
            source, reach = src, nx.single_source_dijkstra_path_length(topology.graph, src, weight=LATENCY)
        distance = reach.get(dst)
        if distance is None:
            raise Infeasible(f"{op}: {spec.collective.value} needs a path {src!r} -> {dst!r}, but topology {topology.name!r} has none")
        farthest = max(farthest, float(distance))
    return farthest


# -- bandwidth -----------------------------------------------------------------------------------


@lru_cache(maxsize=128)
def _us_per_byte(topology: Topology, collective: Collective, root: int | None) -> Fraction:
    """The bandwidth bound divided by the message size (µs per byte), exact."""
    n = topology.nranks
    if n == 1:
        return Fraction(0)
    if collective is Collective.ALL_REDUCE:
        return _us_per_byte(topology, Collective.REDUCE_SCATTER, None) + _us_per_byte(topology, Collective.ALL_GATHER, None)
    ranks = list(range(n))
    forward = _capacity_graph(topology, reverse=False)
    if collective is Collective.ALL_TO_ALL:
        return _all_to_all_ratio(topology, forward) / n
    graph = (
        _capacity_graph(topology, reverse=True)
        if collective in (Collective.REDUCE_SCATTER, Collective.REDUCE, Collective.SCATTER)
        else forward
    )
    if collective in (Collective.ALL_GATHER, Collective.REDUCE_SCATTER):
        demands = [(u, [v for v in ranks if v != u]) for u in ranks]
        share = Fraction(1, n)
    elif collective in (Collective.BROADCAST, Collective.REDUCE):
        demands = [(u, [root]) for u in ranks if u != root]
        share = Fraction(1)
    else:  # GATHER, SCATTER
        demands = [(root, [v for v in ranks if v != root])]
        share = Fraction(1, n)
    rate = _max_rate(graph, demands)
    logger.debug("%s on %r: optimal rate %s bytes/us per %s of the message", collective.value, topology.name, rate, share)
    return share / rate


def _capacity_graph(topology: Topology, *, reverse: bool) -> nx.DiGraph:
    """The topology with ``capacity`` (bytes/µs, the Fraction of the bandwidth's decimal form) on every edge, optionally reversed."""
    graph = nx.DiGraph()
    graph.add_nodes_from(topology.graph.nodes)
    for u, v, data in topology.graph.edges(data=True):
        a, b = (v, u) if reverse else (u, v)
        graph.add_edge(a, b, **{_CAPACITY: Fraction(repr(float(data[BANDWIDTH]))) * _BYTES_PER_US_PER_GBPS})
    return graph


def _out_capacity(graph: nx.DiGraph, inside: Iterable[object]) -> Fraction:
    """``B+(S)``: total capacity of the edges leaving ``inside``."""
    members = set(inside)
    return sum((d[_CAPACITY] for u in members for _, v, d in graph.out_edges(u, data=True) if v not in members), Fraction(0))


def _max_rate(graph: nx.DiGraph, demands: Sequence[tuple[int, Sequence[int]]]) -> Fraction:
    """Largest ``x`` such that, for every ``(sink, sources)``, ``x`` per source can flow to ``sink``.

    That is, a super source with an edge of capacity ``x`` to each of ``sources`` has a
    flow of ``x * len(sources)`` to ``sink``. Equals ``min B+(S) / |S & sources|`` over the
    vertex sets ``S`` that hold a source and miss the sink. Dinkelbach iteration from the
    best single-vertex cut; every violated check yields a cut with a smaller ratio. The max
    flows run on integers: every capacity and ``x = p/q`` scaled by a common denominator.
    """
    sources_all = {v for _, sources in demands for v in sources}
    x = min(_out_capacity(graph, [v]) for v in sources_all)
    denominator = math.lcm(*(d[_CAPACITY].denominator for _, _, d in graph.edges(data=True)))
    integral = {(u, v): int(d[_CAPACITY] * denominator) for u, v, d in graph.edges(data=True)}
    network = nx.DiGraph()
    network.add_nodes_from(graph.nodes)
    network.add_edges_from(integral)
    network.add_edges_from((_SOURCE, v) for v in sources_all)
    checked_at = None
    while checked_at != x:
        checked_at = x
        for sink, sources in demands:
            chosen = set(sources)
            # capacities times denominator * q, so that x becomes the integer p * denominator
            p, q = x.numerator, x.denominator
            for (u, v), c in integral.items():
                network.edges[u, v][_CAPACITY] = c * q
            for v in sources_all:
                network.edges[_SOURCE, v][_CAPACITY] = p * denominator if v in chosen else 0
            value, (side, _) = nx.minimum_cut(network, _SOURCE, sink)
            if value < p * denominator * len(chosen):
                cut = side - {_SOURCE}
                x = _out_capacity(graph, cut) / len(cut & chosen)
    return x


def _all_to_all_ratio(topology: Topology, graph: nx.DiGraph) -> Fraction:
    """``max_S |S & R| |R - S| / B+(S)`` over every cut (small topologies) or a family of cuts."""
    n = topology.nranks
    ranks = set(range(n))
    vertices = list(graph.nodes)
    if len(vertices) <= EXACT_CUT_VERTICES:
        candidates = _best_cuts_by_enumeration(graph, vertices, ranks)
    else:
        everything = set(vertices)
        host = {v: topology.host_of(v) for v in vertices}
        family = [{v} for v in vertices]
        family += [{v for v in vertices if host[v] == h} for h in sorted(set(host.values()) - {None})]
        for k in range(1, n):
            # ranks 0..k-1 with the switches and NICs of the hosts whose ranks all lie below k
            below = {host[r] for r in range(k)} - {host[r] for r in range(k, n)}
            family.append(set(range(k)) | {v for v in vertices if not isinstance(v, int) and host[v] is not None and host[v] in below})
        family += [everything - s for s in family]
        candidates = [s for s in family if s and s != everything]
    best = Fraction(0)
    for cut in candidates:
        inside = len(cut & ranks)
        if inside and inside < n:
            best = max(best, Fraction(inside * (n - inside)) / _out_capacity(graph, cut))
    return best


def _best_cuts_by_enumeration(graph: nx.DiGraph, vertices: list[object], ranks: set[int]) -> list[set[object]]:
    """The cuts whose float ratio is within 1e-9 of the largest (rechecked exactly by the caller)."""
    index = {v: i for i, v in enumerate(vertices)}
    masks = np.arange(1, 2 ** len(vertices) - 1, dtype=np.int64)
    member = [((masks >> i) & 1).astype(bool) for i in range(len(vertices))]
    out = np.zeros(len(masks))
    for u, v, data in graph.edges(data=True):
        out += float(data[_CAPACITY]) * (member[index[u]] & ~member[index[v]])
    inside = sum(member[index[r]].astype(np.int64) for r in ranks)
    crossing = inside * (len(ranks) - inside)
    ratio = np.divide(crossing, out, out=np.zeros(len(masks)), where=crossing > 0)
    top = ratio.max()
    chosen = masks[ratio >= top * (1 - 1e-9)]
    return [{v for v, i in index.items() if (int(m) >> i) & 1} for m in chosen]
