"""Failures end in clear errors within the timeout, never a hang, and leave no shared memory behind."""

import os
import re
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


@pytest.fixture(params=["python", "native"])
def engine(request, monkeypatch):
    """Run the scenario's ranks on each engine (the spawned ranks inherit the variable)."""
    monkeypatch.setenv("SYNCCL_ENGINE", request.param)
    return request.param


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


def test_killed_rank_makes_the_others_raise(jobs, engine, no_leftover_segments):
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


def errors(outs) -> dict[int, str]:
    """Rank -> the CommError line it printed."""
    found = {}
    for _, out, _ in outs:
        for line in out.splitlines():
            if line.startswith("COMMERROR "):
                _, rank, message = line.split(" ", 2)
                found[int(rank)] = message
    return found


def elapsed(out: str) -> float:
    return float(next(line.split()[1] for line in out.splitlines() if line.startswith("ELAPSED ")))


@pytest.mark.parametrize(
    ("scenario", "fragment"),
    [
        ("mismatch_size", "ranks disagree on the count: rank 0 has 100, rank 1 has 101"),
        ("mismatch_collective", "ranks disagree on the collective"),
        ("mismatch_op", "ranks disagree on the op"),
        ("mismatch_count", "ranks disagree on the op"),  # rank 1's first call meets rank 0's first
        ("mismatch_root_broadcast", "ranks disagree on the root"),
        ("mismatch_root_reduce", "ranks disagree on the root"),
    ],
)
def test_mismatched_calls_raise_saying_which_argument(jobs, engine, scenario, fragment, no_leftover_segments):
    outs = finish(jobs.spawn(2, FAILURES, scenario))
    found = errors(outs)
    assert set(found) == {0, 1}, [(c, o, e[-800:]) for c, o, e in outs]
    assert any(fragment in m for m in found.values()), found
    assert all(code == 3 for code, _, _ in outs), [(c, o, e[-800:]) for c, o, e in outs]
    # Within a second or two, not at the timeout (20 s): the disagreeing peer tells the other.
    assert max(elapsed(o) for _, o, _ in outs) < 3, found


def test_mismatched_broadcast_roots_never_return_wrong_data(jobs, no_leftover_segments):
    """The non-root in the root's view must not return; the first rank may finish as root, then raises."""
    outs = finish(jobs.spawn(2, FAILURES, "mismatch_root_broadcast"))
    assert all("DONE" not in out for _, out, _ in outs)


@pytest.mark.parametrize("local_size", [None, "2"], ids=["one-node", "two-nodes"])
def test_rank_raising_outside_synccl_fails_its_peers_fast_under_mpiexec(jobs, local_size, no_leftover_segments):
    # Two declared nodes: ranks 2 and 3 learn of rank 1's failure over MPI, not shared memory.
    result = jobs.mpiexec(4, FAILURES, "raise", timeout=120, env={"SYNCCL_LOCAL_SIZE": local_size} if local_size else None)
    # mpiexec forwards the ranks' output as it comes: lines of two ranks may run together.
    reporters = re.findall(r"COMMERROR (\d+) rank \d+: rank 1 raised an exception outside synccl in its call #4[^:]*: ValueError: application bug on rank 1", result.stdout)
    assert sorted(reporters) == ["0", "2", "3"], result.stdout + result.stderr[-2000:]
    times = [float(t) for t in re.findall(r"ELAPSED ([0-9.]+)", result.stdout)]
    assert len(times) == 3 and max(times) < 1.0, times  # was the full timeout (60 s) before


def test_rank_raising_outside_synccl_fails_its_peers_fast_under_torch_env(jobs, no_leftover_segments):
    outs = finish(jobs.spawn(3, FAILURES, "raise"))
    found = errors(outs)
    assert set(found) == {0, 2}, [(c, o, e[-800:]) for c, o, e in outs]
    assert all("rank 1 raised" in m for m in found.values()), found
    assert max(elapsed(outs[r][1]) for r in (0, 2)) < 1.0


def test_rank_ending_with_calls_owed_fails_its_peers(jobs, no_leftover_segments):
    outs = finish(jobs.spawn(2, FAILURES, "exit"))
    found = errors(outs)
    assert "rank 1 left" in found[0] and found[0].endswith("waits for a message from rank 1 on lane 0"), found
    assert elapsed(outs[0][1]) < 3


def test_survivors_name_the_rank_that_failed_first(jobs, engine, no_leftover_segments):
    outs = finish(jobs.spawn(8, FAILURES, "kill", env={"TEST_TIMEOUT": "30"}))
    found = errors(outs)
    assert set(found) == {0, 2, 3, 4, 5, 6, 7}, [(c, o[-300:], e[-300:]) for c, o, e in outs]
    for rank, message in found.items():
        culprit = message.split(": ", 1)[1]
        assert culprit.startswith("rank 1 "), (rank, message)


def test_argument_error_on_one_rank_fails_the_others_naming_it(jobs, no_leftover_segments):
    outs = finish(jobs.spawn(2, FAILURES, "gather_without_recvbuf"))
    found = errors(outs)
    assert set(found) == {0, 1}, [(c, o, e[-1500:]) for c, o, e in outs]
    assert found[0] == "gather: the root needs a recvbuf", found
    assert "rank 0 refused" in found[1] and "gather: the root needs a recvbuf" in found[1], found


def test_refused_call_leaves_the_communicator_usable(jobs, tmp_path, no_leftover_segments):
    """Every rank refusing the same bad call (as torch's tests do) is not a failure: the next call works."""
    script = tmp_path / "refuse.py"
    script.write_text(
        "import numpy as np, synccl\n"
        "from synccl.exceptions import CommError\n"
        "with synccl.init(timeout_s=20) as comm:\n"
        "    try:\n"
        "        comm.allreduce(np.ones(4, np.float32), op='band')\n"
        "    except CommError as err:\n"
        "        print('REFUSED', err)\n"
        "    print('SUM', comm.allreduce(np.ones(4, np.float32)).tolist())\n"
    )
    for code, out, err in finish(jobs.spawn(2, script)):
        assert code == 0, err
        assert "REFUSED all_reduce: op 'band' needs integers or bools, got float32" in out
        assert "SUM [2.0, 2.0, 2.0, 2.0]" in out


def test_late_rank_raises_after_its_peers_failed(jobs, engine, no_leftover_segments):
    outs = finish(jobs.spawn(2, FAILURES, "late", env={"TEST_TIMEOUT": "1", "TEST_LATE": "3"}))
    found = errors(outs)
    assert "timed out after 1 s without progress" in found[0], found
    assert "rank 0 failed in its call #1" in found[1], found  # it used to complete "successfully"


def test_timeout_bounds_the_stall_not_the_call(jobs, engine, no_leftover_segments):
    # Rank 1 is 0.85 s late to a prepared call, which then streams in 1 KiB slices: longer than the
    # 1 s timeout in all, but never a second without progress.
    env = {"TEST_TIMEOUT": "1", "TEST_LATE": "0.85", "TEST_ELEMENTS": str(16 << 20), "SYNCCL_SLICE_BYTES": "1024"}
    if engine == "native":  # the kernel streams this in ~0.05 s: its peer runs the slower Python executor
        env["TEST_RANK1_ENGINE"] = "python"
    outs = finish(jobs.spawn(2, FAILURES, "slow_but_moving", env=env))
    assert all(code == 0 for code, _, _ in outs), [(c, o, e[-800:]) for c, o, e in outs]
    call = float(next(line.split()[1] for line in outs[0][1].splitlines() if line.startswith("CALL ")))
    assert call > 1.0, f"the call ({call:.2f} s) must outlast the timeout for this test to mean anything"


def test_missing_peer_times_out_with_a_located_message(jobs, engine, no_leftover_segments):
    start = time.monotonic()
    outs = finish(jobs.spawn(2, FAILURES, "hang", env={"TEST_TIMEOUT": "2"}))
    code, out, _ = outs[0]
    assert code == 3 and "timed out after 2 s without progress in all_reduce #1" in out and "waits for" in out, out
    assert "PEER 1" in out  # the peer it waits for, as an attribute too
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
        (lambda c: c.broadcast(np.ones(3), root=True), "root must be an integer rank, got True of type bool"),
        (lambda c: c.reduce(np.ones(3), root=1.0), "root must be an integer rank, got 1.0 of type float"),
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


def test_numpy_integer_roots_are_ranks():
    with synccl.init() as comm:
        out = comm.broadcast(np.arange(3.0), root=np.int64(0))
        np.testing.assert_array_equal(out, np.arange(3.0))


def test_calls_after_close_raise():
    comm = synccl.init()
    comm.allreduce(np.ones(3))
    comm.close()
    for call in (lambda: comm.allreduce(np.ones(3)), lambda: comm.barrier(), lambda: comm.empty(4), lambda: comm.send(np.ones(1), 0)):
        with pytest.raises(CommError, match="the communicator is closed"):
            call()


def test_prepared_calls_pin_a_bounded_amount_of_user_memory():
    """A fresh 8 MiB array per call must not stay alive beyond the cache's byte budget."""
    import tracemalloc

    with synccl.init(cache_bytes=32 << 20) as comm:
        tracemalloc.start()
        try:
            for _ in range(40):
                comm.allreduce(np.ones(2 << 20, np.float32))
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert held < 64 << 20, f"{held / 2**20:.0f} MiB still held after 40 calls on fresh 8 MiB arrays"


def test_repeated_large_buffer_stays_prepared():
    """The newest call is kept even beyond the budget, so repeating it does not prepare it again."""
    with synccl.init(cache_bytes=1 << 20) as comm:
        x = np.ones(1 << 20, np.float32)
        comm.allreduce(x)
        first = next(iter(comm._calls.values()))
        comm.allreduce(x)
        assert next(iter(comm._calls.values())) is first


def test_reductions_wrap_and_overflow_without_warnings(jobs, tmp_path):
    """Integers wrap and floats overflow to inf as NCCL's do, and nothing is printed (even with -W error)."""
    script = tmp_path / "overflow.py"
    script.write_text(
        "import numpy as np, synccl\n"
        "with synccl.init() as comm:\n"
        "    a = comm.allreduce(np.full(4, 127, np.int8), np.empty(4, np.int8))\n"
        "    b = comm.allreduce(np.full(4, 6e4, np.float16))\n"
        "print(a.tolist(), b.tolist())\n"
    )
    outs = finish(jobs.spawn(2, script, env={"PYTHONWARNINGS": "error::RuntimeWarning"}))
    for code, out, err in outs:
        assert code == 0 and err == "", err
        assert out.strip() == "[-2, -2, -2, -2] [inf, inf, inf, inf]"
