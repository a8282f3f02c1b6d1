"""Generic families: shapes, small sizes, and input checking."""

from __future__ import annotations

import pytest

from synccl.exceptions import TopologyError
from synccl.topologies import (
    MAX_RANKS,
    LinkKind,
    fully_connected,
    hypercube,
    line,
    mesh2d,
    ring,
    star,
    torus2d,
    torus3d,
)


def test_single_rank_families_have_no_links():
    for topo in (ring(1), line(1), fully_connected(1), torus2d(1, 1), mesh2d(1, 1), hypercube(0)):
        assert topo.nranks == 1
        assert not list(topo.links())
        assert topo.is_connected()
    assert star(1).nranks == 1


def test_two_rank_ring_is_one_link_not_two():
    link = ring(2).link(0, 1)
    assert (link.lanes, link.bandwidth) == (1, 25.0)


def test_torus_dimension_of_two_has_one_link_per_neighbour():
    topo = torus2d(2, 2)
    assert {len(list(topo.out_links(r))) for r in topo.ranks} == {2}
    assert all(link.lanes == 1 for link in topo.links())


def test_grid_numbering_is_row_major():
    topo = torus2d(3, 4)
    assert topo.has_link(0, 1) and topo.has_link(0, 4) and topo.has_link(0, 3) and topo.has_link(0, 8)
    mesh = mesh2d(3, 4)
    assert not mesh.has_link(0, 3) and not mesh.has_link(0, 8)


def test_line_ends_have_one_link():
    topo = line(5)
    assert [len(list(topo.out_links(r))) for r in topo.ranks] == [1, 2, 2, 2, 1]


def test_options_are_applied():
    topo = ring(4, bandwidth=10.0, latency=2.0, kind="ib", memory_bandwidth=50.0)
    link = topo.link(3, 0)
    assert (link.bandwidth, link.latency, link.kind) == (10.0, 2.0, LinkKind.IB)
    assert topo.memory_bandwidth(2) == 50.0


def test_torus3d_and_hypercube_sizes():
    assert torus3d(2, 3, 4).nranks == 24
    assert hypercube(4).nranks == 16


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: ring(0), "ring: n must be an integer >= 1, got 0"),
        (lambda: line(-1), "line: n must be an integer >= 1, got -1"),
        (lambda: fully_connected(2.0), "fully_connected: n must be an integer >= 1, got 2.0"),
        (lambda: star(True), "star: n must be an integer >= 1, got True"),
        (lambda: torus2d(4, 0), "torus2d: y must be an integer >= 1, got 0"),
        (lambda: torus3d(2, 2, "2"), "torus3d: z must be an integer >= 1, got '2'"),
        (lambda: mesh2d(300, 300), f"mesh2d: at most {MAX_RANKS} ranks, got 90000"),
        (lambda: hypercube(-1), "hypercube: dim must be an integer in 0..16, got -1"),
        (lambda: hypercube(10**9), "hypercube: dim must be an integer in 0..16"),
    ],
)
def test_bad_sizes_raise(call, fragment):
    with pytest.raises(TopologyError) as info:
        call()
    assert fragment in str(info.value)
