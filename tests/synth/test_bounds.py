"""Lower bounds: max-flow results against brute-force cut enumeration and known closed forms."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import synccl.synth._bounds as bounds_module
from synccl.collectives import Collective, CollectiveSpec
from synccl.exceptions import CollectiveError, Infeasible, TopologyError
from synccl.synth import Bound, bandwidth_bound, latency_bound, lower_bound, phased_all_reduce_bound
from synccl.topologies import TopologyBuilder

M = 1 << 24
BW = 10.0
B = BW * 1e3  # bytes/us


def ring(n: int, *, bidirectional: bool = True, latency: float = 1.0):
    b = TopologyBuilder()
    for _ in range(n):
        b.add_rank()
    for i in range(n if n > 2 or not bidirectional else 1):
        b.add_link(i, (i + 1) % n, bandwidth=BW, latency=latency, kind="nvlink", bidirectional=bidirectional)
    return b.build(f"ring:{n}{'' if bidirectional else ':uni'}")


def star(n: int, *, bandwidth: float = BW):
    b = TopologyBuilder()
    for _ in range(n):
        b.add_rank()
    b.add_switch("sw")
    for i in range(n):
        b.add_link(i, "sw", bandwidth=bandwidth, latency=0.5, kind="nvswitch")
    return b.build(f"star:{n}")


def line(n: int, *, bidirectional: bool = True):
    b = TopologyBuilder()
    for _ in range(n):
        b.add_rank()
    for i in range(n - 1):
        b.add_link(i, i + 1, bandwidth=BW * (i + 1), latency=1.0, kind="nvlink", bidirectional=bidirectional)
    return b.build(f"line:{n}{'' if bidirectional else ':uni'}")


def two_hosts():
    """Two machines of 3 ranks on a local switch each, joined through NICs and a fabric switch."""
    b = TopologyBuilder()
    for host in range(2):
        for _ in range(3):
            b.add_rank(host=host)
    for host in range(2):
        sw = b.add_switch(f"sw{host}", host=host)
        nic = b.add_switch(f"nic{host}", kind="nic", host=host)
        for r in range(3 * host, 3 * host + 3):
            b.add_link(r, sw, bandwidth=50.0, latency=0.5, kind="nvswitch")
        b.add_link(sw, nic, bandwidth=30.0, latency=0.5, kind="pcie")
    b.add_switch("fabric")
    for host in range(2):
        b.add_link(f"nic{host}", "fabric", bandwidth=12.5, latency=2.0, kind="ib")
    return b.build("two_hosts")


def brute_force(topo, collective: Collective, size: int, root: int = 0) -> float:
    """The cut bound of each collective by enumerating every vertex set (independent of the max-flow code)."""
    graph = topo.graph
    vertices = list(graph)
    n = topo.nranks
    ranks = set(range(n))
    edges = [(u, v, d["bandwidth"] * 1e3) for u, v, d in graph.edges(data=True)]
    per_rank = size / n
    best: dict[str, float] = {}

    def keep(key: str, value: float) -> None:
        best[key] = max(best.get(key, 0.0), value)

    for k in range(1, len(vertices)):
        for members in itertools.combinations(vertices, k):
            s = set(members)
            out = sum(c for u, v, c in edges if u in s and v not in s)
            into = sum(c for u, v, c in edges if u not in s and v in s)
            inside = len(s & ranks)
            if 0 < inside < n:
                keep("ag", per_rank * inside / out)
                keep("rs", per_rank * inside / into)
                keep("a2a", per_rank * inside * (n - inside) / out)
                keep("ar", size / min(out, into))
                if root in s:
                    keep("bcast", size / out)
                    keep("reduce", size / into)
            if root not in s and inside > 0:
                keep("gather", per_rank * inside / out)
                keep("scatter", per_rank * inside / into)
    key = {
        Collective.ALL_GATHER: "ag",
        Collective.REDUCE_SCATTER: "rs",
        Collective.ALL_TO_ALL: "a2a",
        Collective.BROADCAST: "bcast",
        Collective.REDUCE: "reduce",
        Collective.GATHER: "gather",
        Collective.SCATTER: "scatter",
    }
    if collective is Collective.ALL_REDUCE:
        return best.get("ar", 0.0)
    return best.get(key[collective], 0.0)


def spec_for(topo, collective: Collective, root: int = 0) -> CollectiveSpec:
    return CollectiveSpec(collective, topo.nranks, root=root if collective.is_rooted else None)


SMALL = [ring(4), ring(5, bidirectional=False), star(5), line(3), line(4), two_hosts()]


@pytest.mark.parametrize("topo", SMALL, ids=lambda t: t.name)
@pytest.mark.parametrize("collective", list(Collective), ids=lambda c: c.value)
def test_max_flow_equals_brute_force(topo, collective):
    root = topo.nranks - 1
    got = bandwidth_bound(topo, spec_for(topo, collective, root), M)
    want = brute_force(topo, collective, M, root)
    assert got == pytest.approx(want, rel=1e-9)


def test_catalog_topologies_match_brute_force():
    topologies = pytest.importorskip("synccl.topologies")
    get = getattr(topologies, "get_topology", None)
    if get is None:
        pytest.skip("the topology catalog is not available yet")
    for name in ("ring:4", "line:3", "dgx1"):
        try:
            topo = get(name)
        except TopologyError:
            continue
        if len(topo.graph) > 10:
            continue
        for collective in (Collective.ALL_GATHER, Collective.ALL_REDUCE, Collective.BROADCAST, Collective.ALL_TO_ALL):
            assert bandwidth_bound(topo, spec_for(topo, collective), M) == pytest.approx(brute_force(topo, collective, M), rel=1e-9)


@st.composite
def random_topologies(draw):
    """Strongly connected random digraphs: a cycle through every vertex plus random extra links."""
    nranks = draw(st.integers(1, 5))
    nswitch = draw(st.integers(0, 2))
    b = TopologyBuilder()
    for _ in range(nranks):
        b.add_rank()
    vertices: list[int | str] = list(range(nranks)) + [b.add_switch(f"s{i}") for i in range(nswitch)]
    order = draw(st.permutations(vertices))
    bw = st.floats(0.5, 100.0, allow_nan=False)
    lat = st.floats(0.0, 5.0, allow_nan=False)
    if len(order) > 1:
        for u, v in zip(order, order[1:] + order[:1], strict=True):
            b.add_link(u, v, bandwidth=draw(bw), latency=draw(lat), kind="nvlink", bidirectional=False)
    extra = draw(st.lists(st.tuples(st.sampled_from(vertices), st.sampled_from(vertices)), max_size=8))
    for u, v in extra:
        if u != v:
            b.add_link(u, v, bandwidth=draw(bw), latency=draw(lat), kind="nvlink", bidirectional=False)
    return b.build("random")


@settings(max_examples=40, deadline=None)
@given(random_topologies(), st.sampled_from(list(Collective)), st.integers(1, 1 << 30), st.data())
def test_random_topologies_match_brute_force(topo, collective, size, data):
    root = data.draw(st.integers(0, topo.nranks - 1))
    bounds_module._us_per_byte.cache_clear()  # every random topology is named 'random'
    got = bandwidth_bound(topo, spec_for(topo, collective, root), size)
    assert got == pytest.approx(brute_force(topo, collective, size, root), rel=1e-9, abs=1e-12)


# -- known values -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4, 7, 8])
def test_ring_known_values(n):
    uni, bi = ring(n, bidirectional=False), ring(n)
    ag = (n - 1) / n * M / B
    assert bandwidth_bound(uni, "all_gather", M) == pytest.approx(ag, rel=1e-12)
    assert bandwidth_bound(uni, "reduce_scatter", M) == pytest.approx(ag, rel=1e-12)
    assert bandwidth_bound(uni, "all_reduce", M) == pytest.approx(M / B, rel=1e-12)  # one link cuts the ring
    assert phased_all_reduce_bound(uni, M) == pytest.approx(2 * ag, rel=1e-12)
    assert bandwidth_bound(uni, "broadcast", M) == pytest.approx(M / B, rel=1e-12)
    if n > 2:  # ring:2 is a single pair of links, nothing doubles
        assert bandwidth_bound(bi, "all_gather", M) == pytest.approx(ag / 2, rel=1e-12)
        assert bandwidth_bound(bi, "all_reduce", M) == pytest.approx(M / (2 * B), rel=1e-12)
        assert phased_all_reduce_bound(bi, M) == pytest.approx(ag, rel=1e-12)
        assert bandwidth_bound(bi, "broadcast", M) == pytest.approx(M / (2 * B), rel=1e-12)
    assert latency_bound(uni, "all_gather") == pytest.approx(n - 1)
    assert latency_bound(bi, "all_gather") == pytest.approx(n // 2)


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_star_known_values(n):
    topo = star(n)
    share = (n - 1) / n * M / B
    assert bandwidth_bound(topo, "all_gather", M) == pytest.approx(share, rel=1e-12)
    assert bandwidth_bound(topo, "all_to_all", M) == pytest.approx(share, rel=1e-12)  # 17 vertices for n=16: cut family
    assert bandwidth_bound(topo, "broadcast", M) == pytest.approx(M / B, rel=1e-12)
    assert bandwidth_bound(topo, "gather", M) == pytest.approx(share, rel=1e-12)
    assert bandwidth_bound(topo, "scatter", M) == pytest.approx(share, rel=1e-12)
    assert latency_bound(topo, "all_reduce") == pytest.approx(1.0)


def test_rooted_latency_uses_the_root():
    topo = line(4)  # latency 1 per hop
    assert latency_bound(topo, CollectiveSpec(Collective.BROADCAST, 4, root=2)) == pytest.approx(2.0)
    assert latency_bound(topo, CollectiveSpec(Collective.GATHER, 4, root=0)) == pytest.approx(3.0)
    assert latency_bound(topo, "all_to_all") == pytest.approx(3.0)


def test_single_rank_is_free():
    b = TopologyBuilder()
    b.add_rank()
    solo = b.build("solo")
    for collective in Collective:
        bound = lower_bound(solo, collective, 1024)
        assert bound.time_us == 0.0


def test_lower_bound_is_the_max():
    topo = ring(4, latency=50.0)
    small = lower_bound(topo, "all_gather", 1000)
    assert isinstance(small, Bound)
    assert small.time_us == small.latency_us == 100.0
    big = lower_bound(topo, "all_gather", M)
    assert big.time_us == big.bandwidth_us > big.latency_us
    assert big.collective is Collective.ALL_GATHER and big.nranks == 4 and big.size_bytes == M


def test_all_to_all_cut_family_is_valid_and_weaker(monkeypatch):
    exact = {t.name: bandwidth_bound(t, "all_to_all", M) for t in SMALL}
    monkeypatch.setattr(bounds_module, "EXACT_CUT_VERTICES", 0)
    bounds_module._us_per_byte.cache_clear()
    try:
        for topo in SMALL:
            family = bandwidth_bound(topo, "all_to_all", M)
            assert 0 < family <= exact[topo.name] * (1 + 1e-12)
        assert bandwidth_bound(star(5), "all_to_all", M) == pytest.approx(exact["star:5"], rel=1e-12)
        # the host cut is in the family: 9 pairs of ranks talk across the 12.5 GB/s fabric links
        assert bandwidth_bound(two_hosts(), "all_to_all", M) == pytest.approx(exact["two_hosts"], rel=1e-12)
    finally:
        bounds_module._us_per_byte.cache_clear()


# -- errors -----------------------------------------------------------------------------------------


def test_unreachable_pair_is_infeasible():
    topo = line(3, bidirectional=False)  # 0 -> 1 -> 2 only
    assert bandwidth_bound(topo, "broadcast", M) == pytest.approx(M / B, rel=1e-12)
    with pytest.raises(Infeasible, match=r"needs a path 1 -> 0"):
        bandwidth_bound(topo, "gather", M)
    with pytest.raises(Infeasible, match=r"needs a path 1 -> 0"):
        latency_bound(topo, "all_gather")


def test_rank_count_mismatch_and_bad_size():
    with pytest.raises(TopologyError, match=r"8 ranks but topology 'ring:4' has 4"):
        lower_bound(ring(4), CollectiveSpec(Collective.ALL_GATHER, 8), M)
    with pytest.raises(CollectiveError, match="size_bytes"):
        bandwidth_bound(ring(4), "all_gather", 0)


def test_all_to_all_family_finds_the_torus_bisection():
    from synccl.topologies import get_topology

    topo = get_topology("torus2d:8x8")
    assert len(topo.graph) > bounds_module.EXACT_CUT_VERTICES
    bandwidth = next(iter(topo.links())).bandwidth * 1e3
    # rows 0-3 against rows 4-7: 32 * 32 pairs exchange M/64 over 16 links per direction
    assert bandwidth_bound(topo, "all_to_all", M) == pytest.approx(32 * 32 * (M / 64) / (16 * bandwidth), rel=1e-12)
