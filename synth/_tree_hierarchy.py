"""Hierarchical tree packing for multi-host fabrics: one host's optimal packing behind rail-aligned stars.

Hosts hold ``k`` ranks each, numbered host-major (``synccl.topologies.multinode``). The tree of
root ``(a, g)`` (host ``a``, local index ``g``) is

* an inter-host star on rail ``g``: ``(a, g) -> (b, g)`` for every other host ``b``;
* in every host ``b``, a tree of the flat packing of one host rooted at local rank ``g``.

The host-level packing is the exact LP of :mod:`synccl.synth._tree_lp` on host 0 (rooted at
every local rank), split into whole chunks; each root's chunks follow that split in every host.
On rail-only fabrics (``multinode(..., fabric='rail')``, as ``dgx-a100:N`` builds them) every
network link then carries ``hosts - 1`` units per direction, which is what the cut around one
host demands, so the stars cost nothing over the optimum as long as the hosts' internal links
are not the bottleneck. Nothing here assumes that: the
result's time is computed exactly from its loads on the real topology and certified against
the cut bound like any other packing. In-trees are the same trees with edges reversed.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

from synccl.exceptions import TopologyError
from synccl.synth._routes import LogicalNetwork, logical_network
from synccl.synth._tree_lp import Direction
from synccl.synth._trees import Tree, TreePhase, flat_phase, phase_time
from synccl.topologies import Topology

__all__ = ["hierarchical_phase", "host_layout"]

logger = logging.getLogger(__name__)


def host_layout(topology: Topology) -> tuple[int, int]:
    """``(hosts, ranks_per_host)`` of a host-major multi-host topology; raises TopologyError otherwise.

    >>> from synccl.topologies import get_topology
    >>> host_layout(get_topology("dgx-a100:4"))
    (4, 8)
    """
    hosts = sorted({topology.host_of(r) for r in topology.ranks}, key=lambda h: (h is None, h))
    if len(hosts) < 2 or None in hosts:
        raise TopologyError(f"hierarchical tree packing: topology {topology.name!r} does not span several hosts")
    k = topology.nranks // len(hosts)
    for position, host in enumerate(hosts):
        expected = tuple(range(position * k, (position + 1) * k))
        if topology.ranks_on_host(host) != expected:
            raise TopologyError(
                f"hierarchical tree packing: host {host!r} of {topology.name!r} holds ranks {topology.ranks_on_host(host)!r}, expected {expected!r} (equal hosts, host-major)"
            )
    return len(hosts), k


def hierarchical_phase(topology: Topology, direction: Direction, *, deadline: float | None, max_chunks: int) -> TreePhase:
    """Out-trees or in-trees for every rank of ``topology`` (module docstring), timed exactly."""
    nhosts, k = host_layout(topology)
    local = flat_phase(logical_network(topology.subset(range(k))), list(range(k)), direction, deadline=deadline, max_chunks=max_chunks)
    net = _network(topology, nhosts, k)
    trees = tuple(_global_trees(local.trees, nhosts, k))
    exact = phase_time(net, direction, trees, local.chunks_per_root)
    logger.info("hierarchical %s-trees on %r: %d trees, %d chunks per root", direction, topology.name, len(trees), local.chunks_per_root)
    return TreePhase(direction, trees, local.chunks_per_root, exact, local.lp_time_per_unit, local.lp_optimal)


@lru_cache(maxsize=2)
def _network(topology: Topology, nhosts: int, k: int) -> LogicalNetwork:
    """The logical edges the trees use (within hosts, along rails), shared by both phases of all_reduce."""
    pairs = [(b * k + i, b * k + j) for b in range(nhosts) for i in range(k) for j in range(k) if i != j]
    pairs += [(a * k + g, b * k + g) for g in range(k) for a in range(nhosts) for b in range(nhosts) if a != b]
    net = logical_network(topology, pairs=pairs)
    missing = next((p for p in pairs if p not in net.edges), None)
    if missing is not None:
        raise TopologyError(
            f"hierarchical tree packing: ranks {missing[0]} -> {missing[1]} of {topology.name!r} are not joined through switches only; use method='flat'"
        )
    return net


def _global_trees(local_trees: tuple[Tree, ...], nhosts: int, k: int) -> list[Tree]:
    """Every host's copy of each local tree, joined by the star of its root's rail."""
    offsets = np.arange(nhosts)[:, None] * k
    trees = []
    for local in local_trees:
        g = local.root
        template = np.array([-1 if p is None else p for p in local.parent])
        for a in range(nhosts):
            parent = offsets + template[None, :]  # every host's copy of the local tree
            parent[:, g] = a * k + g  # ... hung under the root's rail star
            parent[a, g] = -1
            trees.append(Tree(a * k + g, tuple(None if p < 0 else p for p in parent.ravel().tolist()), local.chunks))
    return trees
