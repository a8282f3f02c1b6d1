"""NVIDIA machines: DGX-1 (V100), DGX-2, DGX A100, DGX H100, DGX H200, HGX H800 and Azure NDv2.

Figures come from the vendors' public documents, cited per builder. NVLink 2, 3 and 4 all
carry 25 GB/s per link per direction, so a GPU pair with ``k`` links gets ``lanes=k`` and
``25*k`` GB/s. The NVSwitch machines model their switch planes as one switch vertex
``'nvswitch'``: the planes are non-blocking and every GPU spreads its links over all of
them, so one logical switch with the GPU's total link count is exact for bandwidth.
NICs are vertices ``'nic0'``, ``'nic1'``, ... carrying their port rate in the
:data:`NIC_BANDWIDTH` attribute; :func:`synccl.topologies.multinode` joins them to a fabric.
Latencies are typical measured values (see :mod:`synccl.topologies._nodes`). The ranks of
the A100 and Hopper machines name their GPU in the :data:`~synccl.topologies.DEVICE`
attribute (``'A100'``, ``'A100-40GB'``, ``'H100'``, ``'H200'``, ``'H800'``), read by
:meth:`Topology.device`; the V100 machines (dgx1, dgx2, ndv2) leave it unset.
"""

from __future__ import annotations

from typing import Literal

from synccl.exceptions import TopologyError
from synccl.topologies._nodes import (
    EDR_100G,
    HDR_200G,
    NDR_400G,
    NVLINK_LANE,
    NVLINK_LATENCY,
    NVSWITCH_LATENCY,
    PCIE_GEN3,
    PCIE_GEN4,
    PCIE_GEN5,
    add_gpus,
    add_nics,
    add_switched,
    spread,
)
from synccl.topologies._topology import LinkKind, Topology, TopologyBuilder

__all__ = ["dgx1", "dgx2", "dgx_a100", "dgx_h100", "dgx_h200", "hgx_h800", "ndv2"]

V100_HBM = 900.0  # GB/s, NVIDIA Tesla V100 SXM2 datasheet
A100_40GB_HBM = 1555.0  # GB/s, NVIDIA A100 datasheet (A100 40GB SXM)
A100_80GB_HBM = 2039.0  # GB/s, NVIDIA A100 datasheet (A100 80GB SXM)
H100_HBM = 3350.0  # GB/s, NVIDIA H100 datasheet (H100 SXM5)
H200_HBM = 4800.0  # GB/s, NVIDIA H200 datasheet (H200 SXM, HBM3e 4.8 TB/s)
H800_HBM = 3350.0  # GB/s, NVIDIA H800 SXM5 80GB: the H100 SXM5's HBM3

# NVLink 4 links per GPU: 18 on the H100 and H200 SXM (900 GB/s bidirectional), 8 on the
# H800 SXM, whose NVLink is cut to 400 GB/s bidirectional (200 GB/s per direction).
H100_NVLINKS = 18
H800_NVLINKS = 8

# NVLink multiplicities of the DGX-1 with V100 ("hybrid cube-mesh"), as in the DGX1
# topology of msccl-tools (msccl/topologies/nvidia.py, from SCCL): (0 1 2 3) and
# (4 5 6 7) are the two CPU sockets' quads, 0-1-3-2 and 4-5-7-6 are the doubled chains,
# and 0-4 and 2-6 the doubled links between the quads. Each row sums to 6, the link
# count of a V100. `nvidia-smi topo -m` on a DGX-1 numbers the GPUs differently; the
# graph it shows is isomorphic to this one.
_DGX1_NVLINKS = (
    # 0  1  2  3  4  5  6  7
    (0, 2, 1, 1, 2, 0, 0, 0),
    (2, 0, 1, 2, 0, 1, 0, 0),
    (1, 1, 0, 2, 0, 0, 2, 0),
    (1, 2, 2, 0, 0, 0, 0, 1),
    (2, 0, 0, 0, 0, 2, 1, 1),
    (0, 1, 0, 0, 2, 0, 1, 2),
    (0, 0, 2, 0, 1, 1, 0, 2),
    (0, 0, 0, 1, 1, 2, 2, 0),
)


def dgx1(*, nics: bool = False) -> Topology:
    """NVIDIA DGX-1 with eight V100s in the NVLink hybrid cube-mesh.

    Each V100 has six NVLink 2 links of 25 GB/s per direction; four GPU pairs per quad
    and two pairs between the quads are doubled (lanes 2, 50 GB/s). Source: NVIDIA,
    "NVIDIA DGX-1 With Tesla V100 System Architecture" white paper (WP-08437-002), and
    the DGX1 link matrix of msccl-tools/SCCL. HBM2: 900 GB/s (V100 datasheet).

    Parameters
    ----------
    nics : bool, optional
        Add the DGX-1's four 100 Gb/s EDR InfiniBand NICs, each shared by a GPU pair
        (0-1, 2-3, 4-5, 6-7) over PCIe Gen3 x16. Off by default: the reference model of
        SCCL, Blink and TACCL is NVLink only.

    Returns
    -------
    Topology
        Named ``'dgx1'``.

    Examples
    --------
    >>> t = dgx1()
    >>> t.link(0, 1).lanes, t.link(0, 2).lanes, t.has_link(0, 5)
    (2, 1, False)
    """
    b = TopologyBuilder()
    gpus = add_gpus(b, 8, memory_bandwidth=V100_HBM)
    _hybrid_cube_mesh(b, gpus)
    if nics:
        add_nics(b, spread(gpus, 4), prefix="nic", nic_bandwidth=EDR_100G, pcie_bandwidth=PCIE_GEN3)
    extra = ", 4x EDR IB NICs" if nics else ""
    return b.build("dgx1", description=f"NVIDIA DGX-1 (8x V100, NVLink hybrid cube-mesh{extra}); DGX-1V white paper, SCCL DGX1 matrix")


def ndv2(*, nics: bool = True) -> Topology:
    """Azure NDv2: eight V100 32GB in the DGX-1 hybrid cube-mesh plus one EDR NIC.

    Source: Microsoft Azure documentation, "NDv2-series" (8 NVIDIA V100 SXM2 32GB
    interconnected by NVLink, one 100 Gb/s EDR InfiniBand connection per VM). The NVLink
    wiring is that of :func:`dgx1`.

    Parameters
    ----------
    nics : bool, optional
        Add the VM's one 100 Gb/s InfiniBand NIC, reached by every GPU over PCIe Gen3 x16
        (so GPU -> NIC -> GPU paths exist, as PCIe peer-to-peer does in the machine).

    Returns
    -------
    Topology
        Named ``'ndv2'``.

    Examples
    --------
    >>> t = ndv2()
    >>> t.switches, t.link(3, "nic0").kind.value
    (('nic0',), 'pcie')
    """
    b = TopologyBuilder()
    gpus = add_gpus(b, 8, memory_bandwidth=V100_HBM)
    _hybrid_cube_mesh(b, gpus)
    if nics:
        add_nics(b, [gpus], prefix="nic", nic_bandwidth=EDR_100G, pcie_bandwidth=PCIE_GEN3)
    extra = ", 1x EDR IB NIC" if nics else ""
    return b.build("ndv2", description=f"Azure NDv2 (8x V100 32GB, NVLink hybrid cube-mesh{extra}); Azure NDv2-series docs")


def dgx2(*, nics: bool = True) -> Topology:
    """NVIDIA DGX-2: sixteen V100 32GB on twelve NVSwitches.

    Each V100 sends its six NVLink 2 links to the six NVSwitches of its baseboard, and
    the two baseboards' switches are joined for a 2.4 TB/s bisection, so every GPU gets
    150 GB/s per direction to any other. Modeled as one switch vertex ``'nvswitch'`` with
    a 6-lane, 150 GB/s link per GPU. Source: NVIDIA, "NVIDIA DGX-2 System Architecture"
    white paper and DGX-2 datasheet (eight 100 Gb/s EDR InfiniBand / 100 GbE ports).

    Parameters
    ----------
    nics : bool, optional
        Add the eight 100 Gb/s NICs, each shared by a GPU pair over PCIe Gen3 x16.

    Returns
    -------
    Topology
        Named ``'dgx2'``.

    Examples
    --------
    >>> t = dgx2()
    >>> t.nranks, t.link(5, "nvswitch").bandwidth
    (16, 150.0)
    """
    b = TopologyBuilder()
    gpus = add_gpus(b, 16, memory_bandwidth=V100_HBM)
    add_switched(b, gpus, "nvswitch", lanes=6, lane_bandwidth=NVLINK_LANE, latency=NVSWITCH_LATENCY, kind=LinkKind.NVSWITCH)
    if nics:
        add_nics(b, spread(gpus, 8), prefix="nic", nic_bandwidth=EDR_100G, pcie_bandwidth=PCIE_GEN3)
    extra = ", 8x EDR IB NICs" if nics else ""
    return b.build("dgx2", description=f"NVIDIA DGX-2 (16x V100, 12 NVSwitches, 150 GB/s per GPU{extra}); DGX-2 white paper")


def dgx_a100(*, nics: bool = True, memory: Literal["40gb", "80gb"] = "40gb") -> Topology:
    """NVIDIA DGX A100: eight A100s on six NVSwitches, eight HDR NICs.

    Each A100 has twelve NVLink 3 links (25 GB/s per direction each, 300 GB/s in all),
    two to each of the six NVSwitches. The eight compute-fabric NICs are single-port
    ConnectX-6 HDR 200 Gb/s (25 GB/s); NIC ``i`` sits behind the same PCIe Gen4 switch
    as GPU ``i``. Source: NVIDIA, "NVIDIA DGX A100 System Architecture" white paper
    (WP-10083-001) and A100 datasheet (HBM2 1555 GB/s for 40GB, HBM2e 2039 GB/s for 80GB).

    Parameters
    ----------
    nics : bool, optional
        Add the eight compute NICs (``'nic0'`` .. ``'nic7'``), NIC ``i`` linked to GPU ``i``.
    memory : {'40gb', '80gb'}, optional
        The A100 variant, which sets each rank's memory bandwidth and device
        (``'A100-40GB'`` or ``'A100'``, the 80GB part).

    Returns
    -------
    Topology
        Named ``'dgx-a100'``.

    Raises
    ------
    TopologyError
        If ``memory`` is not ``'40gb'`` or ``'80gb'``.

    Examples
    --------
    >>> t = dgx_a100()
    >>> t.link(0, "nvswitch").bandwidth, t.link(0, "nic0").bandwidth
    (300.0, 31.5)
    """
    hbm = {"40gb": A100_40GB_HBM, "80gb": A100_80GB_HBM}
    if memory not in hbm:
        raise TopologyError(f"dgx_a100: memory must be '40gb' or '80gb', got {memory!r}")
    b = TopologyBuilder()
    gpus = add_gpus(b, 8, memory_bandwidth=hbm[memory], device="A100" if memory == "80gb" else "A100-40GB")
    add_switched(b, gpus, "nvswitch", lanes=12, lane_bandwidth=NVLINK_LANE, latency=NVSWITCH_LATENCY, kind=LinkKind.NVSWITCH)
    if nics:
        add_nics(b, [[g] for g in gpus], prefix="nic", nic_bandwidth=HDR_200G, pcie_bandwidth=PCIE_GEN4)
    extra = ", 8x HDR 200G NICs" if nics else ""
    return b.build("dgx-a100", description=f"NVIDIA DGX A100 (8x A100 {memory}, 6 NVSwitches{extra}); DGX A100 white paper")


def dgx_h100(*, nics: bool = True) -> Topology:
    """NVIDIA DGX H100: eight H100 SXM5 on four NVSwitches, eight NDR NICs.

    Each H100 has eighteen NVLink 4 links (25 GB/s per direction each, 450 GB/s in all,
    900 GB/s bidirectional) spread over the four NVSwitches. The eight compute NICs are
    ConnectX-7 400 Gb/s (50 GB/s), NIC ``i`` next to GPU ``i`` on PCIe Gen5. Source:
    NVIDIA, "NVIDIA H100 Tensor Core GPU Architecture" white paper and DGX H100 user
    guide / datasheet (HBM3 3.35 TB/s per GPU).

    Parameters
    ----------
    nics : bool, optional
        Add the eight compute NICs, NIC ``i`` linked to GPU ``i``.

    Returns
    -------
    Topology
        Named ``'dgx-h100'``.

    Examples
    --------
    >>> t = dgx_h100()
    >>> t.link(7, "nvswitch").lanes, t.memory_bandwidth(0), t.device(0)
    (18, 3350.0, 'H100')
    """
    return _hopper_node(
        "dgx-h100",
        "H100",
        hbm=H100_HBM,
        nvlinks=H100_NVLINKS,
        nics=nics,
        title="NVIDIA DGX H100",
        parts="8x H100 SXM5, 4 NVSwitches",
        source="H100 white paper",
    )


def dgx_h200(*, nics: bool = True) -> Topology:
    """NVIDIA DGX H200: eight H200 SXM on four NVSwitches, eight NDR NICs.

    The DGX H100's fabric with the H200 GPU: eighteen NVLink 4 links per GPU (25 GB/s per
    direction each, 450 GB/s in all, 900 GB/s bidirectional) over four NVSwitches, and
    eight ConnectX-7 400 Gb/s NICs, NIC ``i`` next to GPU ``i`` on PCIe Gen5. The H200 is
    the H100's Hopper chip with 141 GB of HBM3e at 4.8 TB/s. Source: NVIDIA H200 Tensor
    Core GPU datasheet (NVLink 900 GB/s, HBM3e 4.8 TB/s) and DGX H200 datasheet.

    Parameters
    ----------
    nics : bool, optional
        Add the eight compute NICs, NIC ``i`` linked to GPU ``i``.

    Returns
    -------
    Topology
        Named ``'dgx-h200'``.

    Examples
    --------
    >>> t = dgx_h200()
    >>> t.link(0, "nvswitch").bandwidth, t.memory_bandwidth(0), t.device(0)
    (450.0, 4800.0, 'H200')
    """
    return _hopper_node(
        "dgx-h200",
        "H200",
        hbm=H200_HBM,
        nvlinks=H100_NVLINKS,
        nics=nics,
        title="NVIDIA DGX H200",
        parts="8x H200 SXM, 4 NVSwitches",
        source="H200 datasheet",
    )


def hgx_h800(*, nics: bool = True) -> Topology:
    """An HGX H800 server: eight H800 SXM5 on NVSwitch, eight NDR NICs.

    The H800 is the H100 SXM5 (same compute, 80 GB HBM3 at 3.35 TB/s) with its NVLink cut
    to 400 GB/s bidirectional: modeled as eight NVLink 4 links of 25 GB/s per direction
    (200 GB/s per direction) to the NVSwitch fabric; the total is NVIDIA's, the split into
    eight links an assumption that only ``lanes`` shows. Eight 400 Gb/s NICs, NIC ``i``
    next to GPU ``i`` on PCIe Gen5, as in the H800 cluster of the DeepSeek-V3 report
    (InfiniBand 50 GB/s per GPU). Sources: NVIDIA H800 SXM5 specifications (NVLink
    400 GB/s); DeepSeek-V3 technical report (arXiv:2412.19437), sections 3.1-3.2.

    Parameters
    ----------
    nics : bool, optional
        Add the eight compute NICs, NIC ``i`` linked to GPU ``i``.

    Returns
    -------
    Topology
        Named ``'hgx-h800'``.

    Examples
    --------
    >>> t = hgx_h800()
    >>> t.link(0, "nvswitch").bandwidth, t.link(0, "nvswitch").lanes, t.device(0)
    (200.0, 8, 'H800')
    """
    return _hopper_node(
        "hgx-h800",
        "H800",
        hbm=H800_HBM,
        nvlinks=H800_NVLINKS,
        nics=nics,
        title="HGX H800",
        parts="8x H800 SXM5, NVSwitch, NVLink 400 GB/s",
        source="H800 SXM5 specifications",
    )


def _hopper_node(name: str, device: str, *, hbm: float, nvlinks: int, nics: bool, title: str, parts: str, source: str) -> Topology:
    """Eight Hopper GPUs on one NVSwitch vertex with ``nvlinks`` links each, and eight NDR NICs."""
    b = TopologyBuilder()
    gpus = add_gpus(b, 8, memory_bandwidth=hbm, device=device)
    add_switched(b, gpus, "nvswitch", lanes=nvlinks, lane_bandwidth=NVLINK_LANE, latency=NVSWITCH_LATENCY, kind=LinkKind.NVSWITCH)
    if nics:
        add_nics(b, [[g] for g in gpus], prefix="nic", nic_bandwidth=NDR_400G, pcie_bandwidth=PCIE_GEN5)
    extra = ", 8x ConnectX-7 400G NICs" if nics else ""
    return b.build(name, description=f"{title} ({parts}{extra}); {source}")


def _hybrid_cube_mesh(b: TopologyBuilder, gpus: list[int]) -> None:
    for i, row in enumerate(_DGX1_NVLINKS):
        for j, lanes in enumerate(row):
            if lanes:
                b.add_link(
                    gpus[i],
                    gpus[j],
                    bandwidth=lanes * NVLINK_LANE,
                    latency=NVLINK_LATENCY,
                    kind=LinkKind.NVLINK,
                    lanes=lanes,
                    bidirectional=False,
                )
