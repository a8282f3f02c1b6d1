"""Buffer sizes in nccl-tests' convention, deterministic test data; the #wrong count is :func:`synccl._xml_run.count_wrong`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synccl._xml_run import count_wrong  # the one #wrong count, shared with synccl run
from synccl.collectives import Collective, ReduceOp, expected_outputs

__all__ = ["Layout", "layout", "rank_input", "expected_output", "count_wrong"]

_SPLIT = (Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_TO_ALL)


@dataclass(frozen=True, slots=True)
class Layout:
    """The buffers of one collective call at one size, as nccl-tests sets them up.

    ``count`` is what nccl-tests prints in its ``count`` column (the per-rank element count passed
    to the collective), ``send_count`` and ``recv_count`` are the lengths of the out-of-place buffers.
    """

    collective: Collective
    nranks: int
    itemsize: int
    count: int
    send_count: int
    recv_count: int

    @property
    def size_bytes(self) -> int:
        """nccl-tests' ``size`` column: the larger buffer in bytes."""
        return max(self.send_count, self.recv_count) * self.itemsize

    @property
    def inplace_count(self) -> int:
        """Length of the single buffer of the in-place call."""
        return max(self.send_count, self.recv_count)

    def input_slot(self, rank: int) -> slice:
        """Where ``rank``'s input lies inside the in-place buffer (its slot for all_gather)."""
        if self.collective is Collective.ALL_GATHER:
            return slice(rank * self.count, (rank + 1) * self.count)
        return slice(0, self.send_count)

    def output_slot(self, rank: int) -> slice:
        """Where ``rank``'s output lies inside the in-place buffer (its slot for reduce_scatter)."""
        if self.collective is Collective.REDUCE_SCATTER:
            return slice(rank * self.count, (rank + 1) * self.count)
        return slice(0, self.recv_count)


def layout(collective: Collective, size_bytes: int, nranks: int, itemsize: int) -> Layout:
    """The buffers nccl-tests uses for ``size_bytes`` (its ``-b``/``-e`` sizes).

    all_reduce and broadcast move one buffer of ``size_bytes``; all_gather (output), reduce_scatter
    (input) and all_to_all (both) have ``nranks`` blocks of ``count`` elements each, ``count`` rounded
    down to a multiple of 16 bytes as nccl-tests does.

    Parameters
    ----------
    collective : Collective
        One of the benchmarked collectives.
    size_bytes : int
        Requested size.
    nranks : int
        Number of ranks.
    itemsize : int
        Bytes per element.

    Returns
    -------
    Layout
        The element counts.

    Examples
    --------
    >>> lay = layout(Collective.ALL_GATHER, 4096, 2, 4)
    >>> lay.count, lay.send_count, lay.recv_count, lay.size_bytes
    (512, 512, 1024, 4096)
    >>> layout(Collective.ALL_REDUCE, 4096, 2, 4).count
    1024
    """
    total = size_bytes // itemsize
    if collective not in _SPLIT:
        return Layout(collective, nranks, itemsize, total, total, total)
    base = (total // nranks) & ~(max(16 // itemsize, 1) - 1)
    send = base if collective is Collective.ALL_GATHER else base * nranks
    recv = base if collective is Collective.REDUCE_SCATTER else base * nranks
    return Layout(collective, nranks, itemsize, base, send, recv)


def rank_input(lay: Layout, rank: int, dtype: np.dtype, op: ReduceOp) -> np.ndarray:
    """``rank``'s deterministic input: small integers, so every backend's reduction is exact.

    Reductions use 0..4 (products 1..2), so sums of up to 64 ranks stay exact even in bfloat16;
    data movement uses 0..96 so misplaced blocks show.

    Examples
    --------
    >>> rank_input(layout(Collective.ALL_REDUCE, 16, 2, 4), 1, np.dtype(np.float32), "sum")
    array([4., 1., 3., 0.], dtype=float32)
    """
    index = np.arange(lay.send_count, dtype=np.int64)
    if lay.collective.is_combining and op == "prod":
        values = 1 + (index + rank) % 2
    elif lay.collective.is_combining:
        values = (index * 7 + rank * 13 + 1) % 5
    else:
        values = (index * 7 + rank * 13 + 1) % 97
    return values.astype(dtype)


def expected_output(lay: Layout, rank: int, dtype: np.dtype, op: ReduceOp, root: int) -> np.ndarray:
    """``rank``'s correct output for the inputs of :func:`rank_input`, from the numpy reference."""
    inputs = [rank_input(lay, r, dtype, op) for r in range(lay.nranks)]
    want = expected_outputs(lay.collective, inputs, op=op, root=root)[rank]
    if want is None:
        raise ValueError(f"bench: {lay.collective.value} leaves rank {rank}'s output unconstrained")
    return want
