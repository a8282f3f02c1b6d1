"""Verified host symmetries: which ranks a per-sink check may skip because another rank stands for it.

A multi-host topology built by :func:`~synccl.topologies.multinode` is often symmetric
under exchanging two hosts: rank ``a*k + i`` with rank ``b*k + i``, vertex ``'h{a}/x'``
with ``'h{b}/x'``, every fabric vertex (no host) and every other host's vertices fixed.
Such a permutation is proposed for a pair of hosts only when it is a well-formed
bijection (same number of ranks, every named vertex has its ``'h{b}/'`` twin of the same
kind), and accepted only after checking that it maps every link to a link of identical
bandwidth. Only links that touch the two hosts can move, so the check costs their
number, not the whole graph's.

An accepted swap is an automorphism of the capacitated graph (and of its reverse), so a
max flow to rank ``a*k + i`` from a set of sources the swap maps onto itself has the value
of the one to ``b*k + i``. Hosts joined by accepted swaps to a class's first host form
that class; the first host's ranks represent every rank of the class. Nothing is assumed:
a rail or single-leaf fabric over identical nodes gives one class, a fat tree with several
leaves gives one class per leaf (a host swapped across leaves would move its uplink), an
irregular topology gives singletons, and a single-host topology is never reduced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import networkx as nx

from synccl.topologies import BANDWIDTH, HOST, VERTEX_KIND, Topology

__all__ = ["equivalent_hosts", "rank_representatives"]

Vertex = int | str


def equivalent_hosts(topology: Topology, *, fixed_host: int | None = None) -> list[list[int]]:
    """Classes of the hosts that verified host swaps make interchangeable.

    Every host of a class is exchanged with the class's first host by a host swap
    (module docstring) that was checked to map every link onto a link of the same
    bandwidth. ``fixed_host`` is never swapped (it stays a class of its own): use it to
    keep a root rank in place.

    Parameters
    ----------
    topology : Topology
        The network.
    fixed_host : int, optional
        A host that no swap may move.

    Returns
    -------
    list of list of int
        The classes of the ranks' hosts, each ascending, ordered by first host (a rank
        without a host belongs to none).

    Examples
    --------
    >>> from synccl.topologies import dgx_a100, multinode
    >>> equivalent_hosts(multinode(dgx_a100, 4))
    [[0, 1, 2, 3]]
    >>> equivalent_hosts(multinode(dgx_a100, 4, fabric="fat-tree", hosts_per_leaf=2))
    [[0, 1], [2, 3]]
    >>> equivalent_hosts(multinode(dgx_a100, 3), fixed_host=1)
    [[0, 2], [1]]
    """
    graph = topology.graph
    members = _host_members(graph)
    ranks = {h: sorted(v for v in vertices if isinstance(v, int)) for h, vertices in members.items()}
    classes: list[list[int]] = []
    for host in sorted({graph.nodes[r][HOST] for r in topology.ranks} - {None}):
        for cls in classes:
            first = cls[0]
            if host != fixed_host and first != fixed_host and _swap_is_automorphism(graph, _host_swap(graph, members, ranks, first, host)):
                cls.append(host)
                break
        else:
            classes.append([host])
    return classes


def rank_representatives(topology: Topology, *, root: int | None = None) -> list[int]:
    """Ranks that stand for all: every rank is the image of one of them under a verified host swap.

    The ranks of the first host of each class of :func:`equivalent_hosts`, and every rank
    without a host. With ``root``, only swaps that leave ``root`` in place count: its host
    is never swapped, so all of its ranks are returned. A single-host topology returns
    every rank.

    A check that is the same for every rank up to a relabelling that the swaps respect
    (for instance "``x`` per rank can flow from every other rank to this one", or "``x``
    can flow from ``root`` to this one") holds for every rank iff it holds for these.

    Parameters
    ----------
    topology : Topology
        The network.
    root : int, optional
        A rank every swap used must fix.

    Returns
    -------
    list of int
        Ascending ranks.

    Examples
    --------
    >>> from synccl.topologies import dgx_a100, multinode
    >>> rank_representatives(multinode(dgx_a100, 16))
    [0, 1, 2, 3, 4, 5, 6, 7]
    >>> rank_representatives(multinode(dgx_a100, 16), root=20)
    [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]
    """
    if topology.nhosts <= 1:
        return list(topology.ranks)
    fixed_host = None if root is None else topology.host_of(root)
    firsts = {cls[0] for cls in equivalent_hosts(topology, fixed_host=fixed_host)} | {None}
    return [r for r in topology.ranks if topology.graph.nodes[r][HOST] in firsts]


def _host_members(graph: nx.DiGraph) -> dict[int, list[Vertex]]:
    """The vertices of each host (fabric vertices, with no host, are left out)."""
    members: dict[int, list[Vertex]] = {}
    for v, data in graph.nodes(data=True):
        host = data.get(HOST)
        if host is not None:
            members.setdefault(host, []).append(v)
    return members


def _host_swap(
    graph: nx.DiGraph, members: Mapping[int, Sequence[Vertex]], ranks: Mapping[int, Sequence[int]], a: int, b: int
) -> dict[Vertex, Vertex] | None:
    """The vertex permutation exchanging hosts ``a`` and ``b`` (moved vertices only), or ``None`` if not a bijection.

    Ranks pair up in rank order; a switch or NIC ``'h{a}/x'`` pairs with ``'h{b}/x'``, which
    must exist on host ``b`` with the same vertex kind. Other names cannot be paired.
    """
    if len(ranks[a]) != len(ranks[b]) or len(members[a]) != len(members[b]):
        return None
    swap: dict[Vertex, Vertex] = {}
    swap.update(zip(ranks[a], ranks[b], strict=True))
    swap.update(zip(ranks[b], ranks[a], strict=True))
    prefix_a, prefix_b = f"h{a}/", f"h{b}/"
    for v in members[a]:
        if isinstance(v, int):
            continue
        if not v.startswith(prefix_a):
            return None
        twin = prefix_b + v[len(prefix_a) :]
        if twin not in graph or graph.nodes[twin].get(HOST) != b or graph.nodes[twin][VERTEX_KIND] != graph.nodes[v][VERTEX_KIND]:
            return None
        swap[v], swap[twin] = twin, v
    # injective from a's vertices into b's, and the hosts are the same size: a bijection
    return swap if len(swap) == len(members[a]) + len(members[b]) else None


def _swap_is_automorphism(graph: nx.DiGraph, swap: Mapping[Vertex, Vertex] | None) -> bool:
    """Whether ``swap`` (identity off its keys) maps every link to a link of the same bandwidth.

    Links between unmoved vertices map to themselves; the others all leave a moved vertex
    or enter one from an unmoved vertex, and are checked here. A permutation mapping the
    links into the links maps them onto them (finite sets).
    """
    if swap is None:
        return False
    succ, pred = graph.succ, graph.pred
    for u, image in swap.items():
        targets = succ[image]
        for v, data in succ[u].items():
            twin = targets.get(swap.get(v, v))
            if twin is None or twin[BANDWIDTH] != data[BANDWIDTH]:
                return False
        for w, data in pred[u].items():
            if w in swap:
                continue
            twin = succ[w].get(image)
            if twin is None or twin[BANDWIDTH] != data[BANDWIDTH]:
                return False
    return True
