"""Run an MSCCL XML file on real ranks and check its numbers: what ``synccl run`` does.

:func:`launch_xml` reads the file once (bounded) and checks it in this process, then starts
``nranks`` ranks under mpiexec on a private copy of exactly the bytes it checked; each rank runs
``python -m synccl._xml_worker``, which imports the copy with :func:`synccl.load_xml` (so the
runtime selects it), calls the collective with random data in the file's mode (in place or out
of place, its root) through :func:`check_program_on_ranks`, and compares with
:func:`~synccl.collectives.expected_outputs` (:func:`count_wrong`). Rank 0 prints ``PASS ...`` or
``FAIL: ...`` with the time per call and the bus bandwidth. The job's exit status is one of
:data:`EXIT_STATUSES`, whatever mpiexec returned.

``synccl bench`` reuses :func:`count_wrong` and :func:`lanes_needed` from here.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, TextIO

import numpy as np

from synccl._files import read_limited
from synccl._launch import run_ranks
from synccl.collectives import Collective, Program, ReduceOp, XmlError, expected_outputs, from_msccl_xml
from synccl.collectives._msccl_xml import MAX_XML_BYTES
from synccl.exceptions import ProgramError
from synccl.runtime import IN_PLACE, from_environment
from synccl.sim import busbw_factor
from synccl.units import format_size, parse_dtype

__all__ = [
    "EXIT_STATUSES",
    "XmlRunResult",
    "check_program_on_ranks",
    "count_wrong",
    "element_count",
    "job_status",
    "lanes_needed",
    "launch_xml",
]

logger = logging.getLogger(__name__)

#: Collectives whose largest buffer holds ``nranks`` shares (nccl-tests' ``size`` is that buffer).
_SHARED_OUT = (Collective.ALL_GATHER, Collective.GATHER, Collective.REDUCE_SCATTER, Collective.SCATTER, Collective.ALL_TO_ALL)
_SPLIT_IN = (Collective.REDUCE_SCATTER, Collective.SCATTER, Collective.ALL_TO_ALL)
_OPS = ("sum", "prod", "min", "max", "avg")
# Relative tolerance of reductions in floating point (the order of combination differs between algorithms and backends).
_RTOL = {"float16": 1e-2, "bfloat16": 2e-2, "float32": 1e-5, "float64": 1e-12}

#: ``synccl run``'s exit statuses, as the README promises them.
EXIT_STATUSES = {0: "every rank's output was right", 1: "some output was wrong", 2: "bad input or a rejected file", 3: "a runtime failure"}
_RUNTIME_FAILURE = 3


@dataclass(frozen=True, slots=True)
class XmlRunResult:
    """One checked (and optionally timed) run of a Program on every rank (the same on every rank).

    ``wrong`` counts wrong output elements over all ranks, ``wrong_ranks`` lists the ranks
    that had any; ``time_us`` is the slowest rank's mean time per call (``None`` without timed
    iterations); bandwidths follow nccl-tests (``size_bytes`` is the larger buffer).
    """

    program: str
    collective: Collective
    nranks: int
    inplace: bool
    root: int | None
    count: int
    size_bytes: int
    dtype: str
    op: str
    wrong: int
    wrong_ranks: tuple[int, ...]
    time_us: float | None
    algbw_gbps: float | None
    busbw_gbps: float | None

    def describe(self) -> str:
        """One line: ``PASS name: all_reduce in place, 8 ranks, 1MiB float32 sum: 812.3 us, algbw 1.291 GB/s, busbw 2.259 GB/s``."""
        mode = "in place" if self.inplace else "out of place"
        root = f" root {self.root}" if self.root is not None else ""
        what = f"{self.program}: {self.collective.value} {mode}{root}, {self.nranks} ranks, {format_size(self.size_bytes)} {self.dtype}"
        if self.collective.is_combining:
            what += f" {self.op}"
        timing = ""
        if self.time_us is not None:
            timing = f": {self.time_us:.1f} us, algbw {self.algbw_gbps:.3f} GB/s, busbw {self.busbw_gbps:.3f} GB/s"
        if self.wrong:
            return f"FAIL: {what}: {self.wrong} wrong element(s) on rank(s) {list(self.wrong_ranks)}{timing}"
        return f"PASS {what}{timing}"


def element_count(program: Program, size_bytes: int, itemsize: int) -> int:
    """Elements per share for a message of ``size_bytes`` (nccl-tests: the larger buffer's bytes).

    Raises
    ------
    ValueError
        If the size leaves less than one element per share.

    Examples
    --------
    >>> from synccl.collectives import library
    >>> element_count(library.build("ring", "all_gather", 4), 1 << 20, 4)
    65536
    """
    total = size_bytes // itemsize
    count = total // program.nranks if program.collective in _SHARED_OUT else total
    if count < 1:
        smallest = itemsize * (program.nranks if program.collective in _SHARED_OUT else 1)
        raise ValueError(f"run: size {size_bytes!r} bytes is too small for {program.collective.value} on {program.nranks} ranks (at least {smallest})")
    return count


def count_wrong(got: np.ndarray, want: np.ndarray, *, op: ReduceOp, reduces: bool) -> int:
    """Elements of ``got`` that differ from ``want`` (within a tolerance for floating-point reductions).

    Examples
    --------
    >>> count_wrong(np.array([1.0, 2.0], np.float16), np.array([1.001, 3.0], np.float16), op="sum", reduces=True)
    1
    """
    if got.shape != want.shape:
        raise ValueError(f"check: output has shape {got.shape}, expected {want.shape}")
    rtol = _RTOL.get(np.dtype(want.dtype).name)
    if reduces and rtol is not None and op in ("sum", "prod", "avg"):
        ok = np.isclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=0.0, equal_nan=True)
    else:
        ok = got == want
    return int(got.size - np.count_nonzero(ok))


def lanes_needed(program: Program) -> int:
    """The ``SYNCCL_MAX_LANES`` a Program needs: its lanes plus the runtime's point-to-point lane.

    >>> from synccl.collectives import library
    >>> lanes_needed(library.build("ring", "all_reduce", 4, channels=3))
    4
    """
    return program.nlanes + 1


def _inputs(collective: Collective, nranks: int, count: int, dtype: np.dtype, op: str, seed: int) -> list[np.ndarray]:
    """Every rank's random input (small integers, so every reduction order gives the same result)."""
    size = count * nranks if collective in _SPLIT_IN else count
    low, high = (1, 3) if op == "prod" else (-3, 4) if collective.is_combining else (0, 97)
    return [np.random.default_rng([seed, r]).integers(low, high, size=size).astype(dtype) for r in range(nranks)]


class _Call:
    """One collective on fixed buffers in the Program's mode; ``__call__`` runs it and returns the output."""

    def __init__(self, comm: Any, program: Program, mine: np.ndarray, count: int, op: str) -> None:
        self.comm, self.op, self.coll = comm, op, program.collective
        self.inplace, self.root = program.spec.inplace, program.spec.root or 0
        n, r = comm.size, comm.rank
        c = self.coll
        if self.inplace and c in (Collective.GATHER, Collective.SCATTER):
            raise ProgramError(f"run: {program.name!r} is an in-place {c.value}; the runtime's API calls {c.value} only out of place")
        self.send = mine
        if c is Collective.ALL_GATHER and self.inplace:
            self.recv = np.empty(n * count, mine.dtype)
            self.recv[r * count : (r + 1) * count] = mine
            self.send = IN_PLACE
        elif self.inplace:
            self.recv = None
        else:
            out = n * count if c in (Collective.ALL_GATHER, Collective.GATHER, Collective.ALL_TO_ALL) else count
            self.recv = np.empty(out, mine.dtype) if (c is not Collective.GATHER or r == self.root) else None

    def __call__(self) -> np.ndarray | None:
        comm, c, op, root, send, recv = self.comm, self.coll, self.op, self.root, self.send, self.recv
        if c is Collective.ALL_REDUCE:
            return comm.allreduce(send, recv, op=op)
        if c is Collective.ALL_GATHER:
            return comm.allgather(send, recv)
        if c is Collective.REDUCE_SCATTER:
            return comm.reduce_scatter(send, recv, op=op)
        if c is Collective.ALL_TO_ALL:
            return comm.alltoall(send, recv)
        if c is Collective.BROADCAST:
            return comm.broadcast(send, root=root, recvbuf=recv)
        if c is Collective.REDUCE:
            return comm.reduce(send, recv, root=root, op=op)
        if c is Collective.GATHER:
            return comm.gather(send, recv, root=root)
        return comm.scatter(send, recv, root=root)


def check_program_on_ranks(comm: Any, program: Program, *, count: int, dtype: str = "float32", op: ReduceOp = "sum", iters: int = 0, seed: int = 0) -> XmlRunResult:
    """Run ``program`` (registered with the runtime) once on random data, check it, then time ``iters`` calls.

    Every rank of ``comm`` must call it. The call is made in the Program's mode (in place or out
    of place, at its root), so the runtime selects the registered Program; with ``SYNCCL_ALGORITHM``
    set, or another Program registered later for the same calls, something else would run.

    Parameters
    ----------
    comm : Communicator
        From :func:`synccl.init`, of ``program.nranks`` ranks.
    program : Program
        Registered with :func:`synccl.runtime.register_program` or :func:`synccl.load_xml`.
    count : int
        Elements per share (see :func:`element_count`); need not divide by the chunk factor.
    dtype, op : str
        Element type (:func:`~synccl.units.parse_dtype` names) and reduction.
    iters : int
        Timed calls after the checked one (0: only check).
    seed : int
        Seed of the random inputs.

    Returns
    -------
    XmlRunResult
        The same on every rank.

    Raises
    ------
    ProgramError
        If the Program's rank count differs from the job's, or it is an in-place gather/scatter.
    ValueError
        On an unknown dtype or op, or ``count < 1``.
    """
    if comm.size != program.nranks:
        raise ProgramError(f"run: {program.name!r} is for {program.nranks} ranks, the job has {comm.size}")
    if op not in _OPS:
        raise ValueError(f"run: unknown op {op!r}; valid: {', '.join(_OPS)}")
    if count < 1 or iters < 0:
        raise ValueError(f"run: need count >= 1 and iters >= 0, got {count!r} and {iters!r}")
    np_dtype = parse_dtype(dtype)
    coll, root = program.collective, program.spec.root
    inputs = _inputs(coll, comm.size, count, np_dtype, op, seed)
    want = expected_outputs(coll, inputs, op=op, root=root or 0)[comm.rank]
    call = _Call(comm, program, inputs[comm.rank].copy(), count, op)
    got = call()
    wrong = 0 if want is None else count_wrong(np.asarray(got).reshape(-1), want, op=op, reduces=coll.is_combining)
    per_rank = np.zeros(comm.size, np.int64)
    per_rank[comm.rank] = wrong
    per_rank = comm.allreduce(per_rank, np.empty_like(per_rank), algorithm="one_shot")
    time_us = algbw = busbw = None
    largest = count * comm.size if coll in _SHARED_OUT else count
    size_bytes = largest * np_dtype.itemsize
    if iters:
        comm.barrier()
        start = perf_counter()
        for _ in range(iters):
            call()
        elapsed = np.array([(perf_counter() - start) / iters])
        time_us = float(comm.allreduce(elapsed, np.empty_like(elapsed), op="max", algorithm="one_shot")[0]) * 1e6
        algbw = size_bytes / time_us / 1e3 if time_us > 0 else float("inf")
        busbw = algbw * busbw_factor(coll, comm.size)
    return XmlRunResult(
        program=program.name,
        collective=coll,
        nranks=comm.size,
        inplace=program.spec.inplace,
        root=root,
        count=count,
        size_bytes=size_bytes,
        dtype=np_dtype.name,
        op=op,
        wrong=int(per_rank.sum()),
        wrong_ranks=tuple(int(r) for r in np.flatnonzero(per_rank)),
        time_us=time_us,
        algbw_gbps=algbw,
        busbw_gbps=busbw,
    )


def launch_xml(path: str, nranks: int | None = None, *, size_bytes: int = 1 << 20, dtype: str = "float32", op: ReduceOp = "sum", iters: int = 5, stdout: TextIO | int | None = None) -> int:
    """Check the MSCCL XML file ``path`` here, then run it on ``nranks`` local ranks under mpiexec.

    The file is read once; the ranks load a private copy of the bytes checked here, so a file
    rewritten meanwhile cannot give them another Program. ``SYNCCL_MAX_LANES`` is raised for the
    ranks to what the file needs (:func:`lanes_needed`); ``SYNCCL_ALGORITHM`` is dropped so the
    runtime selects the file's Program.

    Parameters
    ----------
    path : str
        The XML file.
    nranks : int, optional
        Must equal the file's ``ngpus`` (the default).
    size_bytes, dtype, op, iters
        Message size in nccl-tests' convention, element type, reduction, timed calls.
    stdout : file or int, optional
        Where the ranks' standard output goes.

    Returns
    -------
    int
        The job's exit status, one of :data:`EXIT_STATUSES` (see :func:`job_status`): 0 if every
        rank's output was right, 1 if some was wrong, 2 if the ranks refused the input, 3 on a
        runtime failure (a rank crashed, or mpiexec failed).

    Raises
    ------
    XmlError, VerificationError
        If the file cannot be read, is malformed or its Program is wrong (nothing is launched).
    ValueError
        If ``nranks``, the size, dtype or op do not fit the file.
    """
    data = read_limited(path, limit=MAX_XML_BYTES, what="MSCCL XML", error=XmlError)
    name = os.path.basename(path)
    program = from_msccl_xml(data, source=name)
    if nranks is None:
        nranks = program.nranks
    if nranks != program.nranks:
        raise ProgramError(f"run: {path!r} is for {program.nranks} ranks (ngpus), not --nranks {nranks}")
    if program.spec.inplace and program.collective in (Collective.GATHER, Collective.SCATTER):
        raise ProgramError(f"run: {program.name!r} is an in-place {program.collective.value}; the runtime's API calls {program.collective.value} only out of place")
    if op not in _OPS:
        raise ValueError(f"run: unknown op {op!r}; valid: {', '.join(_OPS)}")
    if iters < 0:
        raise ValueError(f"run: iters must be >= 0, got {iters!r}")
    count = element_count(program, size_bytes, parse_dtype(dtype).itemsize)
    env = {k: v for k, v in os.environ.items() if k != "SYNCCL_ALGORITHM"}
    env["SYNCCL_MAX_LANES"] = str(max(from_environment().max_lanes, lanes_needed(program)))
    with tempfile.TemporaryDirectory(prefix="synccl-run-") as private:
        copy = Path(private) / name  # the same base name: the same default Program name
        copy.write_bytes(data)
        job = json.dumps({"path": str(copy), "count": count, "dtype": dtype, "op": op, "iters": iters})
        logger.info("run: SYNCCL_MAX_LANES=%s", env["SYNCCL_MAX_LANES"])
        return job_status(run_ranks(nranks, "synccl._xml_worker", job, env=env, stdout=stdout, purpose="run"))


def job_status(returncode: int) -> int:
    """``synccl run``'s exit status for mpiexec's: one of :data:`EXIT_STATUSES`.

    The ranks exit 0, 1, 2 or 3 (:mod:`synccl._xml_worker`); anything else is mpiexec's (hydra
    exits 255 when a rank was killed, or on its own failure) or a signal's, and counts as a runtime
    failure, logged with the raw value.

    Examples
    --------
    >>> job_status(0), job_status(1), job_status(255), job_status(-9)
    (0, 1, 3, 3)
    """
    if returncode in EXIT_STATUSES:
        return returncode
    logger.warning("run: the job failed: mpiexec exited with status %d (a rank crashed or was killed, or mpiexec itself failed)", returncode)
    return _RUNTIME_FAILURE
