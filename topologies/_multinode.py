"""Multi-node topologies: copies of one node joined by a network fabric.

Host ``h`` of ``nnodes`` gets ranks ``h*k .. h*k + k-1`` (``k`` ranks per node, host-major
numbering), its switches and NICs are renamed ``'h{h}/{name}'``, and every vertex of the
copy has ``host = h``. The node's NIC vertices are joined to the fabric; a node without
NICs gets ``nics_per_node`` of them, each shared by a consecutive group of ranks over PCIe.

Fabrics (all links of kind ``kind``, ``latency`` per hop, fabric switches with no host):

``'rail'``
    Rail-only: NIC ``i`` of every host is linked to switch ``'rail{i}'``, and rails are not
    linked to each other; traffic changes rail inside a node (over NVLink or PCIe). This
    is the rail-optimized layout of DGX SuperPOD, less its spine.
``'fat-tree'``
    Two levels: the NICs of ``hosts_per_leaf`` consecutive hosts are linked to leaf switch
    ``'leaf{j}'``, and with more than one leaf, every leaf is linked to one logical
    ``'spine'`` (the spine layer lumped into one non-blocking vertex). A leaf's uplink
    carries the sum of its NIC ports divided by ``oversubscription`` (1.0 is a full
    fat tree, 2.0 halves the uplink), in ``ceil(ports / oversubscription)`` lanes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from synccl.exceptions import TopologyError
from synccl.topologies._generic import MAX_RANKS
from synccl.topologies._nodes import HDR_200G, NETWORK_LATENCY, NIC_BANDWIDTH, PCIE_GEN4, add_nics, natural_key, spread
from synccl.topologies._topology import HOST, MEMORY_BANDWIDTH, VERTEX_KIND, LinkKind, Topology, TopologyBuilder, VertexKind

__all__ = ["multinode"]

_FABRICS = ("rail", "fat-tree")
_LEAF_PORTS = 32  # default NIC ports per leaf switch (a 64-port switch, half its ports down)


def multinode(
    node: Topology | Callable[[], Topology],
    nnodes: int,
    *,
    fabric: Literal["rail", "fat-tree"] = "rail",
    nics_per_node: int | None = None,
    nic_bandwidth: float | None = None,
    pcie_bandwidth: float = PCIE_GEN4,
    oversubscription: float = 1.0,
    hosts_per_leaf: int | None = None,
    latency: float = NETWORK_LATENCY,
    kind: LinkKind | str = LinkKind.IB,
    name: str | None = None,
) -> Topology:
    """Replicate a one-host topology ``nnodes`` times and join the copies by a fabric.

    Parameters
    ----------
    node : Topology or callable returning one
        The node; it must span a single host.
    nnodes : int
        Number of hosts, at least 1.
    fabric : {'rail', 'fat-tree'}, optional
        How the NICs are joined (see the module documentation).
    nics_per_node : int, optional
        For a node without NIC vertices: how many NICs to add (1..ranks per node). For a
        node with NICs it may be omitted, and must equal their count if given.
    nic_bandwidth : float, optional
        Port rate of every NIC (GB/s, one direction). Defaults to each NIC's
        ``nic_bandwidth`` attribute, or 25 GB/s (200 Gb/s) for NICs added here.
    pcie_bandwidth : float, optional
        Rank-NIC link bandwidth for NICs added here (default PCIe Gen4 x16, 31.5 GB/s).
    oversubscription : float, optional
        Fat-tree leaf downlink:uplink ratio, at least 1. Only for ``fabric='fat-tree'``.
    hosts_per_leaf : int, optional
        Hosts per fat-tree leaf; default ``max(1, 32 // nics_per_node)``.
    latency : float, optional
        Latency (us) of each fabric link (default 0.5: ~1 us NIC to NIC through a switch).
    kind : LinkKind or str, optional
        Kind of the fabric links (default InfiniBand).
    name : str, optional
        The topology's name; default ``'{node.name}x{nnodes}'``.

    Returns
    -------
    Topology

    Raises
    ------
    TopologyError
        If the node spans several hosts or has no NICs and no ``nics_per_node``, or an
        option is out of range.

    Examples
    --------
    >>> from synccl.topologies import dgx_a100
    >>> t = multinode(dgx_a100, 2)
    >>> t.nranks, t.host_of(9), t.link("h1/nic1", "rail1").bandwidth
    (16, 1, 25.0)
    """
    base = node() if callable(node) else node
    if not isinstance(base, Topology):
        raise TopologyError(f"multinode: node must be a Topology or a callable returning one, got {base!r}")
    _check_options(base, nnodes, fabric, oversubscription, hosts_per_leaf, nics_per_node, latency)
    node_nics = sorted((v for v in base.switches if base.vertex_kind(v) is VertexKind.NIC), key=natural_key)
    nic_count = _nic_count(base, node_nics, nics_per_node)
    if nic_bandwidth is not None and not _positive(nic_bandwidth):
        raise TopologyError(f"multinode: nic_bandwidth must be a number > 0, got {nic_bandwidth!r}")
    if not node_nics:
        nic_bandwidth = HDR_200G if nic_bandwidth is None else nic_bandwidth

    b = TopologyBuilder()
    host_nics: list[list[str]] = []
    for h in range(nnodes):
        ranks = _copy_node(b, base, h)
        if node_nics:
            host_nics.append([f"h{h}/{nic}" for nic in node_nics])
        else:
            groups = spread(ranks, nic_count)
            host_nics.append(add_nics(b, groups, prefix=f"h{h}/nic", nic_bandwidth=nic_bandwidth, pcie_bandwidth=pcie_bandwidth, host=h))
    rates = {nic: _port_rate(base, nic, nic_bandwidth) for nics in host_nics for nic in nics}

    if fabric == "rail":
        for i in range(nic_count):
            rail = b.add_switch(f"rail{i}")
            for nics in host_nics:
                b.add_link(nics[i], rail, bandwidth=rates[nics[i]], latency=latency, kind=kind)
    else:
        per_leaf = hosts_per_leaf or max(1, _LEAF_PORTS // nic_count)
        leaves = [host_nics[start : start + per_leaf] for start in range(0, nnodes, per_leaf)]
        if len(leaves) > 1:
            b.add_switch("spine")
        for j, hosts in enumerate(leaves):
            leaf = b.add_switch(f"leaf{j}")
            ports = [nic for nics in hosts for nic in nics]
            for nic in ports:
                b.add_link(nic, leaf, bandwidth=rates[nic], latency=latency, kind=kind)
            if len(leaves) > 1:
                uplink = sum(rates[nic] for nic in ports) / oversubscription
                lanes = math.ceil(len(ports) / oversubscription)
                b.add_link(leaf, "spine", bandwidth=uplink, latency=latency, kind=kind, lanes=lanes)

    how = "rail-only fabric" if fabric == "rail" else f"fat tree, oversubscription {oversubscription:g}"
    nics = f"{nic_count} NIC{'s' if nic_count != 1 else ''} per node"
    description = f"{nnodes}x [{base.description or base.name}], {nics}, {how}"
    return b.build(name or f"{base.name}x{nnodes}", description=description)


def _check_options(
    base: Topology,
    nnodes: int,
    fabric: str,
    oversubscription: float,
    hosts_per_leaf: int | None,
    nics_per_node: int | None,
    latency: float,
) -> None:
    if base.nhosts != 1:
        raise TopologyError(f"multinode: node {base.name!r} must span one host, it spans {base.nhosts}")
    if not isinstance(nnodes, int) or isinstance(nnodes, bool) or nnodes < 1:
        raise TopologyError(f"multinode: nnodes must be an integer >= 1, got {nnodes!r}")
    if nnodes * base.nranks > MAX_RANKS:
        raise TopologyError(f"multinode: at most {MAX_RANKS} ranks, got {nnodes} nodes of {base.nranks}")
    if fabric not in _FABRICS:
        raise TopologyError(f"multinode: fabric must be 'rail' or 'fat-tree', got {fabric!r}")
    if not _positive(oversubscription) or oversubscription < 1:
        raise TopologyError(f"multinode: oversubscription must be a number >= 1, got {oversubscription!r}")
    if fabric == "rail" and oversubscription != 1:
        raise TopologyError(f"multinode: oversubscription applies to fabric='fat-tree', got {oversubscription!r} with fabric='rail'")
    if hosts_per_leaf is not None and (not isinstance(hosts_per_leaf, int) or isinstance(hosts_per_leaf, bool) or hosts_per_leaf < 1):
        raise TopologyError(f"multinode: hosts_per_leaf must be an integer >= 1, got {hosts_per_leaf!r}")
    if nics_per_node is not None and (not isinstance(nics_per_node, int) or isinstance(nics_per_node, bool)):
        raise TopologyError(f"multinode: nics_per_node must be an integer, got {nics_per_node!r}")
    if not isinstance(latency, (int, float)) or isinstance(latency, bool) or not latency >= 0:
        raise TopologyError(f"multinode: latency must be a number >= 0, got {latency!r}")


def _nic_count(base: Topology, node_nics: list[str], nics_per_node: int | None) -> int:
    if node_nics:
        if nics_per_node is not None and nics_per_node != len(node_nics):
            raise TopologyError(f"multinode: nics_per_node={nics_per_node!r} but node {base.name!r} already has {len(node_nics)} NICs")
        return len(node_nics)
    if nics_per_node is None:
        raise TopologyError(f"multinode: node {base.name!r} has no NIC vertices; pass nics_per_node")
    if not 1 <= nics_per_node <= base.nranks:
        raise TopologyError(f"multinode: nics_per_node must be in 1..{base.nranks} (the node's ranks), got {nics_per_node!r}")
    return nics_per_node


def _copy_node(b: TopologyBuilder, base: Topology, host: int) -> list[int]:
    """Add one copy of ``base`` as host ``host``; return its ranks."""
    graph = base.graph
    offset = host * base.nranks
    reserved = {VERTEX_KIND, HOST, MEMORY_BANDWIDTH}
    for r in base.ranks:
        attrs = {k: v for k, v in graph.nodes[r].items() if k not in reserved}
        b.add_rank(host=host, memory_bandwidth=graph.nodes[r][MEMORY_BANDWIDTH], **attrs)
    for s in base.switches:
        attrs = {k: v for k, v in graph.nodes[s].items() if k not in reserved}
        b.add_switch(f"h{host}/{s}", kind=graph.nodes[s][VERTEX_KIND], host=host, **attrs)

    def rename(v: int | str) -> int | str:
        return v + offset if isinstance(v, int) else f"h{host}/{v}"

    for link in base.links():
        b.add_link(
            rename(link.src),
            rename(link.dst),
            bandwidth=link.bandwidth,
            latency=link.latency,
            kind=link.kind,
            lanes=link.lanes,
            bidirectional=False,
        )
    return list(range(offset, offset + base.nranks))


def _port_rate(base: Topology, nic: str, nic_bandwidth: float | None) -> float:
    if nic_bandwidth is not None:
        return float(nic_bandwidth)
    original = nic.split("/", 1)[1]
    rate = base.graph.nodes[original].get(NIC_BANDWIDTH)
    if not _positive(rate):
        raise TopologyError(f"multinode: NIC {original!r} of node {base.name!r} has nic_bandwidth {rate!r}; pass nic_bandwidth")
    return float(rate)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
