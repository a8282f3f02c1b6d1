"""The fractional tree-packing LP, solved by column generation with HiGHS.

For a set of roots, each with one unit of data, choose weighted spanning trees of the ranks (at
most one unit per root in total) minimising the time ``t`` by which every physical link has
carried its load: ``sum_T w_T load_T(l) <= capacity(l) * t``. A tree is built of logical edges
(:mod:`synccl.synth._routes`), so its load on a link counts the tree edges whose route crosses
it. There are exponentially many trees, so the LP starts from one shortest-hop tree per root
and adds columns: with the link duals ``pi_l >= 0`` as edge prices, the cheapest tree of root
``r`` is a minimum-cost spanning arborescence (Edmonds' algorithm), and it improves the LP
exactly when its price is below the dual ``mu_r`` of ``r``'s unit-demand row. When no root has
such a tree the LP is optimal over all trees.

Out-trees carry a root's data to every rank (all_gather, broadcast); in-trees carry partial
results from every rank to the root (reduce_scatter, reduce): an in-tree edge ``child ->
parent`` uses the logical edge in that direction, so the same solver handles both by pricing
reversed arcs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import highspy
import networkx as nx
import numpy as np

from synccl.exceptions import Infeasible
from synccl.synth._highs import silent_highs
from synccl.synth._routes import LogicalNetwork

__all__ = ["WeightedTree", "TreeLP", "TreeModel", "solve_tree_lp", "tree_column", "Direction"]

logger = logging.getLogger(__name__)

Direction = Literal["out", "in"]

#: Pricing stops a round after this many improving trees (the LP is re-solved, then pricing goes on
#: with the next roots); only a round that prices every root without finding one proves optimality.
_COLUMNS_PER_ROUND = 4
#: A column improves the LP when its reduced cost is below minus this (relative to the dual).
_REDUCED_COST_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class WeightedTree:
    """A spanning tree of every rank, rooted at ``root``, carrying ``weight`` of its unit of data.

    ``parent[v]`` is ``v``'s parent, ``None`` at the root.
    """

    root: int
    parent: tuple[int | None, ...]
    weight: float


@dataclass(frozen=True, slots=True)
class TreeLP:
    """The LP's answer: trees with positive weight, every column generated, the optimal time per unit, and how it went."""

    trees: tuple[WeightedTree, ...]
    columns: tuple[WeightedTree, ...]
    time_per_unit: float
    iterations: int
    optimal: bool


def arcs_of(net: LogicalNetwork, direction: Direction) -> dict[tuple[int, int], tuple[int, ...]]:
    """Tree arcs ``parent -> child`` and the links each loads, for out- or in-trees."""
    if direction == "out":
        return dict(net.edges)
    return {(v, u): links for (u, v), links in net.edges.items()}


def tree_link_counts(parent: Sequence[int | None], arcs: dict[tuple[int, int], tuple[int, ...]]) -> dict[int, int]:
    """How many of the tree's edges cross each link."""
    counts: dict[int, int] = {}
    for child, par in enumerate(parent):
        if par is not None:
            for link in arcs[par, child]:
                counts[link] = counts.get(link, 0) + 1
    return counts


def tree_column(
    row: int, parent: Sequence[int | None], arcs: dict[tuple[int, int], tuple[int, ...]], nroots: int
) -> tuple[np.ndarray, np.ndarray]:
    """A tree's LP column: 1 in its root's demand row ``row``, its link counts in the link rows after the ``nroots`` root rows."""
    counts = tree_link_counts(parent, arcs)
    rows = np.array([row] + [nroots + link for link in counts], dtype=np.int32)
    return rows, np.array([1.0] + [float(c) for c in counts.values()])


def solve_tree_lp(
    net: LogicalNetwork,
    roots: Sequence[int],
    direction: Direction,
    *,
    deadline: float | None = None,
) -> TreeLP:
    """Optimal fractional packing of spanning trees for ``roots`` (module docstring).

    Parameters
    ----------
    net : LogicalNetwork
        Links and logical edges of the topology.
    roots : sequence of int
        The roots, each with one unit of data.
    direction : {"out", "in"}
        Out-trees (data flows from the root) or in-trees (towards it).
    deadline : float, optional
        ``time.monotonic()`` after which column generation stops; the packing found so far
        is returned with ``optimal=False``.

    Returns
    -------
    TreeLP
        The trees and the LP value (time per unit of data, in units per GB/s).

    Raises
    ------
    Infeasible
        If some root cannot reach every rank over logical edges.

    Examples
    --------
    Three ranks on a bidirectional ring at 10 GB/s: each rank's unit must cross two
    links and six links carry the three units, so each link carries one unit: 0.1.

    >>> from synccl.synth._routes import logical_network
    >>> from synccl.topologies import get_topology
    >>> lp = solve_tree_lp(logical_network(get_topology("ring:3")), [0, 1, 2], "out")
    >>> round(lp.time_per_unit * float(get_topology("ring:3").link(0, 1).bandwidth), 9), lp.optimal
    (1.0, True)
    """
    return TreeModel(net, roots, direction).solve(deadline=deadline)


class TreeModel:
    """The restricted master LP of :func:`solve_tree_lp`, kept to be solved again.

    Between solves the roots' demands may change and link capacity may be taken by committed
    trees (:meth:`commit`); :meth:`solve` then runs column generation from the current columns
    (HiGHS warm-starts from the last basis). Rows: one unit-demand row per root, then one
    ``sum_T w_T load_T(l) - capacity_l t <= -committed_l`` row per link; column 0 is ``t``.
    """

    def __init__(self, net: LogicalNetwork, roots: Sequence[int], direction: Direction) -> None:
        from scipy.sparse import csr_matrix  # imported on use: scipy is slow to import

        self.net, self.roots, self.direction = net, list(roots), direction
        self.arcs = arcs_of(net, direction)
        self.nroots, nlinks = len(self.roots), len(net.links)
        self.highs = silent_highs()
        empty = np.array([], dtype=np.int32)
        self.highs.addCol(1.0, 0.0, highspy.kHighsInf, 0, empty, np.array([]))  # t
        self.highs.addRows(self.nroots, np.ones(self.nroots), np.ones(self.nroots), 0, empty, empty, np.array([]))
        starts = np.arange(nlinks, dtype=np.int32)
        self.highs.addRows(
            nlinks, np.full(nlinks, -highspy.kHighsInf), np.zeros(nlinks), nlinks, starts, np.zeros(nlinks, dtype=np.int32), -net.capacity
        )
        self.columns: list[tuple[int, tuple[int | None, ...]]] = []
        self._next_row = 0
        # arc x link incidence: one sparse product prices every arc for a whole pricing round
        self._arc_ends = list(self.arcs)
        lengths = [len(self.arcs[a]) for a in self._arc_ends]
        self._incidence = csr_matrix(
            (np.ones(sum(lengths)), [link for a in self._arc_ends for link in self.arcs[a]], np.concatenate([[0], np.cumsum(lengths)])),
            shape=(len(self._arc_ends), nlinks),
        )
        self._seen: set[tuple[int, tuple[int | None, ...]]] = set()
        for row, root in enumerate(self.roots):
            self._add(row, _hop_tree(self.arcs, root, net.topology.nranks))

    def _add(self, row: int, parent: tuple[int | None, ...]) -> None:
        rows, values = tree_column(row, parent, self.arcs, self.nroots)
        self.highs.addCol(0.0, 0.0, highspy.kHighsInf, len(rows), rows, values)
        self.columns.append((self.roots[row], parent))
        self._seen.add((self.roots[row], parent))

    def set_demands(self, demands: Sequence[float]) -> None:
        """Units of data each root (in ``roots`` order) still has to send."""
        rows = np.arange(self.nroots, dtype=np.int32)
        values = np.asarray(demands, dtype=float)
        self.highs.changeRowsBounds(self.nroots, rows, values, values)

    def commit(self, committed: np.ndarray) -> None:
        """Per-link load already taken by trees fixed outside the LP."""
        nlinks = len(self.net.links)
        rows = np.arange(self.nroots, self.nroots + nlinks, dtype=np.int32)
        self.highs.changeRowsBounds(nlinks, rows, np.full(nlinks, -highspy.kHighsInf), -np.asarray(committed, dtype=float))

    def solve(self, *, deadline: float | None = None) -> TreeLP:
        """Column generation to optimality (or ``deadline``); see :func:`solve_tree_lp`."""
        n = self.net.topology.nranks
        iterations, optimal = 0, False
        while True:
            iterations += 1
            self.highs.run()
            if self.highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                status = self.highs.modelStatusToString(self.highs.getModelStatus())
                raise Infeasible(f"tree packing on {self.net.topology.name!r}: HiGHS ended with {status}")
            value = self.highs.getInfo().objective_function_value
            duals = np.asarray(self.highs.getSolution().row_dual)
            price = self._incidence @ np.maximum(-duals[self.nroots :], 0.0)
            weighted = [(u, v, float(w)) for (u, v), w in zip(self._arc_ends, price, strict=True)]
            added = 0
            # partial pricing: roots in turn from where the last round stopped, until a few columns are found
            for step in range(self.nroots):
                row = (self._next_row + step) % self.nroots
                parent, cost = _cheapest_tree(weighted, self.roots[row], n)
                if cost < duals[row] - _REDUCED_COST_TOLERANCE * max(1.0, abs(duals[row])) and (self.roots[row], parent) not in self._seen:
                    self._add(row, parent)
                    added += 1
                    if added >= _COLUMNS_PER_ROUND:
                        self._next_row = row + 1
                        break
            logger.info(
                "tree packing on %r: iteration %d, %d columns, LP %.9g, %d new",
                self.net.topology.name,
                iterations,
                len(self.columns),
                value,
                added,
            )
            if not added:
                optimal = True
                break
            if deadline is not None and time.monotonic() > deadline:
                self.highs.run()
                break
        values = np.asarray(self.highs.getSolution().col_value)[1:]
        generated = tuple(WeightedTree(root, parent, float(w)) for (root, parent), w in zip(self.columns, values, strict=True))
        trees = tuple(t for t in generated if t.weight > 1e-12)
        return TreeLP(trees, generated, float(self.highs.getInfo().objective_function_value), iterations, optimal)


def _hop_tree(arcs: dict[tuple[int, int], tuple[int, ...]], root: int, n: int) -> tuple[int | None, ...]:
    """A breadth-first spanning tree from ``root`` over the arcs (fewest hops to every rank)."""
    graph = nx.DiGraph(list(arcs))
    graph.add_nodes_from(range(n))
    parent: list[int | None] = [None] * n
    reached = {root}
    for u, v in nx.bfs_edges(graph, root):
        parent[v] = u
        reached.add(v)
    if len(reached) < n:
        missing = min(set(range(n)) - reached)
        raise Infeasible(f"tree packing: rank {missing} cannot be reached from root {root} without relaying through switches only")
    return tuple(parent)


def _cheapest_tree(weighted: Sequence[Arc], root: int, n: int) -> tuple[tuple[int | None, ...], float]:
    """The minimum-price spanning arborescence rooted at ``root`` over arcs priced ``(u, v, price)``, and its price."""
    chosen = min_arborescence(n, root, weighted)
    parent: list[int | None] = [None] * n
    for u, v, _ in chosen:
        parent[v] = u
    return tuple(parent), sum(w for _, _, w in chosen)


Arc = tuple[int, int, float]


def min_arborescence(n: int, root: int, arcs: Sequence[Arc]) -> list[Arc]:
    """A minimum-weight spanning arborescence of vertices ``0..n-1`` rooted at ``root`` (Chu-Liu/Edmonds).

    The column generation prices thousands of trees; networkx's general branching code takes
    ~40 ms on a 32-vertex graph, this O(VE) contraction ~1 ms (the tests check both agree).

    Raises
    ------
    Infeasible
        If some vertex cannot be reached from ``root``.

    Examples
    --------
    >>> min_arborescence(3, 0, [(0, 1, 5.0), (0, 2, 1.0), (2, 1, 1.0), (1, 2, 1.0)])
    [(0, 2, 1.0), (2, 1, 1.0)]
    """
    chosen = _contract(n, root, [(u, v, w, (u, v, w)) for u, v, w in arcs if u != v and v != root])
    return _in_order(chosen, root)


def _in_order(chosen: list[Arc], root: int) -> list[Arc]:
    """The arcs from the root outwards (breadth first), for stable output."""
    children: dict[int, list[Arc]] = {}
    for arc in chosen:
        children.setdefault(arc[0], []).append(arc)
    order, frontier = [], [root]
    while frontier:
        nxt = []
        for u in frontier:
            for arc in sorted(children.get(u, ()), key=lambda a: a[1]):
                order.append(arc)
                nxt.append(arc[1])
        frontier = nxt
    return order


def _contract(n: int, root: int, arcs: list[tuple[int, int, float, object]]) -> list:
    """One Chu-Liu/Edmonds round: cheapest in-arcs; if they close cycles, contract them and recurse."""
    best: list[tuple[int, int, float, object] | None] = [None] * n
    for arc in arcs:
        v = arc[1]
        if best[v] is None or arc[2] < best[v][2]:
            best[v] = arc
    for v in range(n):
        if v != root and best[v] is None:
            raise Infeasible(f"tree packing: vertex {v} cannot be reached from root {root}")
    group = [-1] * n
    seen = [-1] * n
    groups = 0
    for start in range(n):
        v = start
        while v != root and group[v] == -1 and seen[v] != start:
            seen[v] = start
            v = best[v][0]
        if v != root and group[v] == -1:  # walked into a new cycle through v
            u = best[v][0]
            while u != v:
                group[u] = groups
                u = best[u][0]
            group[v] = groups
            groups += 1
    if groups == 0:
        return [best[v][3] for v in range(n) if v != root]
    cycles = groups
    for v in range(n):
        if group[v] == -1:
            group[v] = groups
            groups += 1
    contracted = [(group[u], group[v], w - best[v][2], (u, v, w, payload)) for u, v, w, payload in arcs if group[u] != group[v]]
    entering = _contract(groups, group[root], contracted)
    heads = {v for _, v, _, _ in entering}
    result = [payload for _, _, _, payload in entering]
    result += [best[v][3] for v in range(n) if v != root and group[v] < cycles and v not in heads]
    return result
