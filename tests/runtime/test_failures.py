"""Failures end in clear errors within the timeout, never a hang, and leave no shared memory behind."""

import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest

import synccl
from synccl.exceptions import CommError, VerificationError
from synccl.runtime import register_program, remove_stale_segments
from synccl.runtime._shm import SHM_DIR, Segment

FAILURES = Path(__file__).with_name("_failures.py")


def finish(procs, timeout=60):
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except Exception:
            p.kill()
            out, err = p.communicate()
        outs.append((p.returncode, out, err))
    return outs


def test_killed_rank_makes_the_others_raise(jobs, no_leftover_segments):
    start = time.monotonic()
    procs = jobs.spawn(3, FAILURES, "kill", env={"TEST_TIMEOUT": "30"})
    outs = finish(procs)
    elapsed = time.monotonic() - start
    assert outs[1][0] == -9
    for rank in (0, 2):
        code, out, err = outs[rank]
        assert code == 3, (code, out, err[-1500:])
        assert "COMMERROR" in out and ("rank 1" in out) and ("died" in out or "failed" in out), out
    assert elapsed < 25, f"peers took {elapsed:.1f}s to notice a dead rank"


@pytest.mark.parametrize(
    ("scenario", "fragment"),
    [
        ("mismatch_size", "not in the same collective call"),
        ("mismatch_collective", "not in the same collective call"),
        ("mismatch_op", "not in the same collective call"),
    ],
)
def test_mismatched_calls_raise(jobs, scenario, fragment, no_leftover_segments):
    outs = finish(jobs.spawn(2, FAILURES, scenario))
    messages = [out for _, out, _ in outs]
    assert any(fragment in m for m in messages), [(c, o, e[-800:]) for c, o, e in outs]
    assert all(code in (3,) for code, _, _ in outs), [(c, o, e[-800:]) for c, o, e in outs]


def test_missing_peer_times_out_with_a_located_message(jobs, no_leftover_segments):
    start = time.monotonic()
    outs = finish(jobs.spawn(2, FAILURES, "hang", env={"TEST_TIMEOUT": "2"}))
    code, out, _ = outs[0]
    assert code == 3 and "timed out after 2 s in all_reduce #1" in out and "waits for" in out, out
    assert time.monotonic() - start < 30


def test_stale_segments_of_dead_jobs_are_removed():
    # A segment named after a process that no longer exists.
    dead_pid = 2**22 + 12345
    path = SHM_DIR / f"synccl-{dead_pid}-deadbeef"
    path.write_bytes(b"x")
    assert remove_stale_segments() >= 1
    assert not path.exists()


def test_segments_are_private_and_unguessable():
    a, b = Segment.create(4096), Segment.create(4096)
    try:
        mode = stat.S_IMODE(os.stat(SHM_DIR / a.name).st_mode)
        assert mode == 0o600
        assert a.name != b.name and len(a.name.split("-")[-1]) == 24
    finally:
        a.unlink()
        b.unlink()


def test_attach_refuses_foreign_names():
    with pytest.raises(ValueError, match="refusing segment name"):
        Segment.attach("../etc/passwd", 10)


def test_unverifiable_program_is_refused_before_anything_runs():
    from dataclasses import replace

    from synccl.collectives import library

    prog = library.build("ring", "all_reduce", 1)
    broken = replace(prog, spec=replace(prog.spec, nranks=2))
    with pytest.raises(VerificationError):
        register_program(broken)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda c: c.allreduce([1, 2, 3]), "sendbuf must be a numpy array or a CPU torch tensor, got list"),
        (lambda c: c.allreduce(np.ones((4, 4))[:, 0]), "must be contiguous"),
        (lambda c: c.allreduce(np.ones(3), np.ones(4)), "sendbuf (3 x float64) and recvbuf (4 x float64) differ"),
        (lambda c: c.allreduce(np.ones(3), op="xor"), "unknown op 'xor'"),
        (lambda c: c.allreduce(np.ones(3, dtype=np.complex64)), "dtype complex64"),
        (lambda c: c.broadcast(np.ones(3), root=4), "root must be a rank in 0..0, got 4"),
        (lambda c: c.allreduce(np.ones(3), algorithm="spiral"), "no algorithm 'spiral' for all_reduce"),
        (lambda c: c.alltoallv(np.ones(3), [2], np.ones(3), [3]), "send_counts must be 1 counts >= 0 summing to 3"),
        (lambda c: c.allreduce(np.ones(2, dtype=bool)), "op 'sum' is not defined on bool"),
    ],
)
def test_bad_arguments_are_named(call, fragment):
    with synccl.init() as comm:
        with pytest.raises(CommError) as err:
            call(comm)
        assert fragment in str(err.value)
