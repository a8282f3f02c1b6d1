"""Vendor machines: the published link counts, rates and memory bandwidths."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest

from synccl.exceptions import TopologyError
from synccl.topologies import (
    NIC_BANDWIDTH,
    LinkKind,
    VertexKind,
    dgx1,
    dgx2,
    dgx_a100,
    dgx_h100,
    mi250,
    mi300x,
    ndv2,
)


def _lanes_between_ranks(topo):
    return {(link.src, link.dst): link.lanes for link in topo.links() if isinstance(link.src, int) and isinstance(link.dst, int)}


def test_dgx1_matches_the_sccl_link_matrix():
    lanes = _lanes_between_ranks(dgx1())
    doubled = {tuple(sorted(pair)) for pair, n in lanes.items() if n == 2}
    assert doubled == {(0, 1), (0, 4), (1, 3), (2, 3), (2, 6), (4, 5), (5, 7), (6, 7)}
    assert all(lanes[v, u] == n for (u, v), n in lanes.items())
    assert len(lanes) == 2 * 16  # 16 GPU pairs are linked, 12 are not
    assert not dgx1().switches


def test_dgx1_doubled_links_form_one_hamiltonian_cycle():
    doubled = nx.Graph([pair for pair, n in _lanes_between_ranks(dgx1()).items() if n == 2])
    assert all(d == 2 for _, d in doubled.degree())
    assert nx.is_connected(doubled)


def test_dgx1_nics_are_shared_by_gpu_pairs():
    topo = dgx1(nics=True)
    assert [sorted(link.dst for link in topo.out_links(f"nic{i}")) for i in range(4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert topo.graph.nodes["nic0"][NIC_BANDWIDTH] == 12.5


def test_blink_sub_allocation_of_a_dgx1_is_connected():
    """Blink's example: a job given GPUs {0, 1, 4, 5, 6} of a DGX-1."""
    sub = dgx1().subset([0, 1, 4, 5, 6])
    assert sub.nranks == 5
    assert sub.is_connected()
    assert [sub.graph.nodes[r]["physical_rank"] for r in sub.ranks] == [0, 1, 4, 5, 6]
    assert sub.link(0, 2).lanes == 2  # physical 0 -> 4


def test_ndv2_is_a_dgx1_plus_one_nic():
    topo = ndv2()
    assert _lanes_between_ranks(topo) == _lanes_between_ranks(dgx1())
    assert topo.switches == ("nic0",)
    assert sorted(link.dst for link in topo.out_links("nic0")) == list(range(8))
    assert topo.graph.nodes["nic0"][NIC_BANDWIDTH] == 12.5


@pytest.mark.parametrize(
    ("builder", "nranks", "lanes", "memory"),
    [(dgx2, 16, 6, 900.0), (dgx_a100, 8, 12, 1555.0), (dgx_h100, 8, 18, 3350.0)],
)
def test_nvswitch_machines(builder, nranks, lanes, memory):
    topo = builder()
    assert topo.nranks == nranks
    for r in topo.ranks:
        up, down = topo.link(r, "nvswitch"), topo.link("nvswitch", r)
        assert (up.bandwidth, up.kind, up.lanes) == (25.0 * lanes, LinkKind.NVSWITCH, lanes)
        assert (down.bandwidth, down.lanes) == (up.bandwidth, up.lanes)
        assert topo.memory_bandwidth(r) == memory


@pytest.mark.parametrize(("builder", "rate", "pcie"), [(dgx_a100, 25.0, 31.5), (dgx_h100, 50.0, 63.0)])
def test_dgx_nic_i_sits_next_to_gpu_i(builder, rate, pcie):
    topo = builder()
    nics = [v for v in topo.switches if topo.vertex_kind(v) is VertexKind.NIC]
    assert nics == [f"nic{i}" for i in range(8)]
    for i, nic in enumerate(nics):
        assert [link.dst for link in topo.out_links(nic)] == [i]
        assert topo.link(i, nic).bandwidth == pcie
        assert topo.graph.nodes[nic][NIC_BANDWIDTH] == rate


def test_dgx_a100_80gb_and_no_nics():
    topo = dgx_a100(nics=False, memory="80gb")
    assert topo.switches == ("nvswitch",)
    assert topo.memory_bandwidth(0) == 2039.0
    with pytest.raises(TopologyError, match="dgx_a100: memory must be '40gb' or '80gb', got '20gb'"):
        dgx_a100(memory="20gb")


def test_mi250_link_counts():
    topo = mi250(nics=False)
    lanes = _lanes_between_ranks(topo)
    for package in range(4):
        assert lanes[2 * package, 2 * package + 1] == 4
        assert topo.link(2 * package, 2 * package + 1).bandwidth == 200.0
    inter = {pair: n for pair, n in lanes.items() if pair[0] // 2 != pair[1] // 2}
    assert {n * 50.0 for n in inter.values()} == {50.0, 100.0}
    assert all(topo.link(u, v).kind is LinkKind.XGMI for u, v in lanes)
    assert {sum(n for (u, _), n in lanes.items() if u == r) for r in topo.ranks} == {6, 7}
    assert topo.memory_bandwidth(0) == 1600.0


def test_mi300x_is_a_full_xgmi_mesh():
    topo = mi300x()
    for u, v in itertools.permutations(range(8), 2):
        link = topo.link(u, v)
        assert (link.bandwidth, link.kind, link.lanes) == (64.0, LinkKind.XGMI, 1)
    assert sum(link.bandwidth for link in topo.out_links(0) if link.kind is LinkKind.XGMI) * 2 == 896.0
    assert topo.memory_bandwidth(3) == 5300.0


@pytest.mark.parametrize("builder", [dgx1, dgx2, dgx_a100, dgx_h100, ndv2, mi250, mi300x])
def test_descriptions_name_the_source(builder):
    text = builder().description.lower()
    assert any(word in text for word in ("white paper", "docs", "data sheet", "guide", "sccl"))
