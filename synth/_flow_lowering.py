"""From flows to chunk schedules: paths, gateway composition, rounding to chunks, link loads, steps, Programs.

The all-to-all LP (:mod:`synccl.synth._flow`) returns, for every source, an amount of flow on
every logical edge. This module turns that into what a Program needs:

* :func:`decompose` splits one source's flow into paths, one set per destination (the
  standard flow decomposition, taking the widest remaining path first so that few paths
  carry most of the flow);
* :func:`assign_gateways` and :func:`compose_routes` turn the hierarchical construction's
  gateway flows and per-host paths into every pair's paths;
* :func:`round_to_chunks` gives every path an integer number of the pair's chunks
  (largest remainder, with ties and leftovers sent where they raise the busiest link least),
  and :func:`choose_chunks` picks the number of chunks;
* :func:`path_loads` charges paths to the physical links of their logical edges, the links
  the simulator charges;
* :func:`schedule_steps` orders the chunks' hops into steps, each logical edge carrying at
  most one chunk per step and every relayed chunk forwarded only after it arrived, chunks
  of one path overlapping (pipelined) in successive hops;
* :func:`build_program` lowers the steps through the DSL with one channel per connection
  end, so that a relay forwards as soon as a chunk arrives.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

from synccl.collectives import Buffer, CollectiveSpec, Program, ProgramBuilder, Step, Transfer
from synccl.synth._routes import LogicalNetwork

__all__ = [
    "BYTES_PER_US_PER_GBPS",
    "ChunkRoutes",
    "GatewayPlans",
    "Path",
    "Routes",
    "assign_gateways",
    "build_program",
    "choose_chunks",
    "chunk_id",
    "chunk_items",
    "compose_routes",
    "decompose",
    "path_links",
    "path_loads",
    "round_to_chunks",
    "schedule_steps",
    "time_per_unit",
    "transport",
]

logger = logging.getLogger(__name__)

#: A route of a chunk: the ranks it visits, source first, destination last.
Path = tuple[int, ...]
#: ``(src, dst) -> ((path, fraction), ...)``, fractions of a pair summing to 1.
Routes = Mapping[tuple[int, int], Sequence[tuple[Path, float]]]
#: ``(src, dst) -> ((path, chunks), ...)``.
ChunkRoutes = Mapping[tuple[int, int], Sequence[tuple[Path, int]]]
#: Bytes per microsecond carried by one GB/s.
BYTES_PER_US_PER_GBPS = 1e3
#: ``chunks=None`` tries these chunk counts, smallest first ...
_CHUNK_CHOICES = (1, 2, 3, 4, 6, 8, 12, 16)
#: ... and stops at the first whose rounding costs at most this much over the fractional routes ...
_ROUNDING_TOLERANCE = 0.01
#: ... within this many chunks in all (pairs x chunks), at least one chunk per pair.
_CHUNK_BUDGET = 16384


def chunk_id(src: int, dst: int, k: int, nranks: int, chunks: int) -> int:
    """The global all_to_all chunk number of the ``k``-th chunk ``src`` sends ``dst``.

    It is the numbering of :func:`synccl.collectives.chunk_sources`: ``(src*n + dst)*c + k``.

    >>> chunk_id(1, 0, 1, nranks=2, chunks=2)
    5
    """
    return (src * nranks + dst) * chunks + k


# -- decomposition -------------------------------------------------------------------------------


def decompose(
    source: int, flow: Mapping[tuple[int, int], float], demand: Mapping[int, float], *, tolerance: float = 1e-7
) -> dict[int, list[tuple[Path, float]]]:
    """Split one source's flow into paths to each destination, as fractions of its demand.

    ``flow[(u, v)]`` is the source's flow on logical edge ``u -> v`` and ``demand[d]`` what
    it must deliver to ``d``; the flow must conserve (net inflow ``demand[d]`` at every
    ``d``, zero at relays) up to solver tolerance. Paths are taken widest first (fewest hops
    among equally wide ones) and are simple; relaying through another destination is allowed.
    Flow that solver noise leaves unexplained is spread over the paths found, so every
    destination's fractions sum to 1.

    Parameters
    ----------
    source : int
        The rank the flow leaves.
    flow : mapping of (int, int) to float
        Flow per logical edge.
    demand : mapping of int to float
        Amount per destination (entries <= 0 are ignored).
    tolerance : float
        Relative size below which remaining flow counts as noise.

    Returns
    -------
    dict
        ``destination -> [(path, fraction), ...]``, fractions summing to 1.

    Examples
    --------
    >>> decompose(0, {(0, 1): 1.0, (1, 2): 0.5, (0, 2): 0.5}, {1: 0.5, 2: 1.0})
    {2: [((0, 2), 0.5), ((0, 1, 2), 0.5)], 1: [((0, 1), 1.0)]}
    """
    scale = max((d for d in demand.values() if d > 0), default=0.0)
    eps = tolerance * scale
    adjacency: dict[int, dict[int, float]] = {}
    for (u, v), f in flow.items():
        if f > eps and v != source:
            adjacency.setdefault(u, {})[v] = f
    out: dict[int, list[tuple[Path, float]]] = {}
    for d in sorted((d for d, x in demand.items() if x > eps), key=lambda d: (-demand[d], d)):
        remaining, found = demand[d], []
        while remaining > eps:
            path = _widest_path(adjacency, source, d, eps)
            if path is None:
                break
            amount = min(remaining, min(adjacency[u][v] for u, v in zip(path, path[1:], strict=False)))
            for u, v in zip(path, path[1:], strict=False):
                adjacency[u][v] -= amount
            remaining -= amount
            found.append((path, amount))
        total = sum(a for _, a in found)
        if total > 0:
            out[d] = [(p, a / total) for p, a in found]
    return out


def _widest_path(adjacency: Mapping[int, Mapping[int, float]], source: int, target: int, eps: float) -> Path | None:
    """The path ``source -> target`` of largest bottleneck (then fewest hops) over edges above ``eps``."""
    best: dict[int, tuple[float, int]] = {source: (-math.inf, 0)}
    parent: dict[int, int] = {}
    heap = [(-math.inf, 0, source)]
    while heap:
        key = heapq.heappop(heap)
        width, hops, u = key
        if u == target:
            break
        if (width, hops) > best[u]:
            continue
        for v, f in adjacency.get(u, {}).items():
            if f <= eps:
                continue
            candidate = (max(width, -f), hops + 1)
            if v not in best or candidate < best[v]:
                best[v] = candidate
                parent[v] = u
                heapq.heappush(heap, (*candidate, v))
    if target not in parent:
        return None
    path = [target]
    while path[-1] != source:
        path.append(parent[path[-1]])
    return tuple(reversed(path))


# -- loads and rounding ---------------------------------------------------------------------------


def path_links(net: LogicalNetwork, path: Path) -> tuple[int, ...]:
    """The physical link ids a path crosses, one entry per crossing."""
    return tuple(link for u, v in zip(path, path[1:], strict=False) for link in net.edges[u, v])


def path_loads(net: LogicalNetwork, items: Iterable[tuple[Path, float]]) -> np.ndarray:
    """Bytes on every physical link when each ``(path, bytes)`` of ``items`` is sent.

    >>> from synccl.topologies import get_topology
    >>> from synccl.synth._routes import logical_network
    >>> path_loads(logical_network(get_topology("line:3")), [((0, 1, 2), 2.0)]).tolist()
    [2.0, 0.0, 2.0, 0.0]
    """
    load = np.zeros(len(net.links))
    for path, amount in items:
        for link in path_links(net, path):
            load[link] += amount
    return load


def round_to_chunks(
    net: LogicalNetwork,
    routes: Mapping[tuple[int, int], Sequence[tuple[Path, float]]],
    weight: Mapping[tuple[int, int], float],
    chunks: int,
) -> dict[tuple[int, int], tuple[tuple[Path, int], ...]]:
    """Give each pair's ``chunks`` chunks to its paths in proportion to their fractions.

    Every path first gets ``floor(fraction * chunks)``; the chunks left over go one at a
    time, pairs with the largest remainders first, to the path whose busiest link
    (``load / capacity``, a chunk of pair ``p`` weighing ``weight[p] / chunks`` bytes) would
    grow least, ties to the larger remainder. Then, while it helps, a chunk on the busiest
    link moves to another of its pair's paths that avoids that link and stays below it.
    Paths left without a chunk are dropped.

    Returns
    -------
    dict
        ``(src, dst) -> ((path, count), ...)`` with counts summing to ``chunks``.

    Examples
    --------
    >>> from synccl.topologies import get_topology
    >>> from synccl.synth._routes import logical_network
    >>> net = logical_network(get_topology("ring:4"))
    >>> round_to_chunks(net, {(0, 2): [((0, 1, 2), 0.5), ((0, 3, 2), 0.5)]}, {(0, 2): 1.0}, 3)[0, 2]
    (((0, 1, 2), 2), ((0, 3, 2), 1))
    """
    capacity = net.capacity
    links = {path: np.array(path_links(net, path), dtype=np.int64) for paths in routes.values() for path, _ in paths}
    counts: dict[tuple[int, int], list[int]] = {}
    left: list[tuple[float, tuple[int, int]]] = []
    load = np.zeros(len(net.links))
    for pair, paths in routes.items():
        exact = [f * chunks for _, f in paths]
        counts[pair] = [math.floor(x + 1e-9) for x in exact]
        size = weight[pair] / chunks
        for (path, _), k in zip(paths, counts[pair], strict=True):
            np.add.at(load, links[path], k * size)
        missing = chunks - sum(counts[pair])
        if missing > 0:
            top = max(x - k for x, k in zip(exact, counts[pair], strict=True))
            left.append((-top, pair))
    for _, pair in sorted(left):
        paths, size = routes[pair], weight[pair] / chunks
        for _ in range(chunks - sum(counts[pair])):
            best = min(
                range(len(paths)),
                key=lambda i: (_worst_after(load, capacity, links[paths[i][0]], size), -(paths[i][1] * chunks - counts[pair][i]), i),
            )
            counts[pair][best] += 1
            np.add.at(load, links[paths[best][0]], size)
    _relieve_busiest(load, capacity, routes, links, counts, {pair: weight[pair] / chunks for pair in routes})
    return {pair: tuple((path, k) for (path, _), k in zip(routes[pair], counts[pair], strict=True) if k > 0) for pair in routes}


def _relieve_busiest(
    load: np.ndarray,
    capacity: np.ndarray,
    routes: Mapping[tuple[int, int], Sequence[tuple[Path, float]]],
    links: Mapping[Path, np.ndarray],
    counts: dict[tuple[int, int], list[int]],
    size: Mapping[tuple[int, int], float],
) -> None:
    """Local search: move single chunks off the busiest link while that lowers it without creating a busier one.

    Only pairs with several paths can move; each move strictly lowers the busiest link's
    load or the number of links at the maximum, and at most one move per pair is made per
    round of the search, so it ends.
    """
    crossing: dict[int, list[tuple[tuple[int, int], int]]] = {}
    for pair, paths in routes.items():
        if len(paths) > 1:
            for i, (path, _) in enumerate(paths):
                for link in set(links[path].tolist()):
                    crossing.setdefault(link, []).append((pair, i))
    for _ in range(sum(len(paths) > 1 for paths in routes.values())):
        ratio = load / capacity
        hot = int(np.argmax(ratio))
        top = ratio[hot]
        best = None
        for pair, i in crossing.get(hot, ()):
            if counts[pair][i] == 0:
                continue
            for j, (other, _) in enumerate(routes[pair]):
                if j == i or hot in links[other]:
                    continue
                worst = _worst_after(load, capacity, links[other], size[pair])
                if worst < top * (1 - 1e-12) and (best is None or worst < best[0]):
                    best = (worst, pair, i, j)
        if best is None:
            return
        _, pair, i, j = best
        counts[pair][i] -= 1
        counts[pair][j] += 1
        np.add.at(load, links[routes[pair][i][0]], -size[pair])
        np.add.at(load, links[routes[pair][j][0]], size[pair])


def _worst_after(load: np.ndarray, capacity: np.ndarray, links: np.ndarray, size: float) -> float:
    """The largest ``load / capacity`` over ``links`` once ``size`` more bytes cross each of them."""
    if links.size == 0:
        return 0.0
    extra = np.bincount(links, minlength=0)[links] * size
    return float(np.max((load[links] + extra) / capacity[links]))


# -- times and the choice of chunks -----------------------------------------------------------------


def time_per_unit(net: LogicalNetwork, load: np.ndarray) -> float:
    """µs per unit: the busiest link's bytes over its bytes per µs."""
    return float(np.max(load / (net.capacity * BYTES_PER_US_PER_GBPS), initial=0.0))


def chunk_items(matrix: np.ndarray, chunk_routes: ChunkRoutes, chunks: int) -> Iterator[tuple[Path, float]]:
    """``(path, units)`` for every path of the chunk routes: its chunks of ``matrix[pair] / chunks`` units each."""
    return ((path, k * float(matrix[pair]) / chunks) for pair, paths in chunk_routes.items() for path, k in paths)


def choose_chunks(
    net: LogicalNetwork, matrix: np.ndarray, routes: Routes, chunks: int | None, route_time: float
) -> tuple[int, dict[tuple[int, int], tuple[tuple[Path, int], ...]], float]:
    """The number of chunks per pair, its chunk routes and their time (µs per unit).

    ``chunks`` if given; otherwise the first of ``1, 2, 3, 4, 6, 8, 12, 16`` (at most
    16384 chunks in all, at least one per pair) whose routes take at most 1% longer than
    the fractional ``routes`` (``route_time``), or the fastest of those tried.

    Examples
    --------
    >>> from synccl.topologies import get_topology
    >>> from synccl.synth._routes import logical_network
    >>> net, m = logical_network(get_topology("ring:4")), np.ones((4, 4))
    >>> choose_chunks(net, m, {(0, 2): [((0, 1, 2), 0.5), ((0, 3, 2), 0.5)]}, None, 0.00002)[0]
    2
    """
    if chunks is not None:
        choices: tuple[int, ...] = (chunks,)
    else:
        budget = max(1, _CHUNK_BUDGET // max(1, len(routes)))
        choices = tuple(c for c in _CHUNK_CHOICES if c <= budget) or (1,)
    weight = {pair: float(matrix[pair]) for pair in routes}
    tried = []
    for c in choices:
        chunk_routes = round_to_chunks(net, routes, weight, c)
        achieved = time_per_unit(net, path_loads(net, chunk_items(matrix, chunk_routes, c)))
        logger.debug("flow_all_to_all: %d chunk(s) per pair: %.6g us/unit", c, achieved)
        tried.append((achieved, c, chunk_routes))
        if achieved <= route_time * (1 + _ROUNDING_TOLERANCE):
            break
    achieved, c, chunk_routes = min(tried, key=lambda t: (t[0], t[1]))
    return c, chunk_routes, achieved


# -- gateways (hierarchical construction) ----------------------------------------------------------

#: Per pair ``(s, d)`` on different hosts: ``[(g, g', fraction), ...]`` over gateway edges.
GatewayPlans = dict[tuple[int, int], list[tuple[int, int, float]]]


def assign_gateways(
    demand: np.ndarray, members: Mapping[int, list[int]], inter: list[tuple[int, int]], flow: np.ndarray
) -> tuple[GatewayPlans, np.ndarray]:
    """Split every host pair's gateway flows among its rank pairs; return the plans and the intra-host legs.

    Sending side: source ``s`` puts its traffic to host ``B`` on gateway ``g`` (``a[s, g]``),
    on itself first. At gateway ``g`` the traffic for each destination ``d`` goes over the
    edges ``g -> g'``, to ``g' = d`` first. A pair's fraction on ``(g, g')`` is the product of
    its source's share of ``g`` and its destination's share of ``g -> g'`` at ``g``.
    """
    legs = np.zeros_like(demand)
    plans: GatewayPlans = {}
    by_pair: dict[tuple[int, int], list[tuple[int, int, float]]] = {}
    host_of = {r: h for h, ranks in members.items() for r in ranks}
    for (u, v), f in zip(inter, flow, strict=True):
        if f > 0:
            by_pair.setdefault((host_of[u], host_of[v]), []).append((u, v, float(f)))
    for (a, b), edges in by_pair.items():
        src, dst = members[a], members[b]
        block = demand[np.ix_(src, dst)]
        out_of = block.sum(axis=1)
        gates = sorted({u for u, _, _ in edges})
        gate_flow = np.array([sum(f for u, _, f in edges if u == g) for g in gates])
        share = transport(out_of, gate_flow, [[s == g for g in gates] for s in src])  # share[i, j]: src[i] via gates[j]
        legs[np.ix_(src, gates)] += share
        via = np.divide(share, out_of[:, None], out=np.zeros_like(share), where=out_of[:, None] > 0)
        at_gate = via.T @ block  # at_gate[j, m]: traffic for dst[m] reaching gates[j]
        for j, g in enumerate(gates):
            ends = [(v, f) for u, v, f in edges if u == g]
            split = transport(at_gate[j], np.array([f for _, f in ends]), [[d == v for v, _ in ends] for d in dst])
            for m, d in enumerate(dst):
                for q, (v, _) in enumerate(ends):
                    if split[m, q] <= 0 or at_gate[j, m] <= 0:
                        continue
                    if v != d:
                        legs[v, d] += split[m, q]
                    part = split[m, q] / at_gate[j, m]
                    for i, s in enumerate(src):
                        if via[i, j] > 0 and block[i, m] > 0:
                            plans.setdefault((s, d), []).append((g, v, via[i, j] * part))
    np.fill_diagonal(legs, 0.0)
    return plans, legs


def transport(supply: np.ndarray, capacity: np.ndarray, preferred: Sequence[Sequence[bool]]) -> np.ndarray:
    """Split ``supply`` over ``capacity`` (equal totals up to noise): preferred cells first, then in order.

    Each supply and each capacity has at most one preferred cell, so filling those first
    is optimal for the count of non-preferred traffic; the rest goes north-west corner,
    which splits few supplies.

    >>> transport(np.array([2.0, 1.0]), np.array([1.0, 2.0]), [[False, True], [True, False]]).tolist()
    [[0.0, 2.0], [1.0, 0.0]]
    """
    out = np.zeros((len(supply), len(capacity)))
    supply, capacity = supply.astype(float).copy(), capacity.astype(float).copy()
    scale = capacity.sum() / supply.sum() if supply.sum() > 0 else 0.0
    supply *= scale  # absorb solver noise: totals agree exactly
    for i, row in enumerate(preferred):
        for j, wanted in enumerate(row):
            if wanted:
                amount = min(supply[i], capacity[j])
                out[i, j] += amount
                supply[i] -= amount
                capacity[j] -= amount
    i = j = 0
    while i < len(supply) and j < len(capacity):
        amount = min(supply[i], capacity[j])
        out[i, j] += amount
        supply[i] -= amount
        capacity[j] -= amount
        if supply[i] <= capacity[j]:
            i += 1
        else:
            j += 1
    return out / scale if scale > 0 else out


def compose_routes(
    plans: GatewayPlans, intra: Mapping[tuple[int, int], list[tuple[Path, float]]], demand: np.ndarray, host: list[int | None]
) -> dict[tuple[int, int], tuple[tuple[Path, float], ...]]:
    """Every pair's paths: its intra-host routes, or leg paths around each gateway edge.

    A pair on different hosts crossing gateway edge ``g -> g'`` with fraction ``f`` takes
    every path ``s ~> g`` (fraction ``f1`` of the legs ``s -> g``) followed by every path
    ``g' ~> d`` (``f2``), with fraction ``f * f1 * f2``.

    >>> demand = np.pad([[1.0]], ((0, 3), (3, 0)))  # rank 0 sends to rank 3 only
    >>> legs = {(0, 1): [((0, 1), 1.0)], (2, 3): [((2, 3), 1.0)]}
    >>> compose_routes({(0, 3): [(1, 2, 1.0)]}, legs, demand, [0, 0, 1, 1])
    {(0, 3): (((0, 1, 2, 3), 1.0),)}
    """
    n = len(demand)
    out: dict[tuple[int, int], tuple[tuple[Path, float], ...]] = {}
    for s in range(n):
        for d in range(n):
            if s == d or demand[s, d] <= 0:
                continue
            if host[s] == host[d]:
                out[s, d] = tuple(intra[s, d])
                continue
            merged: dict[Path, float] = {}
            for g, v, f in plans[s, d]:
                for first, f1 in intra[s, g] if s != g else [((s,), 1.0)]:
                    for last, f2 in intra[v, d] if v != d else [((d,), 1.0)]:
                        path = first + last
                        merged[path] = merged.get(path, 0.0) + f * f1 * f2
            total = sum(merged.values())
            out[s, d] = tuple((p, float(x / total)) for p, x in sorted(merged.items(), key=lambda kv: -kv[1]))
    return out


# -- steps --------------------------------------------------------------------------------------


def schedule_steps(chunk_routes: Mapping[tuple[int, int], Sequence[tuple[Path, int]]], nranks: int, chunks: int) -> tuple[Step, ...]:
    """Order every chunk's hops into steps: one chunk per logical edge per step, hops in path order.

    Chunk ``k`` of pair ``(s, d)`` is :func:`chunk_id` ``(s, d, k)``; chunks go to a pair's
    paths in order. List scheduling: in every step, each logical edge with a chunk ready
    (at its source from the start, at a relay from the step after it arrived) moves the
    ready chunk with the most hops still ahead. So a relay forwards a chunk only after
    receiving it, and the chunks of one path move through its hops in a pipeline.

    Returns
    -------
    tuple of Step
        The steps, each of one round.

    Examples
    --------
    Two chunks from 0 to 2 through relay 1 overlap: the second crosses ``0 -> 1`` while
    the first crosses ``1 -> 2``.

    >>> steps = schedule_steps({(0, 2): [((0, 1, 2), 2)]}, nranks=3, chunks=2)
    >>> [[(t.chunk, t.src, t.dst) for t in s.transfers] for s in steps]
    [[(4, 0, 1)], [(5, 0, 1), (4, 1, 2)], [(5, 1, 2)]]
    """
    ready: dict[tuple[int, int], list[tuple[int, int, int, Path]]] = {}

    def offer(chunk: int, path: Path, hop: int) -> None:
        heapq.heappush(ready.setdefault((path[hop], path[hop + 1]), []), (hop + 2 - len(path), chunk, hop, path))

    for (src, dst), paths in sorted(chunk_routes.items()):
        k = 0
        for path, count in paths:
            for _ in range(count):
                offer(chunk_id(src, dst, k, nranks, chunks), path, 0)
                k += 1
    steps = []
    while ready:
        moved = []
        for edge in sorted(ready):
            _, chunk, hop, path = heapq.heappop(ready[edge])
            if not ready[edge]:
                del ready[edge]
            moved.append((chunk, hop, path))
        for chunk, hop, path in moved:
            if hop + 2 < len(path):
                offer(chunk, path, hop + 1)
        steps.append(Step(tuple(Transfer(chunk, path[hop], path[hop + 1]) for chunk, hop, path in moved)))
    return tuple(steps)


# -- Program ----------------------------------------------------------------------------------------


def build_program(
    name: str, chunk_routes: Mapping[tuple[int, int], Sequence[tuple[Path, int]]], steps: Sequence[Step], nranks: int, chunks: int
) -> Program:
    """Lower the chunk schedule to a verified all_to_all Program through the DSL.

    Channels are pinned: on every rank, channel 0 copies the rank's own block, and every
    connection end gets its own channel (one per peer sent to, one per peer received
    from). A relay receives into scratch on the receiving channel and forwards from the
    sending channel, which waits for that receive only; so forwarding never waits behind
    chunks that end at the relay, as it would on a channel shared by both (the
    :class:`~synccl.collectives.Algorithm` lowering pairs them). The chunks a pair sends
    over a direct path move as one instruction; relayed chunks move one at a time.

    Examples
    --------
    >>> steps = schedule_steps({(0, 1): [((0, 1), 1)], (1, 0): [((1, 0), 1)]}, nranks=2, chunks=1)
    >>> prog = build_program("swap", {(0, 1): [((0, 1), 1)], (1, 0): [((1, 0), 1)]}, steps, 2, 1)
    >>> [len(rp.channels) for rp in prog.ranks]
    [3, 3]
    """
    spec = CollectiveSpec("all_to_all", nranks, chunk_factor=chunks)
    builder = ProgramBuilder(name, spec)
    send_channel, recv_channel = _channels(steps, nranks)
    for r in range(nranks):
        builder.ref(r, Buffer.INPUT, r * chunks, chunks).copy(r, Buffer.OUTPUT, r * chunks, send_channel=0)
    group: dict[int, int] = {}  # first chunk of a direct path -> chunks moving with it
    skip: set[int] = set()
    for (s, d), paths in chunk_routes.items():
        k = 0
        for path, count in paths:
            if len(path) == 2:
                group[chunk_id(s, d, k, nranks, chunks)] = count
                skip.update(chunk_id(s, d, k + i, nranks, chunks) for i in range(1, count))
            k += count
    held: dict[int, tuple[int, Buffer, int]] = {}
    scratch = [0] * nranks
    for step in steps:
        for t in step.transfers:
            if t.chunk in skip:
                continue
            pair, k = divmod(t.chunk, chunks)
            s, d = divmod(pair, nranks)
            size = group.get(t.chunk, 1)
            rank, buffer, index = held.get(t.chunk, (s, Buffer.INPUT, d * chunks + k))
            if t.dst == d:
                target = (d, Buffer.OUTPUT, s * chunks + k)
            else:
                target = (t.dst, Buffer.SCRATCH, scratch[t.dst])
                scratch[t.dst] += 1
            ref = builder.ref(rank, buffer, index, size)
            ref.copy(*target, send_channel=send_channel[t.src, t.dst], recv_channel=recv_channel[t.dst, t.src])
            held[t.chunk] = target
    return builder.build()


def _channels(steps: Sequence[Step], nranks: int) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], int]]:
    """Channel ids: ``send[(u, v)]`` on ``u`` and ``recv[(v, u)]`` on ``v`` for every edge ``u -> v`` used (0 is the local copy)."""
    edges = sorted({(t.src, t.dst) for step in steps for t in step.transfers})
    count = [1] * nranks
    send, recv = {}, {}
    for u, v in edges:
        send[u, v] = count[u]
        count[u] += 1
    for u, v in sorted(edges, key=lambda e: (e[1], e[0])):
        recv[v, u] = count[v]
        count[v] += 1
    return send, recv
