"""Spanning-tree packing at optimal throughput (Blink/ForestColl class), with a certificate.

Every collective built from broadcasts and reductions of shards is a packing of trees:

* all_gather: every rank's shard travels down *out-trees* rooted at that rank;
* reduce_scatter: every rank's shard is summed up *in-trees* towards that rank;
* all_reduce: reduce_scatter then all_gather (the class the cut bound of
  :func:`~synccl.synth.bandwidth_bound` describes);
* broadcast and reduce: one root's out-trees or in-trees.

A tree edge is a logical rank-to-rank edge (:mod:`synccl.synth._routes`): switches forward,
ranks store and copy. Two constructions produce the trees:

``flat``
    The exact LP over all trees, by column generation (:mod:`synccl.synth._tree_lp`). Each
    root's unit of data is then split into ``chunks`` equal chunks spread over its trees
    (largest remainder), trying chunk counts until the split attains the LP optimum.
``hierarchical``
    For multi-host fabrics of identical hosts: the flat packing of one host, reused in every
    host, behind rail-aligned inter-host stars (:mod:`synccl.synth._tree_hierarchy`).

Either way the result carries a :class:`Certificate`: the exact time of the chunked packing,
from its integer link loads, against the exact cut bound (for all_reduce, the bound of
two-phase algorithms). ``gap == 0`` proves optimality in that class.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Literal

import highspy
import numpy as np

from synccl.collectives import Collective, CollectiveSpec, Program, parse_collective
from synccl.exceptions import CollectiveError, TopologyError
from synccl.synth._bounds import _us_per_byte, phased_all_reduce_us_per_byte
from synccl.synth._highs import silent_highs
from synccl.synth._routes import LogicalNetwork, logical_network
from synccl.synth._tree_lp import Direction, TreeLP, TreeModel, WeightedTree, arcs_of, tree_column, tree_link_counts
from synccl.topologies import Topology

__all__ = [
    "Tree",
    "TreePhase",
    "Certificate",
    "TreePacking",
    "pack_trees",
    "TREE_COLLECTIVES",
    "FLAT_RANKS",
    "PIPELINE_PIECES",
    "PIPELINE_TRANSFERS",
]

logger = logging.getLogger(__name__)

Method = Literal["flat", "hierarchical", "auto"]

#: Collectives tree packing synthesizes.
TREE_COLLECTIVES = (Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_REDUCE, Collective.BROADCAST, Collective.REDUCE)
#: ``method="auto"`` solves the flat LP up to this many ranks (or on one host), else goes hierarchical.
FLAT_RANKS = 16
#: Largest number of chunks per root tried when splitting the LP's weights into whole chunks.
MAX_CHUNKS = 24
#: Pieces per tree the default lowering aims for (pipeline fill costs about height/pieces).
PIPELINE_PIECES = 32
#: Most transfers the default lowering creates when cutting chunks into pieces.
PIPELINE_TRANSFERS = 20_000
#: Relative gap the chunk split may leave to the LP optimum before a larger chunk count is tried.
_SPLIT_TOLERANCE = 1e-9
#: Seconds a dive may take before the split falls back to rounding.
_DIVE_SECONDS = 3.0
#: Chunk counts (multiples of the first candidate) the integral-split MILP tries.
_MILP_TRIES = 3
#: Chunk counts the last resort, rounding the LP's weights, tries (each costs a load count).
_ROUNDING_CHUNKS = 32
#: Trees a dive tries for a single chunk before giving up.
_DIVE_TRIES = 4
#: Seconds each integral-split MILP may take before the next chunk count is tried.
_MILP_SECONDS = 2.0
_BYTES_PER_US_PER_GBPS = 1000


@dataclass(frozen=True, slots=True)
class Tree:
    """A spanning tree of the ranks rooted at ``root`` carrying ``chunks`` of the root's chunks.

    ``parent[v]`` is ``v``'s parent, ``None`` at the root.
    """

    root: int
    parent: tuple[int | None, ...]
    chunks: int

    def depths(self) -> list[int]:
        """Hops from the root to every rank.

        >>> Tree(0, (None, 0, 1), 1).depths()
        [0, 1, 2]
        """
        children: list[list[int]] = [[] for _ in self.parent]
        for v, p in enumerate(self.parent):
            if p is not None:
                children[p].append(v)
        depth = [0] * len(self.parent)
        stack = [self.root]
        while stack:
            u = stack.pop()
            for c in children[u]:
                depth[c] = depth[u] + 1
                stack.append(c)
        return depth


@dataclass(frozen=True, slots=True)
class TreePhase:
    """One direction of trees: out-trees copy data from roots, in-trees reduce towards them.

    ``time_per_unit`` is exact: ``max_l load_l / capacity_l`` over the links, with every root
    holding one unit of data split into ``chunks_per_root`` chunks (GB/s units).
    """

    direction: Direction
    trees: tuple[Tree, ...]
    chunks_per_root: int
    time_per_unit: Fraction
    lp_time_per_unit: float
    lp_optimal: bool


@dataclass(frozen=True, slots=True)
class Certificate:
    """Achieved time of a packing against the cut bound, both exact, in µs per message byte.

    For all_reduce the bound is that of the two-phase class (reduce_scatter, then all_gather:
    :func:`~synccl.synth.phased_all_reduce_bound`), which the trees' phases belong to; the
    bound for every algorithm, :func:`~synccl.synth.bandwidth_bound`, can be lower.

    Examples
    --------
    >>> c = Certificate(Fraction(3, 1000), Fraction(3, 1000), 0.003, True)
    >>> c.gap, round(c.achieved_algbw_gbps, 6)
    (0.0, 0.333333)
    """

    achieved_us_per_byte: Fraction
    bound_us_per_byte: Fraction
    lp_us_per_byte: float
    lp_optimal: bool

    @property
    def gap(self) -> float:
        """``achieved / bound - 1``: 0 proves the packing optimal."""
        if self.bound_us_per_byte == 0:
            return 0.0
        return float(self.achieved_us_per_byte / self.bound_us_per_byte - 1)

    @property
    def achieved_algbw_gbps(self) -> float:
        """Bandwidth-term algorithm bandwidth of the packing (message bytes per time)."""
        return _algbw(self.achieved_us_per_byte)

    @property
    def bound_algbw_gbps(self) -> float:
        """Algorithm bandwidth no algorithm of the class can exceed."""
        return _algbw(self.bound_us_per_byte)

    def describe(self) -> str:
        """One line: achieved and optimal algbw, and the gap."""
        status = "optimal" if self.gap <= 1e-12 else f"gap {100 * self.gap:.4f}%"
        return f"algbw {self.achieved_algbw_gbps:.6g} GB/s of bound {self.bound_algbw_gbps:.6g} GB/s ({status})"


def _algbw(us_per_byte: Fraction) -> float:
    return float("inf") if us_per_byte == 0 else float(1 / (us_per_byte * _BYTES_PER_US_PER_GBPS))


@dataclass(frozen=True, slots=True)
class TreePacking:
    """Trees for one collective on one topology, how they were found, and their certificate."""

    collective: Collective
    topology: Topology
    root: int | None
    method: Literal["flat", "hierarchical"]
    phases: tuple[TreePhase, ...]
    certificate: Certificate
    seconds: float

    @property
    def chunks_per_root(self) -> int:
        """Chunks each root's shard is split into (every phase uses the same count)."""
        return self.phases[0].chunks_per_root

    @property
    def spec(self) -> CollectiveSpec:
        """The spec the Program implements: ``chunks_per_root`` chunks per shard."""
        n, c = self.topology.nranks, self.chunks_per_root
        factor = n * c if self.collective is Collective.ALL_REDUCE else c
        return CollectiveSpec(self.collective, n, chunk_factor=factor, root=self.root)

    def to_program(self, *, inplace: bool = False, pipeline: int | None = None, lanes: int | None = None, check: bool = True) -> Program:
        """The pipelined Program of the trees, verified unless ``check=False``.

        Every chunk is cut into ``pipeline`` pieces and trees are spread over ``lanes``
        parallel connections (see :func:`synccl.synth._tree_lowering.packing_algorithm`).
        By default every tree gets at least :data:`PIPELINE_PIECES` pieces, as far as a
        budget of :data:`PIPELINE_TRANSFERS` transfers allows.

        >>> from synccl.topologies import get_topology
        >>> pack_trees("all_gather", get_topology("ring:3")).to_program().collective.value
        'all_gather'
        """
        from synccl.synth._tree_lowering import DEFAULT_LANES, packing_algorithm

        chosen = DEFAULT_LANES if lanes is None else lanes
        pieces = self.default_pipeline() if pipeline is None else pipeline
        return packing_algorithm(self, inplace=inplace, pipeline=pieces, lanes=chosen).to_program(check=check)

    def default_pipeline(self) -> int:
        """Pieces per chunk: enough for :data:`PIPELINE_PIECES` per tree, within :data:`PIPELINE_TRANSFERS`."""
        fewest = min(t.chunks for p in self.phases for t in p.trees) if any(p.trees for p in self.phases) else 1
        transfers = sum(t.chunks * (self.topology.nranks - 1) for p in self.phases for t in p.trees)
        return max(1, min(-(-PIPELINE_PIECES // fewest), PIPELINE_TRANSFERS // max(transfers, 1)))


def pack_trees(
    collective: Collective | str,
    topology: Topology,
    *,
    root: int = 0,
    method: Method = "auto",
    time_limit: float | None = None,
    max_chunks: int = MAX_CHUNKS,
) -> TreePacking:
    """Trees attaining the optimal throughput of ``collective`` on ``topology``, with a certificate.

    Parameters
    ----------
    collective : Collective or str
        all_gather, reduce_scatter, all_reduce, broadcast or reduce.
    topology : Topology
        The network (switches and multi-host fabrics included).
    root : int
        Root of broadcast and reduce.
    method : {"auto", "flat", "hierarchical"}
        ``auto``: flat on one host or for rooted collectives; hierarchical on multi-host
        fabrics past :data:`FLAT_RANKS` ranks; both (the better certificate wins) below.
    time_limit : float, optional
        Seconds of column generation; when reached, the best packing so far is returned and
        its certificate shows the gap.
    max_chunks : int
        Most chunks per root tried when splitting fractional tree weights.

    Returns
    -------
    TreePacking
        Trees per phase, the certificate and the solve time; ``to_program()`` lowers it.

    Raises
    ------
    CollectiveError
        For a collective trees do not implement, or a bad root.
    Infeasible
        If a rank cannot be reached (disconnected topology) or a link has no bandwidth.
    TopologyError
        If ``method="hierarchical"`` is asked of a topology without identical hosts.

    Examples
    --------
    >>> from synccl.topologies import get_topology
    >>> packing = pack_trees("all_gather", get_topology("dgx1"))
    >>> packing.certificate.gap, round(packing.certificate.bound_algbw_gbps, 3)
    (0.0, 171.429)
    """
    coll = parse_collective(collective)
    if coll not in TREE_COLLECTIVES:
        raise CollectiveError(
            f"pack_trees: {coll.value} is not built from trees; use one of {', '.join(c.value for c in TREE_COLLECTIVES)}"
        )
    n = topology.nranks
    rooted = coll.is_rooted
    if rooted and not (isinstance(root, int) and 0 <= root < n):
        raise CollectiveError(f"pack_trees: root {root!r} is not a rank of topology {topology.name!r} ({n} ranks)")
    if method not in ("auto", "flat", "hierarchical"):
        raise CollectiveError(f"pack_trees: method must be 'auto', 'flat' or 'hierarchical', got {method!r}")
    if time_limit is not None and not (isinstance(time_limit, int | float) and time_limit > 0):
        raise CollectiveError(f"pack_trees: time_limit must be a positive number of seconds, got {time_limit!r}")
    if not isinstance(max_chunks, int) or isinstance(max_chunks, bool) or max_chunks < 1:
        raise CollectiveError(f"pack_trees: max_chunks must be a positive integer, got {max_chunks!r}")
    started = time.monotonic()
    deadline = None if time_limit is None else started + time_limit
    roots = [root] if rooted else list(range(n))
    directions: list[Direction] = []
    if coll in (Collective.REDUCE_SCATTER, Collective.ALL_REDUCE, Collective.REDUCE):
        directions.append("in")
    if coll in (Collective.ALL_GATHER, Collective.ALL_REDUCE, Collective.BROADCAST):
        directions.append("out")
    units = 1 if rooted else n  # a unit is the whole message (rooted) or one rank's shard
    scale = Fraction(1, _BYTES_PER_US_PER_GBPS * units)
    packings: list[TreePacking] = []
    for chosen in _candidate_methods(topology, rooted) if method == "auto" else [method]:
        try:
            phases = _common_chunks(_phases(chosen, topology, roots, directions, deadline, max_chunks))
        except TopologyError:
            if method == "auto" and packings:
                continue  # the hierarchical alternative does not apply here
            raise
        certificate = Certificate(
            achieved_us_per_byte=sum((p.time_per_unit for p in phases), Fraction(0)) * scale,
            bound_us_per_byte=_class_bound(topology, coll, root if rooted else None),
            lp_us_per_byte=sum(p.lp_time_per_unit for p in phases) * float(scale),
            lp_optimal=all(p.lp_optimal for p in phases),
        )
        if certificate.gap < -1e-9:
            raise RuntimeError(
                f"pack_trees: packing on {topology.name!r} beats the cut bound ({certificate.describe()}); the bound or the load count is wrong"
            )
        packing = TreePacking(coll, topology, root if rooted else None, chosen, tuple(phases), certificate, time.monotonic() - started)
        logger.info("pack_trees %s on %r (%s): %s in %.2f s", coll.value, topology.name, chosen, certificate.describe(), packing.seconds)
        packings.append(packing)
    best = min(packings, key=lambda p: p.certificate.achieved_us_per_byte)  # the first method ran or raised
    return replace(best, seconds=time.monotonic() - started)


def _class_bound(topology: Topology, coll: Collective, root: int | None) -> Fraction:
    """The cut bound of the class the trees belong to: all_reduce's is reduce_scatter's plus all_gather's."""
    if coll is Collective.ALL_REDUCE:
        return phased_all_reduce_us_per_byte(topology)
    return _us_per_byte(topology, coll, root)


def _phases(
    method: str, topology: Topology, roots: list[int], directions: list[Direction], deadline: float | None, max_chunks: int
) -> list[TreePhase]:
    if method == "hierarchical":
        from synccl.synth._tree_hierarchy import hierarchical_phase

        return [hierarchical_phase(topology, d, deadline=deadline, max_chunks=max_chunks) for d in directions]
    net = logical_network(topology)
    return [flat_phase(net, roots, d, deadline=deadline, max_chunks=max_chunks) for d in directions]


def _candidate_methods(topology: Topology, rooted: bool) -> list[Literal["flat", "hierarchical"]]:
    """``auto``: flat when small, on one host or rooted, else hierarchical; small multi-host fabrics try both."""
    multihost = len({topology.host_of(r) for r in topology.ranks}) > 1
    if rooted or not multihost:
        return ["flat"]
    return ["flat", "hierarchical"] if topology.nranks <= FLAT_RANKS else ["hierarchical"]


def flat_phase(net: LogicalNetwork, roots: Sequence[int], direction: Direction, *, deadline: float | None, max_chunks: int) -> TreePhase:
    """Solve the tree LP for ``roots`` and split it into whole chunks (module docstring)."""
    model = TreeModel(net, roots, direction)
    lp = model.solve(deadline=deadline)
    return split_into_chunks(model, lp, max_chunks=max_chunks, deadline=deadline)


def split_into_chunks(model: TreeModel, lp: TreeLP, *, max_chunks: int, deadline: float | None = None) -> TreePhase:
    """Whole chunks per tree attaining the LP value when possible, else the best rounding found.

    Simplex weights of a degenerate LP are often ugly fractions, though the optimum usually has
    an integral split with few chunks (Edmonds: integer capacities pack integrally). With
    ``t*`` the LP value read as a fraction, integer loads can fill a link that the LP fills
    only when ``capacity * t* * c`` is an integer, so ``c`` runs over multiples of the lcm
    of those denominators over the links the LP solution fills; for each, a feasibility MILP (HiGHS) looks for integer chunk counts over the
    generated trees with every link load within ``capacity * t* * c``. If none is found within
    ``max_chunks``, a dive looks for one with the smallest such ``c``: commit the whole chunks
    the LP solution already holds (or one chunk of its heaviest tree), take their load off the
    links and re-solve the LP with column generation for what is left, as long as the LP stays
    within ``t* c`` -- new columns priced on the residual capacities supply the trees an
    integral split needs. Failing that, largest-remainder rounding of the LP weights for every
    ``c`` up to :data:`_ROUNDING_CHUNKS` (and ``max_chunks``) is tried and the fastest kept. The time is always recomputed from
    integer loads.
    """
    net, roots, direction = model.net, model.roots, model.direction
    if max_chunks < 1:
        raise CollectiveError(f"tree packing: max_chunks must be at least 1, got {max_chunks!r}")
    target = Fraction(lp.time_per_unit).limit_denominator(1 << 20)
    step = _tight_step(model, lp, target)
    for chunks in range(step, min(max_chunks, _MILP_TRIES * step) + 1, step):
        trees = _integral_split(net, lp, roots, direction, chunks, target * chunks)
        if trees:
            exact = phase_time(net, direction, trees, chunks)
            return TreePhase(direction, tuple(trees), chunks, exact, lp.time_per_unit, lp.optimal)
    if step <= max_chunks and lp.optimal:
        budget = time.monotonic() + _DIVE_SECONDS
        trees = _dive(model, lp, step, target * step, budget if deadline is None else min(deadline, budget))
        if trees:
            exact = phase_time(net, direction, trees, step)
            return TreePhase(direction, tuple(trees), step, exact, lp.time_per_unit, lp.optimal)
    by_root: dict[int, list[WeightedTree]] = {r: [] for r in roots}
    for tree in lp.trees:
        by_root[tree.root].append(tree)
    phases = []
    for chunks in range(1, min(max_chunks, _ROUNDING_CHUNKS) + 1):
        trees = tuple(t for r in roots for t in _largest_remainder(by_root[r], chunks))
        phases.append(TreePhase(direction, trees, chunks, phase_time(net, direction, trees, chunks), lp.time_per_unit, lp.optimal))
        if float(phases[-1].time_per_unit) <= lp.time_per_unit * (1 + _SPLIT_TOLERANCE):
            break
    return min(phases, key=lambda p: p.time_per_unit)


def _tight_step(model: TreeModel, lp: TreeLP, target: Fraction) -> int:
    """The smallest ``c`` making ``capacity * target * c`` integral on every link the LP solution fills."""
    load = np.zeros(len(model.net.links))
    for tree in lp.trees:
        for link, count in tree_link_counts(tree.parent, model.arcs).items():
            load[link] += tree.weight * count
    tight = load >= model.net.capacity * lp.time_per_unit * (1 - 1e-7)
    return math.lcm(1, *((c * target).denominator for c, full in zip(model.net.exact_capacity, tight, strict=True) if full))


def _dive(model: TreeModel, lp: TreeLP, chunks: int, limit: Fraction, deadline: float | None) -> list[Tree]:
    """Whole chunks by diving with column generation (see :func:`split_into_chunks`); [] when no dive stays within ``limit``.

    Whole chunks of the LP solution are committed together; when none is left, one chunk of
    one of the :data:`_DIVE_TRIES` heaviest trees, the first whose residual LP stays within
    ``limit``.
    """
    state = _DiveState(dict.fromkeys(model.roots, chunks), {}, np.zeros(len(model.net.links)))
    weights = [(t, t.weight * chunks) for t in lp.trees]
    while any(state.remaining.values()):
        if deadline is not None and time.monotonic() > deadline:
            return []
        whole = [(t, min(math.floor(w + 1e-9), state.remaining[t.root])) for t, w in weights]
        whole = [(t, k) for t, k in whole if k > 0]
        if whole:
            state = state.commit(model, whole)
            if not any(state.remaining.values()):
                break
            again = _residual_lp(model, state, deadline)
        else:
            live = sorted((tw for tw in weights if state.remaining[tw[0].root] > 0), key=lambda tw: -tw[1])
            for tree, _ in live[:_DIVE_TRIES]:
                trial = state.commit(model, [(tree, 1)])
                if any(trial.remaining.values()):
                    again = _residual_lp(model, trial, deadline)
                    fits = again.time_per_unit <= float(limit) * (1 + _SPLIT_TOLERANCE)
                else:
                    again, fits = None, float(np.max(trial.used / model.net.capacity)) <= float(limit) * (1 + _SPLIT_TOLERANCE)
                if fits:
                    state = trial
                    break
            else:
                return []
            if again is None:
                break
        if again.time_per_unit > float(limit) * (1 + _SPLIT_TOLERANCE):
            return []
        weights = [(t, t.weight) for t in again.trees]
    return [Tree(root, parent, k) for (root, parent), k in state.committed.items()]


@dataclass(frozen=True, slots=True)
class _DiveState:
    """Chunks still to place per root, chunks committed per tree, and the link load they take."""

    remaining: dict[int, int]
    committed: dict[tuple[int, tuple[int | None, ...]], int]
    used: np.ndarray

    def commit(self, model: TreeModel, trees: Sequence[tuple[WeightedTree, int]]) -> _DiveState:
        remaining, committed, used = dict(self.remaining), dict(self.committed), self.used.copy()
        for tree, k in trees:
            committed[tree.root, tree.parent] = committed.get((tree.root, tree.parent), 0) + k
            remaining[tree.root] -= k
            for link, count in tree_link_counts(tree.parent, model.arcs).items():
                used[link] += k * count
        return _DiveState(remaining, committed, used)


def _residual_lp(model: TreeModel, state: _DiveState, deadline: float | None) -> TreeLP:
    model.set_demands([state.remaining[r] for r in model.roots])
    model.commit(state.used)
    return model.solve(deadline=deadline)


def _integral_split(
    net: LogicalNetwork, lp: TreeLP, roots: Sequence[int], direction: Direction, chunks: int, limit: Fraction
) -> list[Tree]:
    """Integer chunk counts (``chunks`` per root) over the LP's columns with every load <= capacity * ``limit``; [] if none found."""
    columns = [t for t in lp.columns if t.root in set(roots)]
    arcs = arcs_of(net, direction)
    row_of = {r: i for i, r in enumerate(roots)}
    nroots, nlinks = len(roots), len(net.links)
    highs = silent_highs()
    highs.setOptionValue("time_limit", _MILP_SECONDS)
    bounds = np.array([float(c * limit) for c in net.exact_capacity]) + 1e-6  # loads are integers
    empty = np.array([], dtype=np.int32)
    highs.addRows(nroots, np.full(nroots, float(chunks)), np.full(nroots, float(chunks)), 0, empty, empty, np.array([]))
    highs.addRows(nlinks, np.full(nlinks, -highspy.kHighsInf), bounds, 0, empty, empty, np.array([]))
    for tree in columns:
        rows, values = tree_column(row_of[tree.root], tree.parent, arcs, nroots)
        highs.addCol(0.0, 0.0, float(chunks), len(rows), rows, values)
    highs.changeColsIntegrality(len(columns), np.arange(len(columns), dtype=np.int32), np.full(len(columns), highspy.HighsVarType.kInteger))
    highs.run()
    if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return []
    values = np.rint(np.asarray(highs.getSolution().col_value)).astype(int)
    return [Tree(t.root, t.parent, int(x)) for t, x in zip(columns, values, strict=True) if x > 0]


def _largest_remainder(trees: Sequence[WeightedTree], chunks: int) -> list[Tree]:
    """Split ``chunks`` over ``trees`` in proportion to their weights (Hamilton's method)."""
    total = sum(t.weight for t in trees)
    quotas = [t.weight / total * chunks for t in trees]
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(trees)), key=lambda i: quotas[i] - counts[i], reverse=True)
    for i in order[: chunks - sum(counts)]:
        counts[i] += 1
    return [Tree(t.root, t.parent, c) for t, c in zip(trees, counts, strict=True) if c]


def phase_time(net: LogicalNetwork, direction: Direction, trees: Sequence[Tree], chunks_per_root: int) -> Fraction:
    """Exact ``max_l load_l / capacity_l`` of the trees, a unit of data being ``chunks_per_root`` chunks.

    Vectorized: tree edges are counted per logical arc, then spread over the arcs' links.
    """
    arcs = arcs_of(net, direction)
    n = net.topology.nranks
    arc_list = list(arcs)
    index = np.full((n, n), -1, dtype=np.int64)
    for k, (u, v) in enumerate(arc_list):
        index[u, v] = k
    parents = np.array([[-1 if p is None else p for p in t.parent] for t in trees], dtype=np.int64).reshape(len(trees), n)
    weights = np.repeat(np.array([t.chunks for t in trees], dtype=np.int64), n).reshape(len(trees), n)
    has_parent = parents >= 0
    children = np.broadcast_to(np.arange(n), parents.shape)
    arc_ids = index[parents[has_parent], children[has_parent]]
    if (arc_ids < 0).any():
        bad = int(np.flatnonzero(arc_ids < 0)[0])
        raise TopologyError(
            f"tree packing: a tree uses arc {int(parents[has_parent][bad])} -> {int(children[has_parent][bad])}, which is not a logical edge of {net.topology.name!r}"
        )
    per_arc = np.bincount(arc_ids, weights=weights[has_parent], minlength=len(arc_list)).astype(np.int64)
    lengths = np.array([len(arcs[a]) for a in arc_list], dtype=np.int64)
    link_ids = np.fromiter((link for a in arc_list for link in arcs[a]), dtype=np.int64, count=int(lengths.sum()))
    loads = np.bincount(link_ids, weights=np.repeat(per_arc, lengths), minlength=len(net.links)).astype(np.int64)
    return max(
        (Fraction(int(load), chunks_per_root) / cap for load, cap in zip(loads, net.exact_capacity, strict=True) if load),
        default=Fraction(0),
    )


def _common_chunks(phases: list[TreePhase]) -> list[TreePhase]:
    """Rescale the phases to one chunk count (their lcm), so one Program carries both."""
    common = math.lcm(*(p.chunks_per_root for p in phases))
    return [
        replace(p, trees=tuple(replace(t, chunks=t.chunks * common // p.chunks_per_root) for t in p.trees), chunks_per_root=common)
        for p in phases
    ]
