"""SMT synthesis: SAT/UNSAT boundaries, frontiers, numeric checks of every synthesized Algorithm, errors, CLI."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from synccl.cli import main
from synccl.collectives import Collective, CollectiveSpec, chunk_sources, expected_outputs
from synccl.exceptions import CollectiveError, Infeasible, TopologyError
from synccl.runtime import run_reference
from synccl.synth import pareto_frontier, rounds_per_chunk_bound, steps_lower_bound, synthesize
from synccl.topologies import TopologyBuilder, get_topology


def check_numbers(alg, root=0):
    """The shared invariant: the Algorithm lowers to a verified Program that computes the collective."""
    spec = alg.spec
    rng = np.random.default_rng(0)
    inputs = [rng.integers(0, 100, size=spec.input_chunks).astype(np.int64) for _ in range(spec.nranks)]
    got = run_reference(alg.to_program(), inputs)
    want = expected_outputs(spec.collective, inputs, root=root)
    for rank, (g, w) in enumerate(zip(got, want, strict=True)):
        if w is not None:
            np.testing.assert_array_equal(g, w, err_msg=f"{alg.name} rank {rank}")


# -- SAT / UNSAT boundaries ----------------------------------------------------------------------
# SCCL's issue text claims allgather/reduce_scatter/allreduce are UNSAT in 1 step on
# fully-connected:2. In this model that is false for allgather and reduce_scatter (each rank
# sends its one chunk across the single link); all_reduce, synthesized as reduce_scatter then
# all_gather, needs 2 steps. On DGX-1 (diameter 2) every one of them needs at least 2 steps.


@pytest.mark.parametrize("collective", ["all_gather", "reduce_scatter"])
def test_fully_connected_2_one_step_is_enough(collective):
    alg = synthesize(collective, get_topology("fully-connected:2"), steps=1, rounds=1, chunks=1)
    check_numbers(alg)


def test_all_reduce_on_fully_connected_2_needs_two_steps():
    topo = get_topology("fully-connected:2")
    with pytest.raises(Infeasible, match=r"all_reduce on 'fully-connected:2': no algorithm in 1 step\(s\)"):
        synthesize("all_reduce", topo, steps=1, rounds=1, chunks=1)
    check_numbers(synthesize("all_reduce", topo, steps=2, rounds=2, chunks=1))


@pytest.mark.parametrize("collective", ["all_gather", "reduce_scatter", "all_reduce"])
def test_dgx1_needs_two_steps(collective):
    topo = get_topology("dgx1")
    with pytest.raises(Infeasible, match=r"no algorithm in 1 step\(s\)"):
        synthesize(collective, topo, steps=1, rounds=1, chunks=1)
    steps = 4 if collective == "all_reduce" else 2
    check_numbers(synthesize(collective, topo, steps=steps, rounds=2 * steps, chunks=1))


def test_bandwidth_boundary_on_dgx1():
    topo = get_topology("dgx1")
    with pytest.raises(Infeasible, match=r"no algorithm in 2 step\(s\) and 7 round\(s\) with 6 chunk\(s\)"):
        synthesize("all_gather", topo, steps=2, rounds=7, chunks=6)
    check_numbers(synthesize("all_gather", topo, steps=2, rounds=3, chunks=2))


def test_ring_all_gather_bound_is_tight():
    topo = get_topology("ring:4")
    with pytest.raises(Infeasible):
        synthesize("all_gather", topo, steps=2, rounds=2, chunks=2)  # 3 * 2 chunks into a rank over 2 lanes need 3 rounds
    alg = synthesize("all_gather", topo, steps=2, rounds=3, chunks=2)
    assert (len(alg.steps), alg.total_rounds) == (2, 3)
    check_numbers(alg)


# -- every collective on every test topology ---------------------------------------------------------


@pytest.mark.parametrize("topology", ["ring:4", "fully-connected:4", "dgx1"])
@pytest.mark.parametrize("collective", [c.value for c in Collective])
def test_synthesized_algorithms_compute_the_collective(collective, topology):
    topo = get_topology(topology)
    root = 1 if Collective(collective).is_rooted else 0
    steps = steps_lower_bound(collective, topo, root=root)
    base = Collective.ALL_GATHER if collective == "all_reduce" else Collective(collective)
    per_step = len(chunk_sources(_spec(base, topo.nranks, root)))  # enough rounds for every chunk on one link
    alg = synthesize(collective, topo, steps=steps, rounds=steps * per_step, chunks=1, root=root)
    assert len(alg.steps) == steps
    check_numbers(alg, root=root)


def _spec(collective, n, root):
    return CollectiveSpec(collective, n, root=root if collective.is_rooted else None)


# -- frontiers --------------------------------------------------------------------------------------


def test_ring_4_frontier():
    result = pareto_frontier("all_gather", get_topology("ring:4"), max_chunks=3)
    assert [(p.steps, p.rounds, p.chunks) for p in result.points] == [(2, 3, 2)]
    assert all(p.proven for p in result.points) and not result.unproven
    check_numbers(result.points[0].algorithm)


def test_dgx1_all_gather_frontier_is_scccls():
    result = pareto_frontier("all_gather", get_topology("dgx1"))
    assert [(p.steps, p.rounds, p.chunks) for p in result.points] == [(2, 3, 2), (3, 7, 6)]
    assert all(p.proven for p in result.points)
    # every candidate stricter than 3/2 at 2 steps was refuted
    refuted = {Fraction(a.rounds, a.chunks) for a in result.trail if a.steps == 2 and a.sat is False}
    assert refuted == {Fraction(7, 6), Fraction(6, 5), Fraction(5, 4), Fraction(4, 3), Fraction(7, 5)}
    for point in result.points:
        check_numbers(point.algorithm)


def test_reduce_scatter_frontier_is_the_dual():
    result = pareto_frontier("reduce_scatter", get_topology("ring:4"), max_chunks=2)
    assert [(p.steps, p.rounds, p.chunks) for p in result.points] == [(2, 3, 2)]
    assert all(t.reduce for s in result.points[0].algorithm.steps for t in s.transfers)
    check_numbers(result.points[0].algorithm)


def test_rounds_per_chunk_bound():
    assert rounds_per_chunk_bound("all_gather", get_topology("dgx1")) == Fraction(7, 6)
    assert rounds_per_chunk_bound("all_gather", get_topology("ring:4")) == Fraction(3, 2)


# -- bad input ---------------------------------------------------------------------------------------


def _two_islands():
    b = TopologyBuilder()
    for _ in range(4):
        b.add_rank()
    b.add_link(0, 1, bandwidth=10.0, latency=1.0, kind="nvlink")
    b.add_link(2, 3, bandwidth=10.0, latency=1.0, kind="nvlink")
    return b.build("islands")


def _star():
    b = TopologyBuilder()
    for _ in range(3):
        b.add_rank()
    b.add_switch("sw")
    for r in range(3):
        b.add_link(r, "sw", bandwidth=10.0, latency=1.0, kind="nvswitch")
    return b.build("star:3")


def test_bad_input():
    ring = get_topology("ring:4")
    with pytest.raises(CollectiveError, match="chunks must be an integer >= 1, got 0"):
        synthesize("all_gather", ring, steps=2, rounds=2, chunks=0)
    with pytest.raises(CollectiveError, match="rounds must be >= steps"):
        synthesize("all_gather", ring, steps=3, rounds=2, chunks=1)
    with pytest.raises(Infeasible, match="rank 2 cannot be reached from rank 0"):
        synthesize("all_gather", _two_islands(), steps=2, rounds=2, chunks=1)
    with pytest.raises(TopologyError, match="switchless topologies only"):
        synthesize("all_gather", _star(), steps=2, rounds=2, chunks=1)


def test_all_reduce_frontier_composes_the_halves():
    """Within reduce-scatter + allgather algorithms: the best split of steps between the halves."""
    result = pareto_frontier("all_reduce", get_topology("fully-connected:4"), max_chunks=3)
    halves = [pareto_frontier(c, get_topology("fully-connected:4"), max_chunks=3) for c in ("reduce_scatter", "all_gather")]
    best_half = [Fraction(h.points[-1].rounds, h.points[-1].chunks) for h in halves]
    last = result.points[-1]
    assert Fraction(last.rounds, last.chunks) == sum(best_half)
    assert all(p.proven for p in result.points)
    for point in result.points:
        check_numbers(point.algorithm)


# -- CLI ------------------------------------------------------------------------------------------------


def test_cli_pareto_json(capsys):
    assert main(["synth", "all_gather", "--topology", "ring:4", "--pareto", "--max-chunks", "2", "--json"]) == 0
    out, err = capsys.readouterr()
    payload = json.loads(out)
    assert [(p["steps"], p["rounds"], p["chunks"]) for p in payload["frontier"]] == [(2, 3, 2)]
    assert payload["collective"] == "all_gather" and payload["topology"] == "ring:4"
    assert "SAT in" in err


def test_cli_single_instance_writes_xml_and_reports_unsat(capsys, tmp_path):
    out = tmp_path / "ag.xml"
    assert main(["synth", "all_gather", "--topology", "ring:4", "--steps", "2", "--rounds", "3", "--chunks", "2", "-o", str(out)]) == 0
    assert out.read_text().startswith("<algo")
    assert main(["synth", "all_gather", "--topology", "ring:4", "--steps", "2", "--rounds", "2", "--chunks", "2"]) == 2
    assert "UNSAT" in capsys.readouterr().err
    assert main(["synth", "all_gather", "--topology", "ring:4", "--steps", "2"]) == 2


def test_all_to_all_on_a_line_relays_through_scratch():
    """line:3 in 2 steps: rank 1 must hold the chunks 0 and 2 exchange in scratch on the way."""
    program = synthesize("all_to_all", get_topology("line:3"), steps=2, rounds=2, chunks=1).to_program()
    assert [rp.scratch_chunks for rp in program.ranks] == [0, 2, 0]
    check_numbers(synthesize("all_to_all", get_topology("line:3"), steps=2, rounds=2, chunks=1))
    with pytest.raises(Infeasible):
        synthesize("all_to_all", get_topology("line:3"), steps=1, rounds=1, chunks=1)
