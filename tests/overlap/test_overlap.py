"""synccl.overlap on real processes: results against numpy, bad input, failing and dying ranks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import synccl
from synccl.exceptions import CommError
from synccl.overlap import all_gather_matmul, matmul_reduce_scatter

HERE = Path(__file__).parent
WORKER = HERE / "_worker.py"
FAILURES = HERE / "_failures.py"


def _assert_all_ranks_pass(proc, n: int) -> None:
    results = re.findall(r"RESULT (\d+) (\d+) (\d+)", proc.stdout)
    failures = re.findall(r"FAIL [^\n]*", proc.stdout)
    assert proc.returncode == 0 and not failures, (proc.returncode, failures[:5], proc.stderr[-2000:])
    assert sorted(int(r[0]) for r in results) == list(range(n)), proc.stdout[-2000:]
    assert all(int(cases) > 150 and failed == "0" for _, cases, failed in results)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_overlapped_results_equal_the_unfused_computation(jobs, n, no_leftover_segments):
    _assert_all_ranks_pass(jobs.mpiexec(n, WORKER, timeout=300), n)


def test_many_tiles_per_block(jobs):
    # 256-byte slots cut every block into many tiles: the compute stream runs tile by tile.
    _assert_all_ranks_pass(jobs.mpiexec(3, WORKER, env={"SYNCCL_SLICE_BYTES": "256"}, timeout=300), 3)


def test_shapes_that_differ_across_ranks_raise_on_every_rank_naming_them(jobs):
    proc = jobs.mpiexec(2, FAILURES, "mismatch", env={"SYNCCL_TIMEOUT": "20"}, timeout=120)
    raised = jobs.raised(proc.stdout)
    assert set(raised) == {0, 1}, proc.stdout + proc.stderr[-2000:]
    for _, message in raised.values():
        assert "ranks disagree" in message and "(3, 8)" in message and "(4, 8)" in message


def test_a_scatter_dim_that_does_not_split_is_named(jobs):
    raised = jobs.raised(jobs.mpiexec(2, FAILURES, "scatter_rows", timeout=120).stdout)
    assert set(raised) == {0, 1} and all("does not split among 2 ranks" in m for _, m in raised.values())


def test_bad_input_on_one_rank_makes_the_others_raise_at_once(jobs):
    raised = jobs.raised(jobs.mpiexec(2, FAILURES, "bad_dim", env={"SYNCCL_TIMEOUT": "30"}, timeout=120).stdout)
    assert "gather_dim 5 does not exist" in raised[1][1]
    seconds, message = raised[0]
    assert seconds < 5 and "rank 1" in message and "gather_dim 5" in message


def test_a_compute_step_that_raises_stops_every_peer_quickly(jobs, no_leftover_segments):
    proc = jobs.mpiexec(3, FAILURES, "raise_scatter", env={"SYNCCL_TIMEOUT": "30"}, timeout=120)
    raised = jobs.raised(proc.stdout)
    assert set(raised) == {0, 1, 2}, proc.stdout + proc.stderr[-2000:]
    assert "injected failure in the second block" in raised[1][1]
    for rank in (0, 2):
        seconds, message = raised[rank]
        assert seconds < 5 and "rank 1 failed" in message


def test_a_dying_rank_makes_the_others_raise_naming_it(jobs, no_leftover_segments):
    procs = jobs.spawn(3, FAILURES, "die", env={"SYNCCL_TIMEOUT": "30"})
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert procs[1].returncode == 3
    for rank in (0, 2):
        raised = jobs.raised(outputs[rank])
        assert rank in raised, outputs[rank]
        seconds, message = raised[rank]
        assert seconds < 5 and "rank 1" in message and "died" in message


@pytest.fixture(scope="module")
def comm():
    with synccl.init() as c:
        yield c


BAD = [
    (lambda c: all_gather_matmul(np.ones((2, 3)), [np.ones((3, 2))], 2, comm=c), "gather_dim 2 does not exist"),
    (lambda c: all_gather_matmul(np.ones((2, 3)), [np.ones((3, 2))], -1, comm=c), "contracted (last) dimension"),
    (lambda c: all_gather_matmul(np.ones((2, 3)), [np.ones((3, 2), np.float32)], 0, comm=c), "dtype mismatch"),
    (lambda c: all_gather_matmul(np.ones((2, 3)), [np.ones((4, 2))], 0, comm=c), "bs[0] has shape (4, 2), expected (3, N)"),
    (lambda c: all_gather_matmul(np.ones((2, 3)), np.ones((3, 2)), 0, comm=c), "bs must be a non-empty list"),
    (lambda c: all_gather_matmul(np.ones(3), [np.ones((3, 2))], 0, comm=c), "at least 2 dimensions"),
    (lambda c: all_gather_matmul(np.ones((2, 3)), [np.ones((3, 2))], 0.0, comm=c), "gather_dim must be an integer"),
    (lambda c: all_gather_matmul(np.ones((2, 3)), [np.ones((3, 2))], 0, comm=c, splits=0), "splits must be an integer >= 1"),
    (lambda c: all_gather_matmul([[1.0]], [np.ones((1, 1))], 0, comm=c), "must be a numpy array or a CPU torch tensor"),
    (lambda c: all_gather_matmul(np.ones((2, 3)), [np.ones((3, 2))], 0, comm="world"), "comm must be a synccl Communicator"),
    (lambda c: matmul_reduce_scatter(np.ones((2, 3)), np.ones((3, 2)), 0, op="max", comm=c), "op must be 'sum' or 'avg'"),
    (lambda c: matmul_reduce_scatter(np.ones((2, 3)), np.ones((2, 2)), 0, comm=c), "b has shape (2, 2), expected (3, N)"),
]


@pytest.mark.parametrize("call, fragment", BAD, ids=[f for _, f in BAD])
def test_bad_input_is_one_line_naming_the_argument(comm, call, fragment):
    with pytest.raises(CommError) as err:
        call(comm)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_without_a_communicator_or_group_the_error_says_what_to_pass():
    with pytest.raises(CommError, match="pass comm="):
        all_gather_matmul(np.ones((2, 3)), [np.ones((3, 2))], 0)


def test_the_python_executor_refuses_overlap_in_one_line(monkeypatch):
    monkeypatch.setenv("SYNCCL_ENGINE", "python")
    with synccl.init() as c, pytest.raises(CommError, match="runs on the native engine") as err:
        all_gather_matmul(np.ones((2, 3)), [np.ones((3, 2))], 0, comm=c)
    assert "\n" not in str(err.value)


def test_torch_bfloat16_tensors(comm):
    torch = pytest.importorskip("torch")
    a = torch.arange(12, dtype=torch.float32).reshape(4, 3).to(torch.bfloat16)
    b = torch.ones(3, 2, dtype=torch.bfloat16)
    full, (c,) = all_gather_matmul(a, [b], 0, comm=comm, splits=2)
    assert full.dtype == torch.bfloat16 and torch.equal(full, a)
    assert torch.equal(c, a @ b)  # integers below 256: exact in bfloat16
    assert torch.equal(matmul_reduce_scatter(a, b, 0, comm=comm), a @ b)


class _ProgressSeenLate:
    """A channel-state table whose first read of the position predates the kernel's last step (the window of the race)."""

    def __init__(self, final: int) -> None:
        self.final, self.reads = final, 0

    def __getitem__(self, key: object) -> int:
        self.reads += 1
        return 0 if self.reads == 1 else self.final


def test_a_kernel_that_finishes_between_two_looks_is_not_taken_for_a_failed_one():
    import threading

    from synccl.runtime._overlap import _wait_for

    finished = threading.Thread(target=lambda: None)
    finished.start()
    finished.join()
    # Read 1: not there yet; then the thread is seen gone; read 2: the kernel had completed the step.
    assert _wait_for(_ProgressSeenLate(final=3), ((0, 3),), finished) is True
    # Gone short of the step: the caller raises (never computes on data that did not arrive).
    assert _wait_for(_ProgressSeenLate(final=2), ((0, 3),), finished) is False
