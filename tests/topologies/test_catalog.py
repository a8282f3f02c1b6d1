"""The named-topology catalog: every entry builds, is connected and survives JSON."""

from __future__ import annotations

import pytest

from synccl.exceptions import TopologyError
from synccl.topologies import (
    LinkKind,
    dgx_a100,
    get_topology,
    list_topologies,
    load_topology,
    save_topology,
)

CATALOG_NAMES = [
    "ring:1",
    "ring:2",
    "ring:8",
    "line:4",
    "fully-connected:4",
    "fc:5",
    "star:8",
    "torus2d:4x4",
    "torus2d:2x3",
    "torus3d:2x2x2",
    "torus3d:3x3x3",
    "mesh2d:3x3",
    "hypercube:0",
    "hypercube:3",
    "host:4",
    "dgx1",
    "dgx1:2",
    "dgx2",
    "dgx2:2",
    "dgx-a100",
    "dgx-a100:16",
    "dgx-h100",
    "dgx-h100:4",
    "ndv2",
    "ndv2:4",
    "mi250",
    "mi250:2",
    "mi300x",
    "mi300x:2",
]


@pytest.mark.parametrize("name", CATALOG_NAMES)
def test_catalog_topology_builds_is_connected_and_round_trips(name, tmp_path):
    topo = get_topology(name)
    assert topo.is_connected()
    assert topo.description
    path = tmp_path / "topo.json"
    save_topology(topo, path)
    loaded = load_topology(path)
    assert loaded.fingerprint() == topo.fingerprint()
    assert loaded == topo
    assert loaded.description == topo.description
    assert get_topology(str(path)) == topo


def test_every_listed_example_builds():
    infos = list_topologies()
    assert len({info.name for info in infos}) == len(infos)
    for info in infos:
        assert get_topology(info.example).is_connected(), info.example


def _out_degrees(topo):
    return {len(list(topo.out_links(r))) for r in topo.ranks}


@pytest.mark.parametrize(
    ("name", "degree"),
    [("ring:8", 2), ("hypercube:3", 3), ("torus2d:4x4", 4), ("torus3d:3x3x3", 6), ("fc:5", 4), ("host:4", 3), ("star:8", 1)],
)
def test_out_degrees(name, degree):
    assert _out_degrees(get_topology(name)) == {degree}


def test_dgx1_every_gpu_has_six_nvlink_lanes():
    topo = get_topology("dgx1")
    for r in topo.ranks:
        links = list(topo.out_links(r))
        assert sum(link.lanes for link in links) == 6
        assert all(link.kind is LinkKind.NVLINK and link.bandwidth == 25.0 * link.lanes for link in links)


def test_names_are_canonical():
    assert get_topology("fc:4").name == "fully-connected:4"
    assert get_topology("TORUS2D:2X2").name == "torus2d:2x2"
    assert get_topology("dgx_a100:2").name == "dgx-a100:2"
    assert get_topology(" ring:3 ").name == "ring:3"


def test_one_node_is_the_plain_machine():
    assert get_topology("dgx-a100:1") == dgx_a100()
    assert get_topology("dgx-a100") == dgx_a100()


def test_multi_node_names_use_rails():
    topo = get_topology("dgx-a100:16")
    assert (topo.nranks, topo.nhosts) == (128, 16)
    assert topo.link("h15/nic7", "rail7").kind is LinkKind.IB
    assert topo.ranks_on_host(3) == tuple(range(24, 32))


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(TopologyError) as info:
        get_topology("butterfly:8")
    message = str(info.value)
    assert "'butterfly:8'" in message
    for pattern in ("ring:N", "torus2d:XxY", "dgx-a100[:N]", "mi300x[:N]", "host:N", ".json"):
        assert pattern in message


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("ring:0", "n must be an integer >= 1, got 0"),
        ("ring:x", "expected a rank count (a positive integer) after ':', got 'x'"),
        ("ring:-3", "got '-3'"),
        ("ring", "needs a rank count, e.g. 'ring:8'"),
        ("ring:70000", "at most 65536 ranks, got 70000"),
        ("torus2d:4", "expected 2 dimensions like ':4x4', got '4'"),
        ("torus2d:4x", "got '4x'"),
        ("torus3d:2x2", "expected 3 dimensions"),
        ("mesh2d:0x3", "x must be an integer >= 1, got 0"),
        ("hypercube:17", "dim must be an integer in 0..16, got 17"),
        ("dgx1:0", "nnodes must be an integer >= 1, got 0"),
        ("dgx-a100:two", "expected a node count (a positive integer) after ':', got 'two'"),
        ("dgx-h100:100000", "at most 65536 ranks"),
    ],
)
def test_bad_parameter_is_one_clear_line(name, fragment):
    with pytest.raises(TopologyError) as info:
        get_topology(name)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"get_topology: {name!r}")
    assert fragment in message


@pytest.mark.parametrize("name", ["", "   ", None, 8])
def test_name_must_be_a_string(name):
    with pytest.raises(TopologyError, match="expected a topology name"):
        get_topology(name)


def test_missing_json_file_names_it(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(TopologyError, match="nope.json: cannot read topology file"):
        get_topology(str(path))
