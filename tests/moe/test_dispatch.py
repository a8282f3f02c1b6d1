"""synccl.moe dispatch and combine on real processes: against a reference, bad input, dying ranks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import synccl
from synccl.exceptions import CommError
from synccl.moe import capacity, combine, dispatch, plan_routing

HERE = Path(__file__).parent
WORKER = HERE / "_worker.py"
FAILURES = HERE / "_failures.py"


@pytest.mark.parametrize("n, local_size", [(2, None), (3, None), (4, 2)], ids=["2", "3", "2x2-nodes"])
def test_dispatch_and_combine_match_the_reference(jobs, n, local_size, no_leftover_segments):
    # 2x2-nodes: MPI between two declared nodes, and the hierarchical 2D all-to-all-v (relays through node leaders).
    proc = jobs.mpiexec(n, WORKER, env={"SYNCCL_LOCAL_SIZE": str(local_size)} if local_size else None, timeout=300)
    results = re.findall(r"RESULT (\d+) (\d+) (\d+)", proc.stdout)
    failures = re.findall(r"FAIL [^\n]*", proc.stdout)
    assert proc.returncode == 0 and not failures, (failures[:5], proc.stderr[-2000:])
    assert sorted(int(r[0]) for r in results) == list(range(n))
    assert all(int(cases) == 144 and failed == "0" for _, cases, failed in results)


@pytest.mark.parametrize("scenario, fragment", [("hidden", "ranks disagree on the hidden size"), ("combine_hidden", "ranks disagree on the hidden size")])
def test_hidden_sizes_that_differ_across_ranks_fail_on_every_rank(jobs, scenario, fragment):
    raised = jobs.raised(jobs.mpiexec(2, FAILURES, scenario, env={"SYNCCL_TIMEOUT": "20"}, timeout=120).stdout)
    assert set(raised) == {0, 1}
    assert all(fragment in message for _, message in raised.values())


def test_bad_input_on_one_rank_makes_the_others_raise_at_once(jobs):
    raised = jobs.raised(jobs.mpiexec(2, FAILURES, "bad_idx", env={"SYNCCL_TIMEOUT": "30"}, timeout=120).stdout)
    assert "is not an expert of 0..3" in raised[1][1]
    seconds, message = raised[0]
    assert seconds < 5 and "rank 1" in message and "is not an expert" in message


def test_a_dying_rank_makes_the_others_raise_naming_it(jobs, no_leftover_segments):
    procs = jobs.spawn(3, FAILURES, "die", env={"SYNCCL_TIMEOUT": "30"})
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert procs[1].returncode == 3
    for rank in (0, 2):
        seconds, message = jobs.raised(outputs[rank])[rank]
        assert seconds < 5 and "rank 1" in message and "died" in message


@pytest.fixture(scope="module")
def comm():
    with synccl.init() as c:
        yield c


X, IDX, W = np.ones((3, 4)), np.array([[0, 1], [1, 0], [0, -1]]), np.full((3, 2), 0.5)
BAD = [
    (lambda c: dispatch(X, np.array([[0, 2], [1, 0], [0, 1]]), W, 2, comm=c), "topk_idx[0, 1] = 2 is not an expert of 0..1"),
    (lambda c: dispatch(X, np.array([[0, -2], [1, 0], [0, 1]]), W, 2, comm=c), "topk_idx[0, 1] = -2"),
    (lambda c: dispatch(X, IDX[:2], W, 2, comm=c), "topk_idx has shape (2, 2), expected (3, k)"),
    (lambda c: dispatch(X, IDX.astype(float), W, 2, comm=c), "topk_idx must hold integers"),
    (lambda c: dispatch(X, IDX, W[:, :1], 2, comm=c), "topk_weights has shape (3, 1), expected (3, 2)"),
    (lambda c: dispatch(np.ones(3), IDX, W, 2, comm=c), "x has shape (3,), expected (T, H)"),
    (lambda c: dispatch(X, IDX, W, 0, comm=c), "num_experts must be a positive integer"),
    (lambda c: dispatch(X, IDX, W, 2, comm=c, capacity_factor=0), "capacity_factor must be a number > 0"),
    (lambda c: dispatch(X, IDX, W.astype(np.int64), 2, comm=c), "topk_weights must hold floats"),
    (lambda c: combine(np.ones((2, 4)), "handle", comm=c), "handle must be what dispatch returned"),
]


@pytest.mark.parametrize("call, fragment", BAD, ids=[f for _, f in BAD])
def test_bad_input_is_one_line(comm, call, fragment):
    with pytest.raises(CommError) as err:
        call(comm)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_combine_checks_the_rows_against_the_handle(comm):
    rows, _, _, _, handle = dispatch(X, IDX, W, 2, comm=comm)
    with pytest.raises(CommError, match=r"y has shape \(2, 4\), expected \(3, H\)"):
        combine(rows[:2], handle, comm=comm)


def test_negative_counts_are_refused_by_alltoallv(comm):
    with pytest.raises(CommError, match="send_counts must be 1 counts >= 0"):
        comm.alltoallv(np.ones(2), [-1], np.ones(2), [2])


def test_capacity_keeps_first_choices_first():
    # Expert 0 can take ceil(1.0 * 4 * 2 / 4) = 2 of rank 0's assignments: tokens 0 and 1's first choices.
    routing = plan_routing(np.array([[0, 1], [0, 1], [0, 1], [1, 0]]), 4, 2, capacity_factor=1.0)
    assert capacity(1.0, 4, 2, 4) == 2
    assert routing.kept.tolist() == [[True, True], [True, False], [False, False], [True, False]]


def test_a_rank_without_tokens_dispatches_and_combines(comm):
    rows, idx, w, per_expert, handle = dispatch(np.ones((0, 4)), np.zeros((0, 2), np.int64), np.zeros((0, 2)), 2, comm=comm)
    assert rows.shape == (0, 4) and idx.shape == (0, 2) and per_expert == [0, 0]
    assert combine(rows, handle, comm=comm).shape == (0, 4)
