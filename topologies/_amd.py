"""AMD machines: a four-MI250 node (eight GCDs) and an eight-MI300X platform.

Figures come from AMD's and its customers' public documents, cited per builder. Links
are xGMI (AMD Infinity Fabric); latencies are typical measured values (see
:mod:`synccl.topologies._nodes`). Every rank names its device in the
:data:`~synccl.topologies.DEVICE` attribute: ``'MI250'`` (one GCD, half a package) or
``'MI300X'``.
"""

from __future__ import annotations

import itertools

from synccl.topologies._nodes import (
    HDR_200G,
    NDR_400G,
    PCIE_GEN4,
    PCIE_GEN5,
    XGMI_LATENCY,
    add_gpus,
    add_nics,
    spread,
)
from synccl.topologies._topology import LinkKind, Topology, TopologyBuilder

__all__ = ["mi250", "mi300x"]

MI250_GCD_HBM = 1600.0  # GB/s: 3.2 TB/s HBM2e per MI250/MI250X package, two GCDs
MI300X_HBM = 5300.0  # GB/s: 5.3 TB/s HBM3, AMD Instinct MI300X data sheet

# One MI250 Infinity Fabric link: 16 bits wide at 25 GT/s = 50 GB/s per direction
# (AMD ROCm documentation, "AMD Instinct MI250 microarchitecture").
_MI250_LINK = 50.0
# xGMI link counts between GCDs of a 4x MI250 node, read off `rocm-smi --shownodesbw`
# (maximum 200000 / 100000 / 50000 MB/s = 4 / 2 / 1 links) as published in Hugging Face's
# optimum-amd documentation, "AMD Instinct GPU connectivity"; consistent with the OLCF
# Frontier user guide: 200 GB/s between the two GCDs of a package, 50-100 GB/s between
# GCDs of different packages.
_MI250_XGMI = {
    (0, 1): 4,
    (2, 3): 4,
    (4, 5): 4,
    (6, 7): 4,
    (0, 2): 1,
    (0, 6): 2,
    (1, 3): 1,
    (1, 5): 1,
    (2, 4): 2,
    (3, 7): 1,
    (4, 6): 1,
    (5, 7): 1,
}

# One MI300X Infinity Fabric link: 128 GB/s bidirectional = 64 GB/s per direction; seven
# links per GPU, 896 GB/s aggregate (AMD Instinct MI300X data sheet).
_MI300X_LINK = 64.0


def mi250(*, nics: bool = True) -> Topology:
    """A node of four AMD Instinct MI250(X) packages: eight GCDs as eight ranks.

    GCDs ``2p`` and ``2p+1`` share package ``p`` and are joined by four xGMI links
    (200 GB/s per direction); GCDs of different packages by one or two links (50 or
    100 GB/s), wired as ``rocm-smi --shownodesbw`` reports on a 4x MI250 machine.
    Sources: AMD CDNA 2 white paper and ROCm "MI250 microarchitecture" page (50 GB/s per
    link per direction); OLCF Frontier user guide; Hugging Face optimum-amd "AMD Instinct
    GPU connectivity" (the link table). Memory: 1.6 TB/s per GCD (3.2 TB/s per package).

    Parameters
    ----------
    nics : bool, optional
        Add four 200 Gb/s NICs, one per package shared by its two GCDs over PCIe Gen4, as
        on OLCF Frontier (four HPE Slingshot 200 Gb/s NICs per node).

    Returns
    -------
    Topology
        Named ``'mi250'``.

    Examples
    --------
    >>> t = mi250()
    >>> t.link(0, 1).bandwidth, t.link(0, 6).bandwidth, t.has_link(0, 3)
    (200.0, 100.0, False)
    """
    b = TopologyBuilder()
    gcds = add_gpus(b, 8, memory_bandwidth=MI250_GCD_HBM, device="MI250")
    for (u, v), lanes in _MI250_XGMI.items():
        b.add_link(gcds[u], gcds[v], bandwidth=lanes * _MI250_LINK, latency=XGMI_LATENCY, kind=LinkKind.XGMI, lanes=lanes)
    if nics:
        add_nics(b, spread(gcds, 4), prefix="nic", nic_bandwidth=HDR_200G, pcie_bandwidth=PCIE_GEN4)
    extra = ", 4x 200G NICs" if nics else ""
    return b.build(
        "mi250", description=f"AMD 4x MI250 node (8 GCDs, xGMI 50 GB/s per link{extra}); CDNA 2 white paper, OLCF Frontier guide"
    )


def mi300x(*, nics: bool = True) -> Topology:
    """Eight AMD Instinct MI300X, fully connected by xGMI.

    Every GPU has seven Infinity Fabric links, one to each other GPU, of 64 GB/s per
    direction (128 GB/s bidirectional, 896 GB/s aggregate per GPU). Source: AMD
    Instinct MI300X data sheet and AMD CDNA 3 white paper (HBM3 5.3 TB/s).

    Parameters
    ----------
    nics : bool, optional
        Add eight 400 Gb/s NICs, NIC ``i`` next to GPU ``i`` on PCIe Gen5, as in MI300X
        cloud platforms such as Azure ND MI300X v5 (eight 400 Gb/s InfiniBand NICs).

    Returns
    -------
    Topology
        Named ``'mi300x'``.

    Examples
    --------
    >>> t = mi300x()
    >>> t.link(2, 5).bandwidth, sum(1 for link in t.out_links(0) if link.kind.value == "xgmi"), t.device(0)
    (64.0, 7, 'MI300X')
    """
    b = TopologyBuilder()
    gpus = add_gpus(b, 8, memory_bandwidth=MI300X_HBM, device="MI300X")
    for u, v in itertools.combinations(gpus, 2):
        b.add_link(u, v, bandwidth=_MI300X_LINK, latency=XGMI_LATENCY, kind=LinkKind.XGMI)
    if nics:
        add_nics(b, [[g] for g in gpus], prefix="nic", nic_bandwidth=NDR_400G, pcie_bandwidth=PCIE_GEN5)
    extra = ", 8x 400G NICs" if nics else ""
    return b.build("mi300x", description=f"AMD 8x MI300X (xGMI full mesh, 64 GB/s per link per direction{extra}); MI300X data sheet")
