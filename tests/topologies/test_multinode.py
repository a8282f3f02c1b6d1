"""multinode: replication, numbering, fabrics and option checking."""

from __future__ import annotations

import pytest

from synccl.exceptions import TopologyError
from synccl.topologies import (
    NIC_BANDWIDTH,
    LinkKind,
    VertexKind,
    dgx1,
    dgx_a100,
    multinode,
    ndv2,
    ring,
    star,
)


def test_ranks_are_host_major_and_switches_prefixed():
    topo = multinode(dgx_a100(), 3)
    assert topo.nranks == 24 and topo.nhosts == 3
    assert topo.ranks_on_host(2) == tuple(range(16, 24))
    assert topo.link(8, "h1/nvswitch").lanes == 12
    assert topo.host_of("h2/nic5") == 2
    assert topo.host_of("rail5") is None
    assert topo.vertex_kind("h2/nic5") is VertexKind.NIC
    assert topo.graph.nodes["h2/nic5"][NIC_BANDWIDTH] == 25.0
    assert topo.is_connected()


def test_rail_fabric_joins_nic_i_of_every_host_to_rail_i():
    topo = multinode(dgx_a100, 4)
    for i in range(8):
        assert sorted(str(link.dst) for link in topo.out_links(f"rail{i}")) == [f"h{h}/nic{i}" for h in range(4)]
        assert topo.link(f"h0/nic{i}", f"rail{i}").kind is LinkKind.IB
    assert not any(topo.has_link(f"rail{i}", f"rail{j}") for i in range(8) for j in range(8))


def test_node_without_nics_gets_them():
    topo = multinode(ring(4), 2, nics_per_node=2, nic_bandwidth=12.5, pcie_bandwidth=16.0)
    assert sorted(str(link.dst) for link in topo.out_links("h1/nic0")) == ["4", "5", "rail0"]
    assert topo.link(6, "h1/nic1").bandwidth == 16.0
    assert topo.link("h1/nic1", "rail1").bandwidth == 12.5
    assert topo.is_connected()


def test_fat_tree_uplinks_are_reduced_by_the_oversubscription():
    topo = multinode(ndv2, 8, fabric="fat-tree", hosts_per_leaf=4, oversubscription=2.0)
    assert sorted(v for v in topo.switches if not v.startswith("h")) == ["leaf0", "leaf1", "spine"]
    uplink = topo.link("leaf1", "spine")
    assert uplink.bandwidth == 4 * 12.5 / 2.0
    assert uplink.lanes == 2
    assert topo.link("h5/nic0", "leaf1").bandwidth == 12.5
    assert topo.is_connected()


def test_fat_tree_with_one_leaf_has_no_spine():
    topo = multinode(dgx1(nics=True), 2, fabric="fat-tree")
    assert "spine" not in topo.switches and "leaf0" in topo.switches
    assert topo.is_connected()


def test_callable_node_and_name():
    topo = multinode(lambda: star(2), 2, nics_per_node=1, name="pair-of-stars")
    assert topo.name == "pair-of-stars"
    assert topo.has_link("h0/switch", 1)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: multinode(ring(4), 2), "node 'ring:4' has no NIC vertices; pass nics_per_node"),
        (lambda: multinode(ring(4), 2, nics_per_node=5), "nics_per_node must be in 1..4 (the node's ranks), got 5"),
        (lambda: multinode(dgx_a100(), 2, nics_per_node=4), "nics_per_node=4 but node 'dgx-a100' already has 8 NICs"),
        (lambda: multinode(dgx_a100(), 0), "nnodes must be an integer >= 1, got 0"),
        (lambda: multinode(dgx_a100(), 2, fabric="torus"), "fabric must be 'rail' or 'fat-tree', got 'torus'"),
        (lambda: multinode(dgx_a100(), 2, fabric="fat-tree", oversubscription=0.5), "oversubscription must be a number >= 1, got 0.5"),
        (lambda: multinode(dgx_a100(), 2, oversubscription=2.0), "oversubscription applies to fabric='fat-tree'"),
        (lambda: multinode(dgx_a100(), 2, nic_bandwidth=-1), "nic_bandwidth must be a number > 0, got -1"),
        (lambda: multinode(dgx_a100(), 2, fabric="fat-tree", hosts_per_leaf=0), "hosts_per_leaf must be an integer >= 1, got 0"),
        (lambda: multinode(multinode(dgx_a100(), 2), 2), "must span one host, it spans 2"),
        (lambda: multinode("dgx1", 2), "node must be a Topology or a callable returning one, got 'dgx1'"),
        (lambda: multinode(dgx_a100(), 10**4), "at most 65536 ranks"),
    ],
)
def test_bad_options_raise(call, fragment):
    with pytest.raises(TopologyError) as info:
        call()
    assert str(info.value).startswith("multinode: ")
    assert fragment in str(info.value)
