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
:func:`_max_rate` finds ``x*`` exactly (``Fraction``) by Dinkelbach's parametric search: each
violated max-flow check returns a cut whose ratio is the next, strictly smaller, candidate, and
it stops at the best cut, usually after one or two rounds of max flows.

How it stays fast at a thousand ranks without giving up exactness:

* The max flows run in C (:func:`scipy.sparse.csgraph.maximum_flow`) on integers: every
  capacity and ``x = p/q`` scaled by a common denominator, then divided by their gcd. scipy
  counts in int32, so a check whose integers could overflow (a residual capacity can reach
  the sum of a link's two directions) runs on networkx instead, with Python integers. The
  cut a check returns is the set reachable from ``s`` in the residual graph, and its ratio
  is computed in integers and ``Fraction``s, so the flow engine only decides which cut,
  never a value.
* Sinks that a verified topology automorphism exchanges need one check between them
  (:func:`synccl.synth._symmetry.rank_representatives`): on a multi-node topology whose hosts
  are interchangeable only one host's ranks are sinks. Rooted collectives only use
  symmetries that fix the root.
* Shortest latencies come from :func:`scipy.sparse.csgraph.dijkstra` (the same float sums
  as networkx's Dijkstra: both compute the least fixed point of ``d(v) = min d(u) + w``).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import networkx as nx
import numpy as np

from synccl.collectives import Collective, CollectiveSpec, parse_collective
from synccl.exceptions import CollectiveError, Infeasible, TopologyError
from synccl.synth._routes import exact_bandwidth
from synccl.synth._symmetry import rank_representatives
from synccl.topologies import BANDWIDTH, LATENCY, Topology

__all__ = ["Bound", "latency_bound", "bandwidth_bound", "lower_bound", "phased_all_reduce_bound", "phased_all_reduce_us_per_byte"]

logger = logging.getLogger(__name__)

#: Topologies with at most this many vertices get the exact all_to_all cut bound by enumeration.
EXACT_CUT_VERTICES = 16
_CAPACITY = "capacity"
_BYTES_PER_US_PER_GBPS = 1000
_SOURCE = ("super-source",)  # a vertex name no topology uses (ranks are ints, switches strings)
#: Largest capacity given to scipy's int32 max flow: a residual capacity can be the sum of two.
_SCIPY_MAX_CAPACITY = 2**30 - 1
_DIJKSTRA_ROWS = 256  # sources per scipy Dijkstra call (bounds the distance matrix's memory)


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
    * all_reduce: ``M / lambda`` with ``lambda`` the smallest capacity of a cut with ranks on
      both sides, in either direction: every output beyond the cut depends on every input
      before it, so ``M`` bytes (partial sums) must cross. Valid for every algorithm; the
      tighter bound of the phase-separated reduce_scatter + all_gather class is
      :func:`phased_all_reduce_bound`.
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


def phased_all_reduce_bound(topology: Topology, size_bytes: int) -> float:
    """reduce_scatter's bandwidth bound plus all_gather's (µs): the bound of all_reduce algorithms in two phases.

    An algorithm that finishes reduce_scatter before all_gather starts (the class of ring,
    halving-doubling and tree packing's certificate) takes at least this; an algorithm that
    overlaps the phases chunk by chunk is bound only by :func:`bandwidth_bound`.

    Parameters
    ----------
    topology : Topology
        The network.
    size_bytes : int
        The message size ``M`` in bytes, > 0.

    Returns
    -------
    float
        The bound in microseconds.

    Examples
    --------
    On three ranks in a line joined at 50 and 25 GB/s, reducing everything in the middle and
    sending it back, pipelined, takes ``M / 25 GB/s``; two phases cannot beat ``4/3 M / 25``:

    >>> from synccl.topologies import TopologyBuilder
    >>> b = TopologyBuilder()
    >>> for _ in range(3):
    ...     _ = b.add_rank()
    >>> b.add_link(0, 1, bandwidth=50.0, latency=1.0, kind="nvlink")
    >>> b.add_link(1, 2, bandwidth=25.0, latency=1.0, kind="nvlink")
    >>> line = b.build("line")
    >>> bandwidth_bound(line, "all_reduce", 25_000_000), phased_all_reduce_bound(line, 25_000_000)
    (1000.0, 1333.3333333333333)
    """
    _check_size(size_bytes, "phased_all_reduce_bound")
    return float(size_bytes * phased_all_reduce_us_per_byte(topology))


def phased_all_reduce_us_per_byte(topology: Topology) -> Fraction:
    """:func:`phased_all_reduce_bound` per message byte, exact."""
    return _us_per_byte(topology, Collective.REDUCE_SCATTER, None) + _us_per_byte(topology, Collective.ALL_GATHER, None)


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


def _needed_sources(spec: CollectiveSpec) -> tuple[list[int], list[int]]:
    """``(sources, targets)``: each source's input is needed by every target other than itself."""
    n, root, coll = spec.nranks, spec.root, spec.collective
    ranks = list(range(n))
    if coll in (Collective.BROADCAST, Collective.SCATTER):
        return [root], ranks
    if coll in (Collective.REDUCE, Collective.GATHER):
        return [r for r in ranks if r != root], [root]
    return ranks, ranks


def _max_distance(topology: Topology, spec: CollectiveSpec, op: str) -> float:
    """Largest latency distance over the needed pairs; raises :class:`Infeasible` for one without a path.

    The first pathless pair in (source, target) order is the one named.
    """
    from scipy.sparse import csr_array  # scipy is imported by the functions that use it: it is slow to import
    from scipy.sparse.csgraph import dijkstra

    sources, targets = _needed_sources(spec)
    index = {v: i for i, v in enumerate(topology.graph.nodes)}
    rows, cols, latency = [], [], []
    for u, v, data in topology.graph.edges(data=True):
        rows.append(index[u])
        cols.append(index[v])
        latency.append(float(data[LATENCY]))
    size = len(index)
    # explicit zeros stay in a CSR matrix built this way, and csgraph takes them as zero-latency links
    matrix = csr_array(
        (np.array(latency, dtype=np.float64), (np.array(rows, dtype=np.int32), np.array(cols, dtype=np.int32))), shape=(size, size)
    )
    columns = np.array([index[t] for t in targets], dtype=np.int64)
    farthest = 0.0
    for start in range(0, len(sources), _DIJKSTRA_ROWS):
        chunk = sources[start : start + _DIJKSTRA_ROWS]
        distance = dijkstra(matrix, directed=True, indices=[index[s] for s in chunk])[:, columns]  # d(s, s) = 0
        missing = np.isinf(distance)
        if missing.any():
            row, col = np.argwhere(missing)[0]  # row-major: the first source, then its first target
            raise Infeasible(
                f"{op}: {spec.collective.value} needs a path {chunk[row]!r} -> {targets[col]!r}, but topology {topology.name!r} has none"
            )
        farthest = max(farthest, float(distance.max()))
    return farthest


# -- bandwidth -----------------------------------------------------------------------------------


@lru_cache(maxsize=128)
def _us_per_byte(topology: Topology, collective: Collective, root: int | None) -> Fraction:
    """The bandwidth bound divided by the message size (µs per byte), exact."""
    n = topology.nranks
    if n == 1:
        return Fraction(0)
    ranks = list(range(n))
    forward = _capacity_graph(topology, reverse=False)
    if collective is Collective.ALL_REDUCE:
        # M bytes must cross every cut with ranks on both sides, in both directions; every such
        # cut separates rank 0 from some rank, so lambda = min over v of maxflow(0 -> v), (v -> 0).
        sinks = [(v, [0]) for v in rank_representatives(topology, root=0) if v != 0]
        rate = min(_max_rate(forward, sinks), _max_rate(_capacity_graph(topology, reverse=True), sinks))
        return 1 / rate
    if collective is Collective.ALL_TO_ALL:
        return _all_to_all_ratio(topology, forward) / n
    graph = (
        _capacity_graph(topology, reverse=True)
        if collective in (Collective.REDUCE_SCATTER, Collective.REDUCE, Collective.SCATTER)
        else forward
    )
    if collective in (Collective.ALL_GATHER, Collective.REDUCE_SCATTER):
        # a sink's check is the same as its images' under the verified host swaps
        demands = [(u, [v for v in ranks if v != u]) for u in rank_representatives(topology)]
        share = Fraction(1, n)
    elif collective in (Collective.BROADCAST, Collective.REDUCE):
        demands = [(u, [root]) for u in rank_representatives(topology, root=root) if u != root]
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
    exact = {bw: exact_bandwidth(bw) * _BYTES_PER_US_PER_GBPS for bw in {data[BANDWIDTH] for _, _, data in topology.graph.edges(data=True)}}
    for u, v, data in topology.graph.edges(data=True):
        a, b = (v, u) if reverse else (u, v)
        graph.add_edge(a, b, **{_CAPACITY: exact[data[BANDWIDTH]]})
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
    best single-vertex cut: a minimum cut ``S`` at the current ``x`` (super source side)
    that violates ``B+(S) >= x |S & sources|`` has a smaller ratio, which becomes ``x``;
    when no check is violated, ``x`` is the minimum.
    """
    sources_all = {v for _, sources in demands for v in sources}
    x = min(_out_capacity(graph, [v]) for v in sources_all)
    network = _FlowNetwork(graph, sources_all)
    checked_at = None
    while checked_at != x:
        checked_at = x
        for sink, sources in demands:
            chosen = set(sources)
            out, inside = network.min_cut(x, chosen, sink)
            if out < x * inside:
                x = out / inside
    return x


class _FlowNetwork:
    """A capacity graph plus a super source feeding ``sources``, as integer arrays for scipy's max flow.

    Every capacity is ``units[e] * unit / denominator`` with integer ``units``: ``denominator``
    the capacities' common denominator, ``unit`` the gcd of their numerators over it. The
    arcs are the graph's edges, the super source's, and a zero-capacity reverse for every
    arc without one: scipy's max flow then keeps this CSR structure, so its flow lines up
    with the capacities.
    """

    __slots__ = ("_graph", "_index", "_source", "_sources", "_denominator", "_unit", "_units", "_largest")
    __slots__ += ("_edge_arcs", "_source_arcs", "_tails", "_heads", "_indptr", "_reference")

    def __init__(self, graph: nx.DiGraph, sources: Iterable[object]) -> None:
        self._graph = graph
        self._index = {v: i for i, v in enumerate(graph.nodes)}
        self._source = len(self._index)
        self._sources = sorted(sources, key=self._index.__getitem__)
        capacities = [d[_CAPACITY] for _, _, d in graph.edges(data=True)]
        self._denominator = math.lcm(*(c.denominator for c in capacities))
        numerators = [c.numerator * (self._denominator // c.denominator) for c in capacities]
        self._unit = math.gcd(*numerators) or 1
        units = [c // self._unit for c in numerators]
        self._largest = max(units, default=0)
        self._units = np.array(units if self._largest <= _SCIPY_MAX_CAPACITY else [], dtype=np.int64)
        self._reference: nx.DiGraph | None = None
        edges = [(self._index[u], self._index[v]) for u, v in graph.edges]
        present = set(edges)
        feeds = [(self._source, self._index[v]) for v in self._sources]
        backs = [(v, u) for u, v in edges if (v, u) not in present] + [(v, u) for u, v in feeds]
        tails = np.array([u for u, _ in edges + feeds + backs], dtype=np.int32)
        heads = np.array([v for _, v in edges + feeds + backs], dtype=np.int32)
        order = np.lexsort((heads, tails))  # CSR order: by tail, then head
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        self._edge_arcs = position[: len(edges)]
        self._source_arcs = position[len(edges) : len(edges) + len(feeds)]
        self._tails, self._heads = tails[order], heads[order]
        self._indptr = np.searchsorted(self._tails, np.arange(self._source + 2)).astype(np.int32)

    def min_cut(self, x: Fraction, chosen: set[object], sink: object) -> tuple[Fraction, int]:
        """``(B+(S), |S & chosen|)`` of a minimum cut ``S`` (the super source's side, less it) at rate ``x`` into ``sink``.

        ``S`` is the set reachable from the super source in the residual graph of a maximum
        flow in which the super source feeds each vertex of ``chosen`` at rate ``x``.
        """
        from scipy.sparse import csr_array
        from scipy.sparse.csgraph import breadth_first_order, maximum_flow

        p, q = x.numerator, x.denominator
        # capacities times denominator * q, and x times denominator, are integers; divide by their gcd
        common = math.gcd(self._unit * q, p * self._denominator)
        per_unit, feed = self._unit * q // common, p * self._denominator // common
        if self._largest * per_unit > _SCIPY_MAX_CAPACITY or feed > _SCIPY_MAX_CAPACITY:
            return self._min_cut_networkx(x, chosen, sink)
        capacity = np.zeros(len(self._heads), dtype=np.int32)
        capacity[self._edge_arcs] = self._units * per_unit
        fed = np.fromiter((v in chosen for v in self._sources), dtype=bool, count=len(self._sources))
        capacity[self._source_arcs] = fed * feed
        shape = (self._source + 1, self._source + 1)
        network = csr_array((capacity, self._heads, self._indptr), shape=shape, copy=True)  # scipy may sort in place
        flow = maximum_flow(network, self._source, self._index[sink]).flow
        if not (np.array_equal(flow.indptr, self._indptr) and np.array_equal(flow.indices, self._heads)):
            return self._min_cut_networkx(x, chosen, sink)  # a scipy that lays out its flow otherwise
        usable = capacity.astype(np.int64) > flow.data  # the arcs with residual capacity
        indptr = np.concatenate(([0], np.cumsum(np.bincount(self._tails[usable], minlength=self._source + 1))))
        residual = csr_array((np.ones(int(indptr[-1]), dtype=np.int8), self._heads[usable], indptr), shape=shape)
        inside = np.zeros(self._source + 1, dtype=bool)
        inside[breadth_first_order(residual, self._source, directed=True, return_predecessors=False)] = True
        if inside[self._index[sink]]:
            raise RuntimeError(f"max flow: scipy's maximum_flow left an augmenting path to {sink!r}")
        leaving = inside[self._tails[self._edge_arcs]] & ~inside[self._heads[self._edge_arcs]]
        out = Fraction(int(self._units[leaving].sum()) * self._unit, self._denominator)
        return out, int(np.count_nonzero(inside[self._heads[self._source_arcs]] & fed))

    def _min_cut_networkx(self, x: Fraction, chosen: set[object], sink: object) -> tuple[Fraction, int]:
        """:meth:`min_cut` with networkx's max flow on Python integers (no overflow, slower)."""
        if self._reference is None:
            self._reference = nx.DiGraph()
            self._reference.add_nodes_from(self._graph.nodes)
            self._reference.add_edges_from(self._graph.edges)
            self._reference.add_edges_from((_SOURCE, v) for v in self._sources)
        p, q = x.numerator, x.denominator
        for u, v, d in self._graph.edges(data=True):
            self._reference.edges[u, v][_CAPACITY] = int(d[_CAPACITY] * self._denominator) * q
        for v in self._sources:
            self._reference.edges[_SOURCE, v][_CAPACITY] = p * self._denominator if v in chosen else 0
        _, (side, _) = nx.minimum_cut(self._reference, _SOURCE, sink)
        cut = side - {_SOURCE}
        return _out_capacity(self._graph, cut), len(cut & chosen)


def _all_to_all_ratio(topology: Topology, graph: nx.DiGraph) -> Fraction:
    """``max_S |S & R| |R - S| / B+(S)`` over every cut (small topologies) or a family of cuts."""
    n = topology.nranks
    ranks = set(range(n))
    vertices = list(graph.nodes)
    if len(vertices) > EXACT_CUT_VERTICES:
        return max(
            (Fraction(inside * (n - inside)) / out for inside, out in _cut_family(topology, graph) if 0 < inside < n), default=Fraction(0)
        )
    best = Fraction(0)
    for cut in _best_cuts_by_enumeration(graph, vertices, ranks):
        inside = len(cut & ranks)
        if inside and inside < n:
            best = max(best, Fraction(inside * (n - inside)) / _out_capacity(graph, cut))
    return best


def _cut_family(topology: Topology, graph: nx.DiGraph) -> Iterator[tuple[int, Fraction]]:
    """``(|S & R|, B+(S))`` for the cut family of :func:`bandwidth_bound`'s all_to_all and the complements.

    The family: every single vertex, every host's vertices, and every rank prefix
    ``S_k = {0..k-1}`` (``0 < k < N``) with the switches and NICs of the hosts whose ranks
    all lie below ``k``. A complement's ``B+`` is its set's ``B-`` (capacity entering). The
    prefixes are nested, ``S_k = {v : t(v) <= k}``, so an edge ``u -> v`` leaves exactly the
    ``S_k`` with ``t(u) <= k < t(v)``: all ``B+(S_k)`` (and ``B-(S_k)``) come from one pass
    over the edges and a running sum.
    """
    n = topology.nranks
    vertices = list(graph.nodes)
    index = {v: i for i, v in enumerate(vertices)}
    host = [topology.host_of(v) for v in vertices]
    edges = [(index[u], index[v], d[_CAPACITY]) for u, v, d in graph.edges(data=True)]

    leaving, entering = [Fraction(0)] * len(vertices), [Fraction(0)] * len(vertices)
    for u, v, c in edges:
        leaving[u] += c
        entering[v] += c
    for i, v in enumerate(vertices):
        inside = 1 if isinstance(v, int) else 0
        yield inside, leaving[i]
        yield n - inside, entering[i]

    hosts = sorted({h for h in host if h is not None})
    host_ranks = Counter(host[index[r]] for r in range(n))
    host_leaving, host_entering = {h: Fraction(0) for h in hosts}, {h: Fraction(0) for h in hosts}
    for u, v, c in edges:
        if host[u] != host[v]:
            if host[u] is not None:
                host_leaving[host[u]] += c
            if host[v] is not None:
                host_entering[host[v]] += c
    for h in hosts:
        yield host_ranks[h], host_leaving[h]
        yield n - host_ranks[h], host_entering[h]

    last_rank = {host[index[r]]: r for r in range(n) if host[index[r]] is not None}  # each host's highest rank
    never = n + 1  # beyond every prefix: fabric vertices and hosts without ranks
    threshold = [v + 1 if isinstance(v, int) else last_rank.get(host[i], never - 1) + 1 for i, v in enumerate(vertices)]
    out_step, in_step = [Fraction(0)] * (n + 2), [Fraction(0)] * (n + 2)
    for u, v, c in edges:
        low, high = sorted((threshold[u], threshold[v]))
        step = out_step if threshold[u] < threshold[v] else in_step
        step[low] += c
        step[high] -= c
    out, into = Fraction(0), Fraction(0)
    for k in range(1, n):
        out += out_step[k]
        into += in_step[k]
        yield k, out
        yield n - k, into


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
