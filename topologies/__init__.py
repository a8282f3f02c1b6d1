"""Topologies: ranks, switches and NICs joined by links with bandwidth, latency and kind.

Build one with :class:`TopologyBuilder`, take one from the catalog (:func:`get_topology`,
:func:`list_topologies`), load one from JSON (:func:`load_topology`), parse
``nvidia-smi topo -m`` (:func:`parse_nvidia_smi_topo`), or replicate a node over a
network (:func:`multinode`).
"""

from synccl.topologies._amd import mi250, mi300x
from synccl.topologies._catalog import TopologyInfo, get_topology, list_topologies
from synccl.topologies._draw import draw_topology
from synccl.topologies._generic import MAX_RANKS, fully_connected, hypercube, line, mesh2d, ring, star, torus2d, torus3d
from synccl.topologies._host import HostInfo, detect_host, host_topology, measure_memcpy_bandwidth
from synccl.topologies._json import FORMAT, VERSION, from_dict, load_topology, save_topology, to_dict
from synccl.topologies._multinode import multinode
from synccl.topologies._nodes import NIC_BANDWIDTH
from synccl.topologies._nvidia import dgx1, dgx2, dgx_a100, dgx_h100, dgx_h200, hgx_h800, ndv2
from synccl.topologies._nvidia_smi import CPU_AFFINITY, GPU_NUMA_ID, NUMA_NODE, parse_nvidia_smi_topo
from synccl.topologies._topology import (
    BANDWIDTH,
    DEFAULT_MEMORY_BANDWIDTH,
    DEVICE,
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
    # core
    "BANDWIDTH",
    "DEFAULT_MEMORY_BANDWIDTH",
    "DEVICE",
    "HOST",
    "KIND",
    "LANES",
    "LATENCY",
    "MEMORY_BANDWIDTH",
    "VERTEX_KIND",
    "NIC_BANDWIDTH",
    "CPU_AFFINITY",
    "NUMA_NODE",
    "GPU_NUMA_ID",
    "Link",
    "LinkKind",
    "Topology",
    "TopologyBuilder",
    "VertexKind",
    # catalog
    "TopologyInfo",
    "get_topology",
    "list_topologies",
    # generic families
    "MAX_RANKS",
    "ring",
    "line",
    "fully_connected",
    "star",
    "torus2d",
    "torus3d",
    "mesh2d",
    "hypercube",
    # machines
    "dgx1",
    "dgx2",
    "dgx_a100",
    "dgx_h100",
    "dgx_h200",
    "hgx_h800",
    "ndv2",
    "mi250",
    "mi300x",
    "multinode",
    # this host
    "HostInfo",
    "detect_host",
    "host_topology",
    "measure_memcpy_bandwidth",
    # files and tools
    "FORMAT",
    "VERSION",
    "to_dict",
    "from_dict",
    "save_topology",
    "load_topology",
    "parse_nvidia_smi_topo",
    "draw_topology",
]
