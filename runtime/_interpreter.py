"""A single-process interpreter that runs a Program on numpy arrays.

It follows the same execution order and opcode semantics as the verifier
(:func:`synccl.collectives.schedule` and ``replay``), but moves real numbers, so tests can
compare a Program's numeric result with :func:`synccl.collectives.expected_outputs`.

Chunk layout: a buffer is a sequence of *shares* of ``m`` elements (one share for buffers of
``chunk_factor`` chunks, ``n`` shares for buffers of ``n * chunk_factor`` chunks); share ``s``
is cut into ``chunk_factor`` chunks at ``[j*m//c, (j+1)*m//c)``, so sizes need not divide evenly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synccl.collectives import Buffer, Event, Program, Slice, verify
from synccl.collectives._execution import replay, schedule
from synccl.collectives._oracle import REDUCE_OPS, ReduceOp, _divide
from synccl.exceptions import CollectiveError

__all__ = ["run_reference"]


class _NumpyMachine:
    def __init__(self, program: Program, inputs: Sequence[np.ndarray], op: ReduceOp) -> None:
        spec = program.spec
        self.spec = spec
        self.combine_fn = REDUCE_OPS[op]
        c = spec.chunk_factor
        in_shares = spec.input_chunks // c
        out_shares = spec.output_chunks // c
        sizes = {np.asarray(a).size for a in inputs}
        if len(inputs) != spec.nranks or len(sizes) != 1:
            raise CollectiveError(f"run_reference: need {spec.nranks} inputs of one size, got sizes {[np.asarray(a).size for a in inputs]}")
        total = sizes.pop()
        if total % in_shares:
            raise CollectiveError(f"run_reference: input size {total} is not divisible into {in_shares} equal shares")
        self.share = total // in_shares
        dtype = np.result_type(*[np.asarray(a).dtype for a in inputs])
        self.buffers: list[dict[Buffer, np.ndarray]] = []
        for rank in range(spec.nranks):
            bufs = {Buffer.OUTPUT: np.zeros(out_shares * self.share, dtype=dtype)}
            bufs[Buffer.INPUT] = np.zeros(in_shares * self.share, dtype=dtype)
            self.buffers.append(bufs)
            source = np.asarray(inputs[rank]).ravel()
            for k in range(spec.input_chunks):  # place the input where in-place aliasing puts it
                buf, idx = spec.resolve(rank, Buffer.INPUT, k)
                lo, hi = self._bounds(Buffer.INPUT, k)
                blo, bhi = self._bounds(buf, idx)
                bufs[buf][blo:bhi] = source[lo:hi]
        self.scratch: dict[tuple[int, int], np.ndarray] = {}

    def _bounds(self, buffer: Buffer, index: int) -> tuple[int, int]:
        c, m = self.spec.chunk_factor, self.share
        share, j = divmod(index, c)
        return share * m + j * m // c, share * m + (j + 1) * m // c

    def _chunks(self, rank: int, where: Slice) -> list[tuple[Buffer, int]]:
        return [self.spec.resolve(rank, where.buffer, i) for i in range(where.index, where.index + where.count)]

    def read(self, event: Event, rank: int, where: Slice) -> tuple[np.ndarray, ...]:
        out = []
        for buf, idx in self._chunks(rank, where):
            if buf is Buffer.SCRATCH:
                out.append(self.scratch[rank, idx].copy())
            else:
                lo, hi = self._bounds(buf, idx)
                out.append(self.buffers[rank][buf][lo:hi].copy())
        return tuple(out)

    def write(self, event: Event, rank: int, where: Slice, value: tuple[np.ndarray, ...]) -> None:
        for (buf, idx), data in zip(self._chunks(rank, where), value, strict=True):
            if buf is Buffer.SCRATCH:
                self.scratch[rank, idx] = data.copy()
            else:
                lo, hi = self._bounds(buf, idx)
                self.buffers[rank][buf][lo:hi] = data

    def combine(self, event: Event, local: tuple[np.ndarray, ...], received: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        return tuple(self.combine_fn(a, b) for a, b in zip(local, received, strict=True))

    # Compute steps: the reference runs the collective alone, on inputs already produced; the
    # kernels themselves are the caller's (synccl.overlap runs them).
    def produce(self, event: Event, rank: int, where: Slice) -> tuple[np.ndarray, ...]:
        return self.read(event, rank, where)

    def consume(self, event: Event, rank: int, value: tuple[np.ndarray, ...]) -> None:
        return None


def run_reference(program: Program, inputs: Sequence[np.ndarray], *, op: ReduceOp = "sum") -> list[np.ndarray]:
    """Verify ``program``, run it on every rank's 1-D input, and return every rank's output buffer.

    Out of place the inputs are left as they are; in place the returned arrays are the buffers
    after aliasing (allgather's output, reduce-scatter's slot of the input).

    >>> import numpy as np
    >>> from synccl.collectives import library
    >>> prog = library.build("ring", "all_reduce", 3)
    >>> [o.tolist() for o in run_reference(prog, [np.arange(3) * (r + 1) for r in range(3)])]
    [[0, 6, 12], [0, 6, 12], [0, 6, 12]]
    """
    if op not in REDUCE_OPS:
        raise CollectiveError(f"run_reference: unknown op {op!r}; valid: {', '.join(REDUCE_OPS)}")
    verify(program)
    machine = _NumpyMachine(program, inputs, op)
    replay(schedule(program), machine)
    spec = program.spec
    outputs = []
    for rank in range(spec.nranks):
        first_buf, first_idx = spec.resolve(rank, Buffer.OUTPUT, 0)
        lo, _ = machine._bounds(first_buf, first_idx)
        last_buf, last_idx = spec.resolve(rank, Buffer.OUTPUT, spec.output_chunks - 1)
        _, hi = machine._bounds(last_buf, last_idx)
        out = machine.buffers[rank][first_buf][lo:hi].copy()
        if op == "avg" and spec.collective.is_combining:
            out = _divide(out, spec.nranks)
        outputs.append(out)
    return outputs
