"""Run an MSCCL XML file on real ranks and check its numbers: what ``synccl run`` does.

:func:`launch_xml` checks the file in this process, then starts ``nranks`` ranks under mpiexec;
each rank runs ``python -m synccl.bench._xml_worker``, which imports the file with
:func:`synccl.load_xml` (so the runtime selects it), calls the collective with random data in the
file's mode (in place or out of place, its root) through :func:`check_program_on_ranks`, and
compares with :func:`~synccl.collectives.expected_outputs`. Rank 0 prints ``PASS ...`` or
``FAIL: ...`` with the time per call and the bus bandwidth.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from time import perf_counter
from typing import Any, TextIO

import numpy as np

from synccl.bench._backends import lanes_needed
from synccl.bench._config import parse_dtype
from synccl.bench._launch import find_mpiexec
from synccl.bench._layout import count_wrong
from synccl.collectives import Collective, Program, ReduceOp, expected_outputs, load_msccl_xml
from synccl.exceptions import ProgramError
from synccl.runtime import IN_PLACE, from_environment
from synccl.sim import busbw_factor
from synccl.units import format_size

__all__ = ["XmlRunResult", "check_program_on_ranks", "element_count", "launch_xml"]

logger = logging.getLogger(__name__)

#: Collectives whose largest buffer holds ``nranks`` shares (nccl-tests' ``size`` is that buffer).
_SHARED_OUT = (Collective.ALL_GATHER, Collective.GATHER, Collective.REDUCE_SCATTER, Collective.SCATTER, Collective.ALL_TO_ALL)
_SPLIT_IN = (Collective.REDUCE_SCATTER, Collective.SCATTER, Collective.ALL_TO_ALL)
_OPS = ("sum", "prod", "min", "max", "avg")


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
        Element type (:func:`~synccl.bench.parse_dtype` names) and reduction.
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

    ``SYNCCL_MAX_LANES`` is raised for the ranks to what the file needs (:func:`lanes_needed`);
    ``SYNCCL_ALGORITHM`` is dropped so the runtime selects the file's Program.

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
        The job's exit status: 0 if every rank's output was right, 1 if some was wrong, 2 if the
        ranks refused the input, 3 on a runtime failure (other values if a rank crashed).

    Raises
    ------
    XmlError, VerificationError
        If the file is malformed or its Program is wrong (nothing is launched).
    ValueError
        If ``nranks``, the size, dtype or op do not fit the file.
    """
    program = load_msccl_xml(path)
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
    settings = from_environment()
    env = {k: v for k, v in os.environ.items() if k != "SYNCCL_ALGORITHM"}
    env["SYNCCL_MAX_LANES"] = str(max(settings.max_lanes, lanes_needed(program)))
    job = json.dumps({"path": str(path), "count": count, "dtype": dtype, "op": op, "iters": iters})
    command = [find_mpiexec(), "-n", str(nranks), sys.executable, "-m", "synccl.bench._xml_worker", job]
    logger.info("run: SYNCCL_MAX_LANES=%s %s", env["SYNCCL_MAX_LANES"], " ".join(command))
    return subprocess.run(command, stdout=stdout, env=env, check=False).returncode
