"""Topology JSON: round trips, the file layout, and field-by-field error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synccl.exceptions import TopologyError
from synccl.topologies import (
    FORMAT,
    LinkKind,
    TopologyBuilder,
    VertexKind,
    dgx1,
    from_dict,
    load_topology,
    ring,
    save_topology,
    to_dict,
)


def _small() -> dict:
    """Three ranks on a switch plus one NVLink: a valid file to break field by field."""
    b = TopologyBuilder()
    for _ in range(3):
        b.add_rank(memory_bandwidth=900.0)
    b.add_switch("sw0")
    for r in range(3):
        b.add_link(r, "sw0", bandwidth=50.0, latency=0.5, kind="nvswitch")
    b.add_link(0, 1, bandwidth=25.0, latency=0.7, kind="nvlink", lanes=1)
    return to_dict(b.build("small", description="three ranks"))


def _write(tmp_path, data, name="topology.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_file_layout_matches_the_documented_format(tmp_path):
    path = tmp_path / "t.json"
    save_topology(dgx1(nics=True), path)
    text = path.read_text()
    data = json.loads(text)
    assert (data["format"], data["version"], data["name"]) == (FORMAT, 1, "dgx1")
    assert data["ranks"][0] == {"id": 0, "host": 0, "memory_bandwidth": 900.0}
    assert data["switches"][0] == {"name": "nic0", "kind": "nic", "host": None, "attrs": {"nic_bandwidth": 12.5}}
    assert {"src": 0, "dst": 1, "bandwidth": 50.0, "latency": 0.7, "kind": "nvlink", "lanes": 2} in data["links"]
    assert text.count("\n") == len(data["ranks"]) + len(data["switches"]) + len(data["links"]) + 12


def test_vertex_attributes_round_trip():
    topo = dgx1().subset([6, 1, 4])
    data = to_dict(topo)
    assert data["ranks"][0]["attrs"] == {"physical_rank": 6}
    assert from_dict(data).fingerprint() == topo.fingerprint()


def test_optional_fields_take_their_defaults():
    data = {
        "format": "synccl-topology",
        "version": 1,
        "name": "pair",
        "ranks": [{"id": 1}, {"id": 0}],
        "links": [{"src": 0, "dst": 1, "bandwidth": 25, "latency": 1, "kind": "nvlink"}],
    }
    topo = from_dict(data)
    assert topo.description == "" and topo.switches == ()
    assert topo.link(0, 1).lanes == 1 and topo.link(0, 1).bandwidth == 25.0
    assert not topo.has_link(1, 0)


def test_non_scalar_attribute_cannot_be_saved():
    b = TopologyBuilder()
    b.add_rank(coords=(0, 1))
    with pytest.raises(TopologyError, match=r"to_dict: vertex 0 attribute 'coords' is \(0, 1\), not a JSON scalar"):
        to_dict(b.build("x"))


def _set(path, value):
    def mutate(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return data

    return mutate


def _drop(key):
    def mutate(data):
        del data[key]
        return data

    return mutate


def _duplicate_link(data):
    data["links"].append(dict(data["links"][1]))
    return data


BAD_FILES = [
    (_set(["links", 3, "bandwidth"], -1), "links[3].bandwidth: expected a number > 0, got -1"),
    (_set(["links", 0, "bandwidth"], "fast"), "links[0].bandwidth: expected a number > 0, got 'fast'"),
    (_set(["links", 1, "latency"], -0.5), "links[1].latency: expected a number >= 0, got -0.5"),
    (_set(["links", 2, "lanes"], 0), "links[2].lanes: expected an integer >= 1, got 0"),
    (_set(["links", 2, "kind"], "warp"), "links[2].kind: expected one of nvlink, nvswitch, pcie, xgmi, ib, ethernet, shm, got 'warp'"),
    (_set(["links", 4, "dst"], "sw9"), "links[4].dst: expected a rank id in 0..2 or a switch name, got 'sw9'"),
    (_set(["links", 4, "src"], 3), "links[4].src: expected a rank id in 0..2 or a switch name, got 3"),
    (_set(["links", 4, "dst"], 2), "links[4].dst: expected a vertex other than src, got 2"),
    (
        _set(["links", 0, "bandwith"], 5),
        "links[0].bandwith: expected a known field (src, dst, bandwidth, latency, kind, lanes), got 'bandwith'",
    ),
    (_duplicate_link, "links[8]: expected one link per (src, dst), this one repeats links[1], got '0 -> 1'"),
    (_set(["ranks", 1, "id"], 7), "ranks[1].id: expected an integer in 0..2, got 7"),
    (_set(["ranks", 2, "id"], 0), "ranks[2].id: expected an id not used before, got 0"),
    (_set(["ranks", 0, "memory_bandwidth"], 0), "ranks[0].memory_bandwidth: expected a number > 0, got 0"),
    (_set(["ranks", 0, "host"], -1), "ranks[0].host: expected an integer >= 0, got -1"),
    (_set(["ranks", 1, "attrs"], {"host": 3}), "ranks[1].attrs.host: expected an attribute name other than"),
    (_set(["ranks", 1, "attrs"], {"coords": [1, 2]}), "ranks[1].attrs.coords: expected a string, number, boolean or null, got [1, 2]"),
    (_set(["switches", 0, "kind"], "router"), "switches[0].kind: expected 'switch' or 'nic', got 'router'"),
    (_set(["switches", 0, "name"], ""), "switches[0].name: expected a non-empty string, got ''"),
    (_set(["format"], "msccl"), "format: expected 'synccl-topology', got 'msccl'"),
    (_set(["version"], 2), "version: expected 1, got 2"),
    (_set(["version"], True), "version: expected 1, got True"),
    (_set(["name"], 42), "name: expected a non-empty string, got 42"),
    (_set(["ranks"], []), "ranks: expected a non-empty list, got []"),
    (_set(["links"], {}), "links: expected a list, got {}"),
    (_set(["extra"], 1), "extra: expected a known field (format, version, name, description, ranks, switches, links), got 'extra'"),
    (_drop("format"), "format: expected 'synccl-topology', got None"),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_FILES)
def test_bad_file_names_file_field_and_value(tmp_path, mutate, message):
    path = _write(tmp_path, mutate(_small()))
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_the_documented_example_message(tmp_path):
    data = _small()
    data["links"][3]["bandwidth"] = -1
    path = _write(tmp_path, data)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert str(info.value) == f"{path}: links[3].bandwidth: expected a number > 0, got -1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": "synccl-topology",', "invalid JSON at line 1, column 30"),
        ("[1, 2]", "(top level): expected an object, got [1, 2]"),
        (
            '{"format": "synccl-topology", "version": 1, "name": "x", "ranks": [{"id": 0, "memory_bandwidth": NaN}]}',
            "invalid JSON: 'NaN' is not a number",
        ),
    ],
)
def test_malformed_json_text(tmp_path, text, message):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(TopologyError, match="missing.json: cannot read topology file"):
        load_topology(tmp_path / "missing.json")


def test_from_dict_names_its_source():
    with pytest.raises(TopologyError, match=r"^topology: format: expected"):
        from_dict({})
    with pytest.raises(TopologyError, match=r"^mine: \(top level\): expected an object, got 3$"):
        from_dict(3, source="mine")


_KINDS = [k.value for k in LinkKind]


@st.composite
def connected_topologies(draw):
    """Random connected topologies: a random spanning tree over ranks and switches plus extra links."""
    nranks = draw(st.integers(1, 7))
    nswitches = draw(st.integers(0, 3))
    b = TopologyBuilder()
    for _ in range(nranks):
        attrs = draw(
            st.dictionaries(
                st.sampled_from(["numa_node", "label", "weight", "flag"]),
                st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=4)),
                max_size=2,
            )
        )
        b.add_rank(host=draw(st.integers(0, 2)), memory_bandwidth=draw(st.floats(0.5, 5000.0)), **attrs)
    for s in range(nswitches):
        b.add_switch(
            f"s{s}", kind=draw(st.sampled_from([VertexKind.SWITCH, VertexKind.NIC])), host=draw(st.one_of(st.none(), st.integers(0, 2)))
        )
    vertices = list(range(nranks)) + [f"s{s}" for s in range(nswitches)]
    order = draw(st.permutations(vertices))

    def add(u, v):
        b.add_link(
            u,
            v,
            bandwidth=draw(st.floats(0.01, 1000.0)),
            latency=draw(st.floats(0.0, 10.0)),
            kind=draw(st.sampled_from(_KINDS)),
            lanes=draw(st.integers(1, 18)),
            bidirectional=True,
        )

    for i in range(1, len(order)):
        add(order[i], order[draw(st.integers(0, i - 1))])
    for _ in range(draw(st.integers(0, 6))):
        u, v = draw(st.sampled_from(vertices)), draw(st.sampled_from(vertices))
        if u != v:
            add(u, v)
    return b.build(draw(st.text(min_size=1, max_size=12)), description=draw(st.text(max_size=20)))


@settings(max_examples=60, deadline=None)
@given(connected_topologies())
def test_random_topologies_round_trip_through_json_text(topo):
    assert topo.is_connected()
    data = json.loads(json.dumps(to_dict(topo)))
    again = from_dict(data)
    assert again.fingerprint() == topo.fingerprint()
    assert (again.name, again.description) == (topo.name, topo.description)
    assert to_dict(again) == to_dict(topo)


def test_saved_file_round_trips_to_an_equal_dict(tmp_path):
    topo = ring(5, bandwidth=12.5)
    save_topology(topo, tmp_path / "r.json")
    assert to_dict(load_topology(tmp_path / "r.json")) == to_dict(topo)


def test_the_example_in_the_format_document_loads(tmp_path):
    doc = (Path(__file__).parents[2] / "docs" / "topology-json.md").read_text()
    example = doc.split("```json\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "gpu-pair.json"
    path.write_text(example)
    topo = load_topology(path)
    assert (topo.name, topo.nranks, topo.switches) == ("gpu-pair", 2, ("nic0", "nic1"))
    assert topo.link(0, 1).lanes == 2
    assert topo.graph.nodes[0]["numa_node"] == 0
    save_topology(topo, tmp_path / "again.json")
    again, original = json.loads((tmp_path / "again.json").read_text()), json.loads(example)
    for data in (again, original):
        data["links"].sort(key=lambda link: (str(link["src"]), str(link["dst"])))
    assert again == original


def test_a_device_is_refused_after_reading_at_most_the_limit():
    with pytest.raises(TopologyError, match=r"^/dev/zero is larger than the 64MiB limit of topology files$"):
        load_topology("/dev/zero")
