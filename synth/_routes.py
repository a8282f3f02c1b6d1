"""The logical network the polynomial synthesizers plan on: rank-to-rank edges over physical links.

A Program moves data between ranks only; switches and NICs forward but never store or copy.
So the tree packer and the all-to-all LP plan on *logical edges* ``u -> v`` between ranks,
each carried along the physical route the simulator gives that pair
(:func:`synccl.sim.routes` at a bandwidth-dominated message size), and charge every physical
link of the route. A pair whose route crosses another rank is not a logical edge: forwarding
through a rank is an explicit relay (that rank receives and sends again), which the planners
decide themselves. Because planner and simulator see the same routes, the link loads a plan
is certified with are the ones the simulator charges.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from itertools import permutations

import numpy as np

from synccl.exceptions import Infeasible, TopologyError
from synccl.sim import routes
from synccl.topologies import Topology

__all__ = ["LogicalNetwork", "logical_network", "exact_bandwidth", "ROUTING_BYTES"]

#: The message size routes are chosen for: large enough that bandwidth, not latency, decides.
ROUTING_BYTES = 1 << 26

Vertex = int | str


def exact_bandwidth(gbps: float) -> Fraction:
    """A link bandwidth as the exact Fraction of its shortest decimal form (``12.5 -> 25/2``).

    >>> exact_bandwidth(12.5), exact_bandwidth(0.1)
    (Fraction(25, 2), Fraction(1, 10))
    """
    return Fraction(repr(float(gbps)))


@dataclass(frozen=True, slots=True)
class LogicalNetwork:
    """Physical links with ids and capacities, and the logical rank-to-rank edges routed over them.

    ``links[i]`` is a ``(u, v)`` link of bandwidth ``capacity[i]`` GB/s (exactly
    ``exact_capacity[i]``); ``edges[(a, b)]`` is the tuple of link ids the route ``a -> b``
    crosses.
    """

    topology: Topology
    links: tuple[tuple[Vertex, Vertex], ...]
    capacity: np.ndarray
    exact_capacity: tuple[Fraction, ...]
    edges: dict[tuple[int, int], tuple[int, ...]]

    def out_edges(self, rank: int) -> list[int]:
        """The ranks ``v`` with a logical edge ``rank -> v``, ascending."""
        return sorted(v for (u, v) in self.edges if u == rank)

    def exact_load_time(self, load: Iterable[Fraction]) -> Fraction:
        """``max_i load[i] / exact_capacity[i]`` computed in Fractions (for certificates)."""
        return max((Fraction(x) / c for x, c in zip(load, self.exact_capacity, strict=True) if x), default=Fraction(0))


def logical_network(topology: Topology, *, pairs: Iterable[tuple[int, int]] | None = None) -> LogicalNetwork:
    """The logical edges among ``pairs`` (default: every ordered rank pair) whose route crosses no other rank.

    Parameters
    ----------
    topology : Topology
        The network.
    pairs : iterable of (int, int), optional
        The candidate rank pairs; pairs routed through another rank are dropped.

    Returns
    -------
    LogicalNetwork
        Links, capacities and the surviving logical edges.

    Raises
    ------
    Infeasible
        If some link has zero bandwidth (nothing could be certified over it) or a candidate
        pair has no route at all.

    Examples
    --------
    On a line 0 - 1 - 2 the pair (0, 2) relays through rank 1, so it is not a logical edge:

    >>> from synccl.topologies import get_topology
    >>> sorted(logical_network(get_topology("line:3")).edges)
    [(0, 1), (1, 0), (1, 2), (2, 1)]
    """
    links = tuple((link.src, link.dst) for link in topology.links())
    for (u, v), link in zip(links, topology.links(), strict=True):
        if not link.bandwidth > 0:
            raise Infeasible(
                f"logical_network: link {u!r} -> {v!r} of topology {topology.name!r} has bandwidth {link.bandwidth!r}; every link needs a positive bandwidth"
            )
    link_id = {pair: i for i, pair in enumerate(links)}
    candidates = list(permutations(range(topology.nranks), 2)) if pairs is None else list(pairs)
    try:
        table = routes(topology, candidates, message_bytes=ROUTING_BYTES, op="logical_network")
    except TopologyError as exc:  # the router names the unreachable pair
        raise Infeasible(str(exc)) from None
    edges = {}
    for (a, b), route in table.items():
        interior = [v for _, v in route.links[:-1]]
        if not any(isinstance(v, int) for v in interior):
            edges[a, b] = tuple(link_id[pair] for pair in route.links)
    exact = tuple(exact_bandwidth(link.bandwidth) for link in topology.links())
    return LogicalNetwork(topology, links, np.array([float(c) for c in exact]), exact, edges)
