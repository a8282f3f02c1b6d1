"""parse_nvidia_smi_topo on published outputs (see data/README.md) and on broken input."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest

from synccl.exceptions import TopologyError
from synccl.topologies import (
    CPU_AFFINITY,
    GPU_NUMA_ID,
    NUMA_NODE,
    LinkKind,
    VertexKind,
    dgx1,
    multinode,
    parse_nvidia_smi_topo,
)

DATA = Path(__file__).parent / "data"


def _parse(name, **options):
    return parse_nvidia_smi_topo((DATA / name).read_text(), name=name, **options)


def _neighbours(topo, vertex):
    return sorted(str(link.dst) for link in topo.out_links(vertex))


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.txt")))
def test_every_fixture_parses_to_a_connected_topology(name):
    topo = _parse(name)
    assert topo.nranks == 8
    assert topo.is_connected()


def test_dgx1_nvlinks_are_the_hybrid_cube_mesh():
    topo = _parse("dgx1_v100_4nic.txt", pcie=False)
    assert sum(link.lanes for link in topo.out_links(0)) == 6
    assert topo.link(0, 3).lanes == 2 and topo.link(0, 3).bandwidth == 50.0
    assert topo.link(0, 1).lanes == 1 and not topo.has_link(0, 5)
    nvlink = topo.graph.subgraph(topo.ranks)
    same_lanes = nx.isomorphism.DiGraphMatcher(nvlink, dgx1().graph, edge_match=lambda a, b: a["lanes"] == b["lanes"])
    assert same_lanes.is_isomorphic()


def test_dgx1_pcie_tree_has_a_switch_per_gpu_pair_and_nic():
    topo = _parse("dgx1_v100_4nic.txt")
    nics = [v for v in topo.switches if topo.vertex_kind(v) is VertexKind.NIC]
    assert nics == ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"]
    assert _neighbours(topo, "mlx5_0") == ["pcie0"]
    assert _neighbours(topo, "pcie0") == ["0", "1", "cpu0", "mlx5_0"]
    assert _neighbours(topo, "pcie2") == ["4", "5", "cpu1", "mlx5_2"]
    assert _neighbours(topo, "cpu0") == ["cpu1", "pcie0", "pcie1"]
    assert topo.link("cpu0", "cpu1").kind is LinkKind.PCIE
    assert topo.graph.nodes[7][CPU_AFFINITY] == "0-19,40-59"


def test_numa_affinity_groups_gpus_under_cpus():
    topo = _parse("dgx1_v100_numa.txt")
    assert [topo.graph.nodes[r][NUMA_NODE] for r in topo.ranks] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert GPU_NUMA_ID not in topo.graph.nodes[0]
    assert _neighbours(topo, "cpu0") == ["0", "1", "2", "3", "cpu1"]
    assert topo.graph.nodes[5][CPU_AFFINITY] == "20-39,60-79"


def test_a100_nv12_goes_through_nvswitch_and_nics_take_legend_names():
    topo = _parse("a100_nv12_18nic.txt")
    for r in topo.ranks:
        link = topo.link(r, "nvswitch")
        assert (link.lanes, link.bandwidth, link.kind) == (12, 300.0, LinkKind.NVSWITCH)
        assert not any(topo.has_link(r, other) for other in topo.ranks)
    nics = [v for v in topo.switches if topo.vertex_kind(v) is VertexKind.NIC]
    assert len(nics) == 18 and "mlx5_17" in nics and "NIC17" not in topo.switches
    assert [topo.graph.nodes[r][NUMA_NODE] for r in topo.ranks] == [3, 3, 1, 1, 7, 7, 5, 5]
    group = next(v for v in topo.switches if v.startswith("pcie") and "0" in _neighbours(topo, v))
    assert _neighbours(topo, group)[:2] == ["0", "1"] and {"mlx5_5", "mlx5_8"} <= set(_neighbours(topo, group))


def test_nvswitch_detection_can_be_overridden():
    topo = _parse("a100_nv12_18nic.txt", nvswitch=False, pcie=False)
    assert "nvswitch" not in topo.switches
    assert topo.link(2, 6).lanes == 12


def test_pcie_only_box_pairs_gpus_on_switches():
    topo = _parse("pcie_8gpu_phb.txt", pcie_bandwidth=15.75)
    assert not [link for link in topo.links() if link.kind in (LinkKind.NVLINK, LinkKind.NVSWITCH)]
    assert _neighbours(topo, "pcie0") == ["0", "1", "cpu0"]
    assert _neighbours(topo, "pcie3") == ["6", "7", "cpu1"]
    assert "NIC0" in _neighbours(topo, "cpu0")
    assert topo.link(0, "pcie0").bandwidth == 15.75


def test_tab_separated_output_with_all_sys_pairs():
    topo = _parse("rtx4090_pcie_tabs.txt")
    assert _neighbours(topo, "pcie0") == ["NIC0", "NIC1", "cpu1"]
    assert _neighbours(topo, "cpu0") == ["0", "1", "2", "3", "cpu1"]
    assert topo.graph.nodes[6][NUMA_NODE] == 1


def test_parsed_node_can_be_replicated_with_an_explicit_nic_rate():
    node = _parse("dgx1_v100_4nic.txt")
    with pytest.raises(TopologyError, match="has nic_bandwidth None; pass nic_bandwidth"):
        multinode(node, 2)
    assert multinode(node, 2, nic_bandwidth=12.5).is_connected()


def test_terminal_escape_codes_and_options():
    text = "\x1b[4m\x1b[1m\tGPU0\tGPU1\tCPU Affinity\x1b[0m\nGPU0\t X \tNV2\t0-7\nGPU1\tNV2\t X \t0-7\n"
    topo = parse_nvidia_smi_topo(text, nvlink_bandwidth=20.0, memory_bandwidth=732.0, name="p100-pair")
    assert topo.name == "p100-pair"
    assert topo.link(1, 0).bandwidth == 40.0
    assert topo.memory_bandwidth(0) == 732.0
    assert topo.switches == ()


_GOOD = """\
        GPU0    GPU1    NIC0    CPU Affinity
GPU0     X      NV1     PIX     0-7
GPU1    NV1      X      PIX     0-7
NIC0    PIX     PIX      X
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no header line starting with 'GPU0' found"),
        ("Failed to initialize NVML: Driver/library version mismatch\n", "no header line starting with 'GPU0' found"),
        (_GOOD.replace("GPU1    NV1      X", "GPU1    NVX      X"), "line 3: row 'GPU1', column 'GPU0': unknown entry 'NVX'"),
        (
            _GOOD.replace("GPU0     X      NV1     PIX", "GPU0     X"),
            "line 2: row 'GPU0' has 2 values, expected 3 matrix entries plus 1 (CPU Affinity)",
        ),
        (_GOOD.replace("GPU0     X      NV1     PIX", "GPU0     X      NV1"), "line 2: row 'GPU0', column 'NIC0': unknown entry '0-7'"),
        (_GOOD.replace("GPU0     X ", "GPU0    PIX"), "line 2: row 'GPU0', column 'GPU0': expected 'X' on the diagonal, got 'PIX'"),
        (
            _GOOD.replace("GPU1    NV1      X", "GPU1    NV2      X"),
            "line 3: row 'GPU1', column 'GPU0' is 'NV2' but line 2: row 'GPU0', column 'GPU1' is 'NV1'",
        ),
        (_GOOD.replace("NIC0    PIX     PIX      X\n", ""), "line 4: expected the row of 'NIC0', got 'a blank line or the end of input'"),
        (_GOOD.replace("GPU1    NV1", "GPU7    NV1"), "line 3: expected the row of 'GPU1', got 'GPU7'"),
        (_GOOD.replace("GPU1", "GPU2"), "GPU columns must be GPU0..GPU1, got ['GPU0', 'GPU2']"),
        (
            _GOOD.replace("PIX     PIX      X", "NV1     PIX      X").replace("GPU0     X      NV1     PIX", "GPU0     X      NV1     NV1"),
            "row 'GPU0', column 'NIC0': NVLink 'NV1' to a device that is not a GPU",
        ),
        (_GOOD.replace("CPU Affinity", "CPU Affinity  Bogus"), "line 1: unexpected header token 'Bogus' after 'CPU Affinity'"),
        (_GOOD.replace("NIC0    CPU", "GPU1    CPU"), "line 1: column 'GPU1' appears twice"),
    ],
)
def test_malformed_input_names_line_and_token(text, message):
    with pytest.raises(TopologyError) as info:
        parse_nvidia_smi_topo(text)
    assert str(info.value).startswith("parse_nvidia_smi_topo: ")
    assert message in str(info.value)


def test_the_good_sample_parses():
    topo = parse_nvidia_smi_topo(_GOOD)
    assert topo.link(0, 1).kind is LinkKind.NVLINK
    assert _neighbours(topo, "pcie0") == ["0", "1", "NIC0", "cpu0"]
