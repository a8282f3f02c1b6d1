"""The all-to-all flow LP: bounds, routes, chunk rounding, steps, lowered Programs, errors, real ranks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synccl.collectives import save_msccl_xml, verify
from synccl.exceptions import CollectiveError, Infeasible, SolverTimeout, TopologyError
from synccl.sim import simulate
from synccl.synth import bandwidth_bound
from synccl.synth._flow import flow_all_to_all
from synccl.synth._flow_lowering import chunk_id, path_loads
from synccl.synth._routes import logical_network
from synccl.topologies import TopologyBuilder, get_topology, multinode

SMALL = ["ring:4", "line:3", "fully-connected:4", "star:4", "dgx1"]


def small_multinode():
    """Two hosts of two NVLinked ranks, one NIC each, on one rail: 4 ranks."""
    return multinode(get_topology("fully-connected:2"), 2, nics_per_node=1)


def rank_cut_bound(topology, traffic) -> float:
    """µs per unit from single-rank cuts: what a rank sends over its out-links, receives over its in-links."""
    best = 0.0
    for r in topology.ranks:
        out = sum(link.bandwidth for link in topology.out_links(r)) * 1e3
        into = sum(link.bandwidth for link in topology.in_links(r)) * 1e3
        best = max(best, (traffic[r].sum() - traffic[r, r]) / out, (traffic[:, r].sum() - traffic[r, r]) / into)
    return best


def check_schedule(plan) -> None:
    """Routes and chunk routes are consistent, and the steps deliver every chunk along its path in order."""
    n, c = plan.nranks, plan.chunks
    net = logical_network(plan.topology)
    for (s, d), paths in plan.routes.items():
        assert plan.traffic[s, d] > 0
        assert sum(f for _, f in paths) == pytest.approx(1.0)
        for path, f in paths:
            assert f > 0 and path[0] == s and path[-1] == d and len(set(path)) == len(path)
            assert all((u, v) in net.edges for u, v in zip(path, path[1:], strict=False))
    assert set(plan.chunk_routes) == set(plan.routes)
    for pair, paths in plan.chunk_routes.items():
        assert sum(k for _, k in paths) == c
        assert {p for p, _ in paths} <= {p for p, _ in plan.routes[pair]}
    want = {chunk_id(s, d, k, n, c): path for (s, d), paths in plan.chunk_routes.items() for path, k in _expand(paths)}
    moved: dict[int, list[tuple[int, int, int]]] = {}
    for index, step in enumerate(plan.steps()):
        edges = [(t.src, t.dst) for t in step.transfers]
        assert len(edges) == len(set(edges)), "an edge carries two chunks in one step"
        for t in step.transfers:
            moved.setdefault(t.chunk, []).append((index, t.src, t.dst))
    assert set(moved) == set(want)
    for chunk, hops in moved.items():
        assert [index for index, _, _ in hops] == sorted({index for index, _, _ in hops}), "a relay forwards before it received"
        assert (hops[0][1], *[dst for _, _, dst in hops]) == want[chunk]
    loads = path_loads(net, ((path, k * plan.traffic[pair] / c) for pair, paths in plan.chunk_routes.items() for path, k in paths))
    assert plan.achieved == pytest.approx(float(np.max(loads / (net.capacity * 1e3), initial=0.0)))


def _expand(paths):
    k = 0
    for path, count in paths:
        for _ in range(count):
            yield path, k
            k += 1


# -- bounds ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SMALL)
def test_lp_optimum_meets_the_cut_bound_on_symmetric_topologies(name):
    topo = get_topology(name)
    size = 1 << 24
    plan = flow_all_to_all(topo)
    assert plan.method == "flat" and plan.bound_kind == "lp"
    assert plan.bound_us(size) == pytest.approx(bandwidth_bound(topo, "all_to_all", size), rel=1e-6)
    assert plan.route_time == pytest.approx(plan.bound, rel=1e-5)  # the detour removal may use 1e-6 of slack
    assert plan.achieved >= plan.bound * (1 - 1e-9)
    assert plan.gap < 0.01
    check_schedule(plan)


@pytest.mark.parametrize("name", SMALL)
def test_lowered_programs_verify_and_compute_all_to_all(name, check_program):
    plan = flow_all_to_all(get_topology(name))
    check_program(plan.to_program())
    check_program(plan.to_algorithm().to_program())


@pytest.mark.parametrize(("name", "chunks"), [("ring:4", 2), ("line:3", 3), ("dgx1", 4)])
def test_chunk_factors_lower_and_compute(name, chunks, check_program):
    plan = flow_all_to_all(get_topology(name), chunks=chunks)
    assert plan.chunks == chunks and plan.to_program().spec.chunk_factor == chunks
    check_schedule(plan)
    check_program(plan.to_program())


@pytest.mark.parametrize("name", ["ring:4", "line:3", "dgx1"])
def test_simulated_time_of_the_program_is_near_the_bound(name):
    topo = get_topology(name)
    size = 1 << 26
    plan = flow_all_to_all(topo)
    result = simulate(plan.to_program(), topo, size)
    assert plan.bound_us(size) * (1 - 1e-9) <= result.time_us <= plan.bound_us(size) * 1.02


# -- multi-host ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["flat", "hierarchical"])
def test_small_multinode_both_methods(method, check_program):
    topo = small_multinode()
    plan = flow_all_to_all(topo, method=method)
    assert plan.method == method
    assert plan.bound_kind == ("lp" if method == "flat" else "cut")
    assert plan.bound * (1 - 1e-9) <= plan.achieved <= plan.bound * 1.01
    check_schedule(plan)
    check_program(plan.to_program())


def test_hierarchical_meets_the_flat_lp_on_a_two_nic_multinode():
    topo = multinode(get_topology("ring:4"), 2, nics_per_node=2)
    flat = flow_all_to_all(topo, method="flat")
    hier = flow_all_to_all(topo, method="hierarchical")
    assert hier.achieved == pytest.approx(flat.bound, rel=1e-6)
    assert hier.bound <= flat.bound * (1 + 1e-9)
    check_schedule(hier)
    verify(hier.to_program())


def test_auto_is_flat_on_small_problems():
    assert flow_all_to_all(small_multinode()).method == "flat"
    assert flow_all_to_all(get_topology("ring:4")).method == "flat"


# -- skewed traffic ----------------------------------------------------------------------------------------


def moe_traffic(n: int, seed: int = 0) -> np.ndarray:
    """Every rank routes its tokens to experts (one per rank) of zipf popularity."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n + 1) ** 1.2
    popularity = popularity[rng.permutation(n)]
    return np.outer(rng.uniform(0.5, 1.5, n), popularity / popularity.sum()) * n


@pytest.mark.parametrize("name", ["ring:4", "dgx1", "fully-connected:4"])
def test_skewed_traffic_gets_a_valid_schedule_above_the_link_load_bound(name):
    topo = get_topology(name)
    traffic = moe_traffic(topo.nranks)
    plan = flow_all_to_all(topo, traffic)
    assert not plan.uniform
    check_schedule(plan)
    assert plan.bound >= rank_cut_bound(topo, plan.traffic) * (1 - 1e-9)
    assert plan.achieved >= plan.bound * (1 - 1e-9)
    assert plan.gap < 0.05
    program = plan.to_program()  # the alltoallv's Program: verified for any block sizes, run with the call's counts
    verify(program)
    assert program.name.startswith("flow_all_to_allv") and json.loads(dict(program.metadata)["traffic"]) == plan.traffic.tolist()


def test_skewed_traffic_hierarchical():
    topo = small_multinode()
    plan = flow_all_to_all(topo, moe_traffic(4, seed=3), method="hierarchical")
    check_schedule(plan)
    assert plan.achieved >= rank_cut_bound(topo, plan.traffic) * (1 - 1e-9)


def test_scaling_traffic_scales_times_and_keeps_routes():
    topo = get_topology("dgx1")
    plan = flow_all_to_all(topo, moe_traffic(8))
    double = flow_all_to_all(topo, 2 * moe_traffic(8))
    assert double.bound == pytest.approx(2 * plan.bound, rel=1e-6)


def test_zero_traffic_and_one_rank():
    plan = flow_all_to_all(get_topology("ring:4"), np.zeros((4, 4)))
    assert plan.bound == plan.achieved == 0.0 and not plan.routes
    b = TopologyBuilder()
    b.add_rank()
    alone = flow_all_to_all(b.build("alone"))
    assert alone.uniform and alone.achieved == 0.0
    verify(alone.to_program())


# -- errors --------------------------------------------------------------------------------------------------


def test_disconnected_topology_is_infeasible_naming_it():
    b = TopologyBuilder()
    for _ in range(4):
        b.add_rank()
    b.add_link(0, 1, bandwidth=10.0, latency=1.0, kind="nvlink")
    b.add_link(2, 3, bandwidth=10.0, latency=1.0, kind="nvlink")
    with pytest.raises(Infeasible, match=r"flow_all_to_all on 'islands': .*no route 0 -> 2") as err:
        flow_all_to_all(b.build("islands"))
    assert "\n" not in str(err.value)


def test_zero_bandwidth_link_is_infeasible_naming_it():
    b = TopologyBuilder()
    for _ in range(3):
        b.add_rank()
    b.add_link(0, 1, bandwidth=10.0, latency=1.0, kind="nvlink")
    b.add_link(1, 2, bandwidth=10.0, latency=1.0, kind="nvlink")
    topo = b.build("dead-link")
    topo.graph.edges[1, 2]["bandwidth"] = 0.0  # the builder refuses it; a mutated graph must be caught too
    with pytest.raises(Infeasible, match=r"flow_all_to_all on 'dead-link': .*link 1 -> 2 .*bandwidth 0.0"):
        flow_all_to_all(topo)


def test_time_limit_raises_solver_timeout_naming_the_topology():
    with pytest.raises(SolverTimeout, match="flow_all_to_all on 'ring:4'"):
        flow_all_to_all(get_topology("ring:4"), time_limit=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"traffic": np.ones((3, 3))}, "must be 4 x 4"),
        ({"traffic": -np.ones((4, 4))}, "finite and >= 0"),
        ({"traffic": "lots"}, "numeric matrix"),
        ({"chunks": 0}, "chunks must be an integer"),
        ({"time_limit": -1}, "time_limit must be"),
        ({"method": "magic"}, "method must be"),
    ],
)
def test_bad_requests_are_one_line_errors(kwargs, match):
    with pytest.raises(CollectiveError, match=match):
        flow_all_to_all(get_topology("ring:4"), **kwargs)


def test_hierarchical_needs_several_hosts():
    with pytest.raises(TopologyError, match="spans several hosts"):
        flow_all_to_all(get_topology("ring:4"), method="hierarchical")


# -- properties ----------------------------------------------------------------------------------------------


@st.composite
def connected_topologies(draw):
    """2-5 ranks on a random bidirectional spanning tree plus random one-way links, maybe a switch."""
    n = draw(st.integers(2, 5))
    bandwidths = st.sampled_from([5.0, 10.0, 25.0, 50.0])
    b = TopologyBuilder()
    for _ in range(n):
        b.add_rank()
    for v in range(1, n):
        b.add_link(draw(st.integers(0, v - 1)), v, bandwidth=draw(bandwidths), latency=1.0, kind="nvlink")
    for _ in range(draw(st.integers(0, n))):
        u, v = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        if u != v:
            b.add_link(u, v, bandwidth=draw(bandwidths), latency=1.0, kind="nvlink", bidirectional=False)
    if draw(st.booleans()):
        b.add_switch("sw")
        for r in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True)):
            b.add_link(r, "sw", bandwidth=draw(bandwidths), latency=0.5, kind="nvswitch")
    return b.build(f"random-{n}")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topo=connected_topologies(), skewed=st.booleans())
def test_random_connected_topologies(topo, skewed):
    n = topo.nranks
    traffic = moe_traffic(n, seed=n) if skewed else None
    plan = flow_all_to_all(topo, traffic)
    cut = rank_cut_bound(topo, plan.traffic)
    assert plan.bound >= cut * (1 - 1e-6)
    if not skewed:
        assert plan.bound >= bandwidth_bound(topo, "all_to_all", n) * (1 - 1e-6)
    verify(plan.to_program())
    assert plan.achieved >= plan.bound * (1 - 1e-6)
    check_schedule(plan)


# -- real ranks --------------------------------------------------------------------------------------------------


def test_synthesized_all_to_all_runs_on_local_ranks(tmp_path):
    xml = tmp_path / "flow.xml"
    save_msccl_xml(flow_all_to_all(get_topology("ring:4"), chunks=2).to_program(), xml)
    ran = subprocess.run(
        [sys.executable, "-m", "synccl", "run", str(xml), "--nranks", "4", "--size", "64K", "--iters", "2"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert ran.returncode == 0 and "PASS" in ran.stdout, (ran.stdout[-2000:], ran.stderr[-2000:])


@pytest.mark.parametrize("name, chunks", [("ring:4", 2), ("line:3", 1), ("torus2d:2x3", 1)])
def test_skewed_schedules_run_through_alltoallv_with_relays(name, chunks):
    """The LP's Program for a skewed traffic matrix, relays included, runs with each call's counts."""
    n = get_topology(name).nranks
    worker = Path(__file__).with_name("_alltoallv_worker.py")
    ran = subprocess.run([str(Path(sys.executable).with_name("mpiexec")), "-n", str(n), sys.executable, str(worker), name, str(chunks)], capture_output=True, text=True, check=False, timeout=300)
    results = re.findall(r"RESULT (\d+) (\d+) (\d+) relays (\d+)", ran.stdout)
    assert ran.returncode == 0 and "FAIL" not in ran.stdout, (ran.stdout[-2000:], ran.stderr[-2000:])
    assert sorted(int(r[0]) for r in results) == list(range(n))
    assert all(cases == "8" and failed == "0" and int(relays) > 0 for _, cases, failed, relays in results)
