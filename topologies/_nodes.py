"""Building blocks shared by the vendor machines and the multi-node builder.

Rates are GB/s in one direction; latencies are microseconds per link. The latencies are
typical measured small-message figures (order of magnitude), not vendor specifications:
a direct NVLink or xGMI hop about 0.7-1 us, a PCIe hop about 1 us, an InfiniBand path
about 1 us end to end (NIC to switch to NIC), split over its two hops.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from synccl.topologies._topology import DEVICE, LinkKind, TopologyBuilder, VertexKind

#: NIC vertex attribute: bandwidth (GB/s, one direction) of the NIC's network port.
NIC_BANDWIDTH = "nic_bandwidth"

NVLINK_LANE = 25.0  # NVLink 2, 3 and 4 all carry 25 GB/s per link per direction
NVLINK_LATENCY = 0.7
NVSWITCH_LATENCY = 0.5  # one GPU <-> NVSwitch hop; GPU -> GPU through the switch is ~1 us
XGMI_LATENCY = 1.0
PCIE_LATENCY = 1.0
NETWORK_LATENCY = 0.5  # one NIC <-> switch hop

# PCIe x16, one direction, after 128b/130b encoding.
PCIE_GEN3 = 15.75
PCIE_GEN4 = 31.5
PCIE_GEN5 = 63.0

# Network port rates, one direction: 100, 200 and 400 Gb/s.
EDR_100G = 12.5
HDR_200G = 25.0
NDR_400G = 50.0


def add_gpus(builder: TopologyBuilder, count: int, *, memory_bandwidth: float, device: str | None = None) -> list[int]:
    """Add ``count`` ranks with the given HBM bandwidth (and device type, if given) and return their ids."""
    attrs = {} if device is None else {DEVICE: device}
    return [builder.add_rank(memory_bandwidth=memory_bandwidth, **attrs) for _ in range(count)]


def add_switched(
    builder: TopologyBuilder,
    ranks: Sequence[int],
    name: str,
    *,
    lanes: int,
    lane_bandwidth: float,
    latency: float,
    kind: LinkKind,
) -> str:
    """Join ``ranks`` through one switch vertex, each with ``lanes`` links of ``lane_bandwidth``."""
    builder.add_switch(name)
    for r in ranks:
        builder.add_link(r, name, bandwidth=lanes * lane_bandwidth, latency=latency, kind=kind, lanes=lanes)
    return name


def add_nics(
    builder: TopologyBuilder,
    groups: Sequence[Sequence[int]],
    *,
    prefix: str,
    nic_bandwidth: float,
    pcie_bandwidth: float,
    host: int | None = None,
) -> list[str]:
    """Add one NIC per group of ranks, named ``{prefix}{i}``, joined to each rank of its group over PCIe."""
    names = []
    for i, group in enumerate(groups):
        nic = builder.add_switch(f"{prefix}{i}", kind=VertexKind.NIC, host=host, **{NIC_BANDWIDTH: float(nic_bandwidth)})
        for r in group:
            builder.add_link(r, nic, bandwidth=pcie_bandwidth, latency=PCIE_LATENCY, kind=LinkKind.PCIE)
        names.append(nic)
    return names


def spread(ranks: Sequence[int], count: int) -> list[list[int]]:
    """Split ``ranks`` into ``count`` consecutive groups of (nearly) equal size."""
    return [[r for i, r in enumerate(ranks) if i * count // len(ranks) == g] for g in range(count)]


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that orders ``'nic2'`` before ``'nic10'``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))
