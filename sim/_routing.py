"""Routes of rank-to-rank flows through a topology.

A flow from rank ``a`` to rank ``b`` takes the direct link when there is one and otherwise a
path through any vertices: switches, NICs and also other ranks (a line or a torus has no
direct link between distant ranks; the intermediate rank forwards the data and costs only the
use of its links, as a GPU's NVLink forwarding would). The path minimises the sum over its
links of ``latency + message_bytes / bandwidth`` -- the time a message alone would take
store-and-forward -- so a slower direct link loses to a fast detour only when the detour
really is faster for messages of that size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from synccl.exceptions import TopologyError
from synccl.topologies import BANDWIDTH, LATENCY, Topology

__all__ = ["Route", "routes"]

#: Bytes per microsecond carried by one GB/s.
BYTES_PER_US_PER_GBPS = 1e3


@dataclass(frozen=True, slots=True)
class Route:
    """The links a flow from ``src`` to ``dst`` crosses, and their summed latency (µs)."""

    src: int
    dst: int
    links: tuple[tuple[int | str, int | str], ...]
    latency: float


def routes(
    topology: Topology, pairs: Iterable[tuple[int, int]], *, message_bytes: float, op: str = "route"
) -> dict[tuple[int, int], Route]:
    """Shortest routes for the given rank pairs, one Dijkstra per distinct source (scipy's, in C).

    Parameters
    ----------
    topology : Topology
        The network.
    pairs : iterable of (int, int)
        The ``(src, dst)`` rank pairs to route, ``src != dst``.
    message_bytes : float
        The message size the path is chosen for.
    op : str
        Operation name for error messages.

    Returns
    -------
    dict
        ``(src, dst) -> Route``.

    Raises
    ------
    TopologyError
        If some ``dst`` cannot be reached from its ``src``.

    Examples
    --------
    >>> from synccl.topologies import TopologyBuilder
    >>> b = TopologyBuilder()
    >>> r = [b.add_rank() for _ in range(3)]
    >>> b.add_link(0, 1, bandwidth=10.0, latency=1.0, kind="nvlink")
    >>> b.add_link(1, 2, bandwidth=10.0, latency=2.0, kind="nvlink")
    >>> routes(b.build("line:3"), [(0, 2)], message_bytes=1e3)[0, 2].latency
    3.0
    """
    graph = topology.graph
    by_source: dict[int, list[int]] = {}
    for src, dst in pairs:
        by_source.setdefault(src, []).append(dst)
    if not by_source:
        return {}
    # One C Dijkstra over every source at once (scipy), paths read back from the predecessors.
    # scipy is imported here, not at module level: importing synccl.sim for its helpers
    # (busbw_factor, size_range) should not cost scipy's quarter of a second.
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    vertices = list(graph.nodes)
    index = {v: i for i, v in enumerate(vertices)}
    edges = list(graph.edges(data=True))
    weights = [data[LATENCY] + message_bytes / (data[BANDWIDTH] * BYTES_PER_US_PER_GBPS) for _, _, data in edges]
    matrix = csr_matrix((weights, ([index[u] for u, _, _ in edges], [index[v] for _, v, _ in edges])), shape=(len(vertices), len(vertices)))
    sources = list(by_source)
    _, predecessors = dijkstra(matrix, directed=True, indices=[index[s] for s in sources], return_predecessors=True)
    table: dict[tuple[int, int], Route] = {}
    for row, src in enumerate(sources):
        previous = predecessors[row]
        for dst in by_source[src]:
            if graph.has_edge(src, dst):  # a direct link is always taken (module docstring)
                table[src, dst] = Route(src, dst, ((src, dst),), graph.edges[src, dst][LATENCY])
                continue
            at = index[dst]
            if previous[at] < 0:
                raise TopologyError(f"{op}: no route {src!r} -> {dst!r} in topology {topology.name!r}")
            path = [dst]
            while at != index[src]:
                at = int(previous[at])
                path.append(vertices[at])
            links = tuple(zip(path[:0:-1], path[-2::-1], strict=True))
            table[src, dst] = Route(src, dst, links, sum(graph.edges[u, v][LATENCY] for u, v in links))
    return table
