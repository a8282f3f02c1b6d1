"""Every simulated library algorithm takes at least the lower bound; the ring meets it on a ring."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synccl.collectives import library
from synccl.sim import simulate
from synccl.synth import bandwidth_bound, lower_bound, phased_all_reduce_bound
from synccl.topologies import TopologyBuilder

BOUNDED = ("all_gather", "reduce_scatter", "all_reduce", "broadcast", "reduce")


def build_topology(kind: str, n: int, bandwidth: float, latency: float):
    b = TopologyBuilder()
    for _ in range(n):
        b.add_rank()
    if kind == "star":
        b.add_switch("sw")
        for i in range(n):
            b.add_link(i, "sw", bandwidth=bandwidth, latency=latency, kind="nvswitch")
    elif kind == "full":
        for i in range(n):
            for j in range(i + 1, n):
                b.add_link(i, j, bandwidth=bandwidth, latency=latency, kind="nvlink")
    else:
        for i in range(n if n > 2 or kind == "uniring" else 1):
            b.add_link(i, (i + 1) % n, bandwidth=bandwidth, latency=latency, kind="nvlink", bidirectional=kind == "ring")
    return b.build(f"{kind}:{n}:{bandwidth}:{latency}")


def max_rank_bandwidth(topo) -> float:
    return max(max(sum(link.bandwidth for link in topo.in_links(r)), sum(link.bandwidth for link in topo.out_links(r))) for r in topo.ranks)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["ring", "uniring", "star", "full"]),
    n=st.integers(2, 8),
    size=st.integers(1, 1 << 28),
    bandwidth=st.sampled_from([5.0, 25.0, 150.0]),
    latency=st.sampled_from([0.0, 0.7, 5.0]),
    data=st.data(),
)
def test_simulated_time_respects_the_lower_bound(kind, n, size, bandwidth, latency, data):
    collective = data.draw(st.sampled_from(BOUNDED))
    algorithms = sorted(info.name for info in library.applicable(collective, n))
    name = data.draw(st.sampled_from(algorithms))
    topo = build_topology(kind, n, bandwidth, latency)
    program = library.build(name, collective, nranks=n)
    result = simulate(program, topo, size)
    bound = lower_bound(topo, program.spec, size)
    assert result.time_us > 0
    assert result.time_us >= bound.time_us * (1 - 1e-9)
    if collective in ("all_gather", "reduce_scatter", "all_reduce"):
        assert result.busbw_gbps <= max_rank_bandwidth(topo) * (1 + 1e-9)
    assert simulate(program, topo, size) == result


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 8), size=st.integers(1 << 10, 1 << 28), latency=st.sampled_from([0.0, 1.0]))
def test_ring_all_reduce_meets_the_phased_bound_on_a_ring(n, size, latency):
    """On a unidirectional ring, ring allreduce is optimal among two-phase algorithms: sim = 2(n-1) latency + bound."""
    topo = build_topology("uniring", n, 10.0, latency)
    result = simulate(library.build("ring", "all_reduce", nranks=n), topo, size, local_cost=False)
    assert result.time_us >= bandwidth_bound(topo, "all_reduce", size) * (1 - 1e-9)
    bw = phased_all_reduce_bound(topo, size)
    assert result.time_us >= bw * (1 - 1e-9)
    assert result.time_us == pytest.approx(bw + 2 * (n - 1) * latency, rel=1e-9)
