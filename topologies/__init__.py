"""Topologies: ranks, switches and NICs joined by links with bandwidth, latency and kind."""

from synccl.topologies._topology import (
    BANDWIDTH,
    DEFAULT_MEMORY_BANDWIDTH,
    HOST,
    KIND,
    LANES,
    LATENCY,
    MEMORY_BANDWIDTH,
    VERTEX_KIND,
    Link,
    LinkKind,
    Topology,
    TopologyBuilder,
    VertexKind,
)

__all__ = [
    "BANDWIDTH",
    "DEFAULT_MEMORY_BANDWIDTH",
    "HOST",
    "KIND",
    "LANES",
    "LATENCY",
    "MEMORY_BANDWIDTH",
    "VERTEX_KIND",
    "Link",
    "LinkKind",
    "Topology",
    "TopologyBuilder",
    "VertexKind",
]
