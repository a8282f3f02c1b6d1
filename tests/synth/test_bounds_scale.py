"""The cut bounds at scale: scipy max flows, verified host symmetries, and 1024 ranks, all exactly as before.

Every comparison here is between exact Fractions (``_us_per_byte``, µs per byte of message):
scipy's int32 max flows against networkx's, the per-orbit sinks against every sink, and both
against cut enumeration written independently of the max-flow code.
"""

from __future__ import annotations

import math
from fractions import Fraction

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import synccl.synth._bounds as bounds_module
from synccl.collectives import Collective, CollectiveSpec
from synccl.exceptions import Infeasible
from synccl.synth import bandwidth_bound, latency_bound, lower_bound
from synccl.synth._bounds import phased_all_reduce_us_per_byte
from synccl.synth._symmetry import equivalent_hosts, rank_representatives
from synccl.topologies import BANDWIDTH, LATENCY, Topology, TopologyBuilder, dgx_a100, get_topology, multinode, torus2d

FLOW_COLLECTIVES = [c for c in Collective if c is not Collective.ALL_TO_ALL]
BANDWIDTHS = [0.1, 1.0, 3.3, 12.5, 25.0, 31.5, 48.0, 300.0]


def us_per_byte(topo: Topology, collective: Collective, root: int = 0) -> Fraction:
    """The exact bandwidth bound per byte, uncached (tests rename and rebuild topologies freely)."""
    bounds_module._us_per_byte.cache_clear()
    try:
        return bounds_module._us_per_byte(topo, collective, root if collective.is_rooted else None)
    finally:
        bounds_module._us_per_byte.cache_clear()


def every_rank(topology: Topology, *, root: int | None = None) -> list[int]:
    return list(topology.ranks)


def two_leaves(nnodes: int = 4, **options) -> Topology:
    return multinode(dgx_a100, nnodes, fabric="fat-tree", hosts_per_leaf=2, **options)


def perturbed(topo: Topology, u: object, v: object, bandwidth: float) -> Topology:
    graph = nx.DiGraph(topo.graph)
    graph.edges[u, v][BANDWIDTH] = bandwidth
    return Topology(f"{topo.name}-perturbed", graph)


def enumerated(topo: Topology, root: int = 0) -> dict[Collective, Fraction]:
    """µs per byte of every flow collective from every vertex set, in exact arithmetic (no max flow).

    Cut capacities are integers (bandwidths scaled by a common denominator); floats only
    shortlist the sets within 1e-9 of the best ratio, which are then compared as Fractions.
    """
    vertices = list(topo.graph)
    n = topo.nranks
    exact = {(u, v): Fraction(repr(d[BANDWIDTH])) * 1000 for u, v, d in topo.graph.edges(data=True)}
    scale = math.lcm(*(c.denominator for c in exact.values()))
    masks = np.arange(1, (1 << len(vertices)) - 1, dtype=np.int64)
    member = {v: ((masks >> i) & 1).astype(bool) for i, v in enumerate(vertices)}
    out = np.zeros(len(masks), dtype=np.int64)
    into = np.zeros(len(masks), dtype=np.int64)
    for (u, v), c in exact.items():
        crossing = member[u] & ~member[v]
        out += int(c * scale) * crossing
        into += int(c * scale) * (member[v] & ~member[u])
    inside = sum(member[r].astype(np.int64) for r in range(n))
    split = (inside > 0) & (inside < n)
    has_root = member[root]
    one = np.ones(len(masks), dtype=np.int64)

    def worst(data: np.ndarray, capacity: np.ndarray, where: np.ndarray) -> Fraction:
        """``max data / (capacity / scale)`` over ``where``: message fractions over bytes/µs."""
        data, capacity = data[where], capacity[where]
        if not len(data):
            return Fraction(0)
        ratio = data / capacity
        close = ratio >= ratio.max() * (1 - 1e-9)
        return max(Fraction(int(a) * scale, int(b)) for a, b in zip(data[close], capacity[close], strict=True))

    ag = worst(inside, out * n, split)
    rs = worst(inside, into * n, split)
    return {
        Collective.ALL_GATHER: ag,
        Collective.REDUCE_SCATTER: rs,
        Collective.ALL_REDUCE: worst(one, np.minimum(out, into), split),
        Collective.BROADCAST: worst(one, out, split & has_root),
        Collective.REDUCE: worst(one, into, split & has_root),
        Collective.GATHER: worst(inside, out * n, (inside > 0) & ~has_root),
        Collective.SCATTER: worst(inside, into * n, (inside > 0) & ~has_root),
    }


def networkx_max_distance(topo: Topology, spec: CollectiveSpec) -> float:
    """The latency bound the way it was computed before scipy: networkx Dijkstra from every source."""
    n, root = spec.nranks, spec.root
    if spec.collective in (Collective.BROADCAST, Collective.SCATTER):
        pairs = [(root, r) for r in range(n) if r != root]
    elif spec.collective in (Collective.REDUCE, Collective.GATHER):
        pairs = [(r, root) for r in range(n) if r != root]
    else:
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    reach = {s: nx.single_source_dijkstra_path_length(topo.graph, s, weight=LATENCY) for s in {s for s, _ in pairs}}
    return max((float(reach[s][t]) for s, t in pairs), default=0.0)


# -- scipy max flows against networkx -----------------------------------------------------------


SCALE_TOPOLOGIES = {
    "dgx-a100:2": lambda: get_topology("dgx-a100:2"),
    "dgx-a100:4": lambda: get_topology("dgx-a100:4"),
    "fat-tree:2-leaves": two_leaves,
    "fat-tree:3-hosts-oversubscribed": lambda: multinode(dgx_a100, 3, fabric="fat-tree", hosts_per_leaf=2, oversubscription=2.0),
    "dgx1": lambda: get_topology("dgx1"),
    "torus2d:4x4": lambda: torus2d(4, 4),
}


@pytest.mark.parametrize("name", list(SCALE_TOPOLOGIES))
def test_scipy_equals_networkx_and_reduction_equals_full_check(name, monkeypatch):
    topo = SCALE_TOPOLOGIES[name]()
    root = topo.nranks - 1  # on the last host: the root's host is not the representative one
    fast = {c: us_per_byte(topo, c, root) for c in FLOW_COLLECTIVES}
    with monkeypatch.context() as patch:
        patch.setattr(bounds_module, "_SCIPY_MAX_CAPACITY", 0)  # every check on networkx
        assert {c: us_per_byte(topo, c, root) for c in FLOW_COLLECTIVES} == fast
    with monkeypatch.context() as patch:
        patch.setattr(bounds_module, "rank_representatives", every_rank)  # every sink checked
        assert {c: us_per_byte(topo, c, root) for c in FLOW_COLLECTIVES} == fast


@pytest.mark.parametrize("name", ["dgx-a100:2", "fat-tree:2-leaves", "dgx1"])
def test_min_cut_values_agree_with_networkx_at_any_rate(name):
    topo = SCALE_TOPOLOGIES[name]()
    graph = bounds_module._capacity_graph(topo, reverse=False)
    ranks = list(topo.ranks)
    network = bounds_module._FlowNetwork(graph, ranks)
    best = us_per_byte(topo, Collective.ALL_GATHER)
    optimum = Fraction(1, topo.nranks) / best  # bytes/µs per rank
    for x in (optimum / 3, optimum, optimum * Fraction(7, 5), optimum * 11):
        for sink in (0, topo.nranks // 2 + 1, topo.nranks - 1):
            chosen = set(ranks) - {sink}
            fast, slow = network.min_cut(x, chosen, sink), network._min_cut_networkx(x, chosen, sink)
            # both are minimum cuts (possibly different sets): same value, same verdict
            value = [out + x * (len(chosen) - inside) for out, inside in (fast, slow)]
            assert value[0] == value[1]
            if x <= optimum:  # x* is feasible for every sink
                assert value[0] >= x * len(chosen)
    # above x*, sink 0's check fails here, with a cut of smaller ratio
    chosen = set(ranks) - {0}
    out, inside = network.min_cut(optimum * Fraction(11, 10), chosen, 0)
    assert 0 < inside and out / inside < optimum * Fraction(11, 10)


def test_overflowing_integers_fall_back_to_networkx(monkeypatch):
    calls = []
    original = bounds_module._FlowNetwork._min_cut_networkx

    def spy(self, x, chosen, sink):
        calls.append(sink)
        return original(self, x, chosen, sink)

    monkeypatch.setattr(bounds_module._FlowNetwork, "_min_cut_networkx", spy)
    # 3e6 GB/s against 1 MB/s: 3e9 capacity units, more than int32 can hold
    b = TopologyBuilder()
    ranks = [b.add_rank() for _ in range(4)]
    b.add_switch("sw")
    for r, bw in zip(ranks, [3e6, 0.001, 12.5, 0.3], strict=True):
        b.add_link(r, "sw", bandwidth=bw, latency=1.0, kind="nvswitch")
    b.add_link(0, 1, bandwidth=7.7, latency=1.0, kind="nvlink")
    topo = b.build("lopsided")
    want = enumerated(topo)
    for collective in FLOW_COLLECTIVES:
        assert us_per_byte(topo, collective) == want[collective], collective
    assert calls
    # a small limit: some checks fit in it, some fall back, and the answers do not change
    dgx = get_topology("dgx-a100:2")
    before = {c: us_per_byte(dgx, c) for c in FLOW_COLLECTIVES}
    calls.clear()
    monkeypatch.setattr(bounds_module, "_SCIPY_MAX_CAPACITY", 1_000)  # the units are 600, 63 and 50
    assert {c: us_per_byte(dgx, c) for c in FLOW_COLLECTIVES} == before
    assert calls


# -- symmetry -----------------------------------------------------------------------------------


def accepted_swaps_are_automorphisms(topo: Topology, classes: list[list[int]]) -> None:
    """Independently of _symmetry: relabel the whole graph by each swap and compare edge sets and bandwidths."""
    k = topo.nranks // topo.nhosts
    for cls in classes:
        for other in cls[1:]:
            a, b = cls[0], other
            mapping = {}
            for i in range(k):
                mapping[a * k + i], mapping[b * k + i] = b * k + i, a * k + i
            for v in topo.graph:
                if isinstance(v, str) and v.startswith(f"h{a}/"):
                    twin = f"h{b}/" + v.split("/", 1)[1]
                    mapping[v], mapping[twin] = twin, v
            relabelled = nx.relabel_nodes(topo.graph, mapping, copy=True)
            original = {(u, v): d[BANDWIDTH] for u, v, d in topo.graph.edges(data=True)}
            assert {(u, v): d[BANDWIDTH] for u, v, d in relabelled.edges(data=True)} == original


def test_rail_fabric_hosts_form_one_class():
    topo = get_topology("dgx-a100:4")
    classes = equivalent_hosts(topo)
    assert classes == [[0, 1, 2, 3]]
    accepted_swaps_are_automorphisms(topo, classes)
    assert rank_representatives(topo) == list(range(8))
    assert rank_representatives(topo, root=26) == list(range(8)) + list(range(24, 32))
    assert equivalent_hosts(topo, fixed_host=0) == [[0], [1, 2, 3]]


def test_fat_tree_splits_by_leaf():
    topo = two_leaves(4)
    classes = equivalent_hosts(topo)
    assert classes == [[0, 1], [2, 3]]
    accepted_swaps_are_automorphisms(topo, classes)
    assert rank_representatives(topo) == list(range(8)) + list(range(16, 24))
    uneven = multinode(dgx_a100, 3, fabric="fat-tree", hosts_per_leaf=2)  # leaf1 holds one host: half the uplink
    assert equivalent_hosts(uneven) == [[0, 1], [2]]
    single_leaf = multinode(dgx_a100, 3, fabric="fat-tree")  # 3 hosts on one leaf, no spine
    assert equivalent_hosts(single_leaf) == [[0, 1, 2]]


def test_swaps_are_checked_not_assumed(monkeypatch):
    topo = get_topology("dgx-a100:4")
    slow_nic = perturbed(topo, "h2/nic5", "rail5", 12.5)
    assert equivalent_hosts(slow_nic) == [[0, 1, 3], [2]]
    slow_nvswitch_port = perturbed(topo, "h1/nvswitch", 11, 150.0)  # one direction only
    assert equivalent_hosts(slow_nvswitch_port) == [[0, 2, 3], [1]]
    for t in (slow_nic, slow_nvswitch_port):
        fast = {c: us_per_byte(t, c, 0) for c in FLOW_COLLECTIVES}
        with monkeypatch.context() as patch:
            patch.setattr(bounds_module, "rank_representatives", every_rank)
            assert {c: us_per_byte(t, c, 0) for c in FLOW_COLLECTIVES} == fast
    # host 2 now sends at 7 x 25 + 12.5 GB/s (and still receives at 8 x 25)
    assert us_per_byte(slow_nic, Collective.REDUCE) == Fraction(1, 187_500)
    assert us_per_byte(slow_nic, Collective.BROADCAST) == Fraction(1, 200_000)


def test_unconventional_names_and_single_hosts_are_not_reduced():
    b = TopologyBuilder()
    for host in range(2):
        for _ in range(2):
            b.add_rank(host=host)
    for host in range(2):
        b.add_switch(f"switch-{host}", host=host)  # not 'h{host}/...': no swap can be proposed
        for r in range(2 * host, 2 * host + 2):
            b.add_link(r, f"switch-{host}", bandwidth=50.0, latency=0.5, kind="nvswitch")
    b.add_link("switch-0", "switch-1", bandwidth=10.0, latency=1.0, kind="ib")
    topo = b.build("two-hosts")
    assert equivalent_hosts(topo) == [[0], [1]]
    assert rank_representatives(topo) == [0, 1, 2, 3]
    want = enumerated(topo, 3)
    for collective in FLOW_COLLECTIVES:
        assert us_per_byte(topo, collective, 3) == want[collective], collective
    assert rank_representatives(get_topology("dgx-a100")) == list(range(8))
    assert rank_representatives(get_topology("dgx1"), root=3) == list(range(8))


def test_ranks_without_a_host_represent_themselves(monkeypatch):
    graph = nx.DiGraph(get_topology("dgx-a100:2").graph)
    graph.nodes[15]["host"] = None
    hostless = Topology("hostless", graph)
    assert equivalent_hosts(hostless) == [[0], [1]]  # host 1 lost a rank: no swap with host 0
    assert rank_representatives(hostless) == list(range(16))
    graph = nx.DiGraph(get_topology("dgx-a100:4").graph)
    graph.nodes[31]["host"], graph.nodes["h3/nic7"]["host"] = None, None
    hostless = Topology("hostless", graph)
    assert equivalent_hosts(hostless) == [[0, 1, 2], [3]]
    assert rank_representatives(hostless) == list(range(8)) + list(range(24, 32))
    fast = us_per_byte(hostless, Collective.ALL_GATHER)
    with monkeypatch.context() as patch:
        patch.setattr(bounds_module, "rank_representatives", every_rank)
        assert us_per_byte(hostless, Collective.ALL_GATHER) == fast


# -- random topologies against enumeration --------------------------------------------------------


@st.composite
def random_digraphs(draw):
    """networkx random digraphs made strongly connected by a cycle, ranks and switches mixed."""
    nranks = draw(st.integers(2, 5))
    nswitches = draw(st.integers(0, 3))
    size = nranks + nswitches
    graph = nx.gnp_random_graph(size, draw(st.floats(0.0, 0.6)), seed=draw(st.integers(0, 2**16)), directed=True)
    order = draw(st.permutations(range(size)))
    graph.add_edges_from(zip(order, order[1:] + order[:1], strict=True))
    b = TopologyBuilder()
    names = [b.add_rank() for _ in range(nranks)] + [b.add_switch(f"s{i}") for i in range(nswitches)]
    for u, v in graph.edges:
        b.add_link(
            names[u],
            names[v],
            bandwidth=draw(st.sampled_from(BANDWIDTHS)),
            latency=draw(st.sampled_from([0.0, 0.3, 1.0])),
            kind="nvlink",
            bidirectional=False,
        )
    return b.build("random-digraph")


@st.composite
def random_clusters(draw):
    """Copies of a random connected node on a rail or fat-tree fabric: symmetric hosts, sometimes split."""
    nranks = draw(st.integers(1, 2))
    b = TopologyBuilder()
    ranks = [b.add_rank() for _ in range(nranks)]
    vertices: list[int | str] = ranks + ([b.add_switch("sw")] if draw(st.booleans()) else [])
    graph = nx.gnp_random_graph(len(vertices), 0.7, seed=draw(st.integers(0, 2**16)))
    graph.add_edges_from(zip(range(len(vertices) - 1), range(1, len(vertices)), strict=True))
    for u, v in graph.edges:
        b.add_link(vertices[u], vertices[v], bandwidth=draw(st.sampled_from(BANDWIDTHS)), latency=0.5, kind="nvlink")
    node = b.build("node")
    fabric = draw(st.sampled_from(["rail", "fat-tree"]))
    options = (
        {"hosts_per_leaf": draw(st.integers(1, 2)), "oversubscription": draw(st.sampled_from([1.0, 2.0]))} if fabric == "fat-tree" else {}
    )
    nnodes = draw(st.integers(2, 3))
    return multinode(node, nnodes, fabric=fabric, nics_per_node=1, nic_bandwidth=draw(st.sampled_from(BANDWIDTHS)), **options)


@settings(max_examples=40, deadline=None)
@given(random_digraphs(), st.data())
def test_random_digraphs_match_enumeration(topo, data):
    root = data.draw(st.integers(0, topo.nranks - 1))
    want = enumerated(topo, root)
    for collective in FLOW_COLLECTIVES:
        assert us_per_byte(topo, collective, root) == want[collective], collective
    spec = CollectiveSpec(Collective.ALL_GATHER, topo.nranks)
    assert latency_bound(topo, spec) == networkx_max_distance(topo, spec)


@settings(max_examples=30, deadline=None)
@given(random_clusters(), st.data())
def test_random_clusters_match_enumeration(topo, data):
    root = data.draw(st.integers(0, topo.nranks - 1))
    want = enumerated(topo, root)
    for collective in FLOW_COLLECTIVES:
        assert us_per_byte(topo, collective, root) == want[collective], collective
    accepted_swaps_are_automorphisms(topo, equivalent_hosts(topo))


# -- latency, all_to_all cut family ---------------------------------------------------------------


@pytest.mark.parametrize("collective", [Collective.ALL_GATHER, Collective.BROADCAST, Collective.REDUCE, Collective.SCATTER])
def test_scipy_latencies_equal_networkx(collective):
    for topo in (get_topology("dgx-a100:2"), two_leaves(4), get_topology("dgx1"), get_topology("mi300x")):
        spec = CollectiveSpec(collective, topo.nranks, root=3 if collective.is_rooted else None)
        assert latency_bound(topo, spec) == networkx_max_distance(topo, spec)


def test_zero_latency_links_and_unreachable_pairs():
    b = TopologyBuilder()
    ranks = [b.add_rank() for _ in range(3)]
    b.add_link(ranks[0], ranks[1], bandwidth=10.0, latency=0.0, kind="nvlink", bidirectional=False)
    b.add_link(ranks[1], ranks[2], bandwidth=10.0, latency=0.0, kind="nvlink", bidirectional=False)
    topo = b.build("zero-latency-line")
    assert latency_bound(topo, "broadcast") == 0.0
    with pytest.raises(Infeasible, match=r"reduce needs a path 1 -> 0"):
        latency_bound(topo, "reduce")
    b.add_link(ranks[2], ranks[0], bandwidth=10.0, latency=0.25, kind="nvlink", bidirectional=False)
    cycle = b.build("zero-latency-cycle")
    assert latency_bound(cycle, "all_gather") == 0.25
    assert bandwidth_bound(cycle, "all_gather", 3_000) == pytest.approx(0.2)


def naive_cut_family(topo: Topology, graph: nx.DiGraph) -> Fraction:
    """The all_to_all cut family as documented in bandwidth_bound, built set by set."""
    n = topo.nranks
    vertices = list(graph)
    host = {v: topo.host_of(v) for v in vertices}
    family = [{v} for v in vertices]
    family += [{v for v in vertices if host[v] == h} for h in sorted(set(host.values()) - {None})]
    for k in range(1, n):
        below = {host[r] for r in range(k)} - {host[r] for r in range(k, n)}
        family.append(set(range(k)) | {v for v in vertices if isinstance(v, str) and host[v] in below})
    family += [set(vertices) - s for s in family]
    best = Fraction(0)
    for cut in family:
        inside = len(cut & set(range(n)))
        if 0 < inside < n:
            best = max(best, Fraction(inside * (n - inside)) / bounds_module._out_capacity(graph, cut))
    return best


@pytest.mark.parametrize("name", ["dgx-a100:4", "fat-tree:2-leaves", "fat-tree:3-hosts-oversubscribed", "dgx1"])
def test_all_to_all_family_equals_naive_construction(name):
    topo = SCALE_TOPOLOGIES[name]()
    graph = bounds_module._capacity_graph(topo, reverse=False)
    got = max(Fraction(i * (topo.nranks - i)) / out for i, out in bounds_module._cut_family(topo, graph) if 0 < i < topo.nranks)
    assert got == naive_cut_family(topo, graph)
    if len(graph) > bounds_module.EXACT_CUT_VERTICES:
        assert us_per_byte(topo, Collective.ALL_TO_ALL) == got / topo.nranks


# -- known figures ----------------------------------------------------------------------------------


def test_dgx_a100_2_all_gather_algbw():
    topo = get_topology("dgx-a100:2")
    assert us_per_byte(topo, Collective.ALL_GATHER) == Fraction(3, 1_040_000)
    algbw = 1e9 / bandwidth_bound(topo, "all_gather", 10**9) / 1e3  # GB/s
    assert algbw == pytest.approx(346.67, abs=0.005)


def test_1024_ranks():
    topo = get_topology("dgx-a100:128")
    assert topo.nranks == 1024 and topo.nhosts == 128
    assert rank_representatives(topo) == list(range(8))
    n, nic = 1024, Fraction(8 * 25_000)  # bytes/µs into one host over its 8 NICs
    # all_gather: every host must receive the other 1016 ranks' M/N over its NICs
    gather = Fraction(n - 8, n) / nic
    m = 2**30
    assert bandwidth_bound(topo, "all_gather", m) == pytest.approx(float(m * gather), rel=1e-15)
    assert us_per_byte(topo, Collective.ALL_GATHER) == gather
    assert us_per_byte(topo, Collective.REDUCE_SCATTER) == gather
    assert us_per_byte(topo, Collective.ALL_REDUCE) == 1 / nic  # M must cross into a host over its NICs
    assert phased_all_reduce_us_per_byte(topo) == 2 * gather
    assert us_per_byte(topo, Collective.BROADCAST, 0) == 1 / nic
    assert us_per_byte(topo, Collective.BROADCAST, 517) == 1 / nic
    assert us_per_byte(topo, Collective.ALL_TO_ALL) == Fraction(8 * (n - 8), n) / nic
    bound = lower_bound(topo, "all_reduce", m)
    assert bound.bandwidth_us == pytest.approx(float(m / nic), rel=1e-15)
    assert bound.latency_us == 4.0  # PCIe 1 + IB 0.5 + IB 0.5 + PCIe 1, then NVSwitch 0.5 + 0.5
    spec = CollectiveSpec(Collective.BROADCAST, n, root=0)
    assert latency_bound(topo, spec) == networkx_max_distance(topo, spec) == 4.0
