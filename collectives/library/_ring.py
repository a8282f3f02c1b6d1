"""Ring algorithms: allgather, reduce-scatter and allreduce over k parallel rings.

Ring ``j`` runs on lane ``j`` and moves chunk ``b * channels + j`` of every block ``b``; with
``bidirectional=True`` odd rings turn the other way, which uses both directions of every link.
Each ring step moves ``1/(n * channels)`` of the data, so allreduce takes ``2(n-1)`` steps and
sends ``2(n-1)/n`` of the buffer per rank: bandwidth-optimal on a ring.
"""

from __future__ import annotations

from collections.abc import Callable

from synccl.collectives._dsl import ChunkRef, chunk, program
from synccl.collectives._program import Program
from synccl.collectives._spec import Buffer, CollectiveSpec
from synccl.collectives.library._registry import register
from synccl.exceptions import CollectiveError

__all__ = ["ring_all_gather", "ring_reduce_scatter", "ring_all_reduce"]


def _order(nranks: int, ring: int, bidirectional: bool) -> list[int]:
    """Rank order of ring ``ring``: forward, or backward for odd rings when bidirectional."""
    forward = list(range(nranks))
    return forward[::-1] if bidirectional and ring % 2 else forward


def _reduce_around(order: list[int], pos: int, idx: int, lane: int, place: Callable[[int], ChunkRef]) -> ChunkRef:
    """Reduce chunk ``idx`` around the ring: start after ``order[pos]``, end complete at it.

    ``place(rank)`` says where each rank keeps its partial sum.
    """
    n = len(order)
    c = chunk(order[(pos + 1) % n], Buffer.INPUT, idx)
    for step in range(2, n + 1):
        rank = order[(pos + step) % n]
        c = chunk(rank, Buffer.INPUT, idx).reduce(c, into=place(rank), lane=lane)
    return c


def _pass_around(c: ChunkRef, order: list[int], pos: int, idx: int, lane: int) -> None:
    """Send ``c`` from ``order[pos]`` once around the ring into every other rank's ``output[idx]``."""
    n = len(order)
    for step in range(1, n):
        c = c.copy(order[(pos + step) % n], Buffer.OUTPUT, idx, lane=lane)


def _ring_orders(nranks: int, channels: int, bidirectional: bool, order: tuple[int, ...] | None) -> list[list[int]]:
    """Each ring's rank order: ``order`` (a permutation of the ranks) if given, else 0..n-1."""
    if order is None:
        return [_order(nranks, j, bidirectional) for j in range(channels)]
    if sorted(order) != list(range(nranks)):
        raise CollectiveError(f"ring order must be a permutation of 0..{nranks - 1}, got {tuple(order)!r}")
    forward = list(order)
    return [forward[::-1] if bidirectional and j % 2 else forward for j in range(channels)]


def _check_pieces(pieces: int) -> None:
    if not isinstance(pieces, int) or isinstance(pieces, bool) or pieces < 1:
        raise CollectiveError(f"ring: pieces must be an integer >= 1, got {pieces!r}")


def _check_channels(channels: int, bidirectional: bool) -> None:
    if not isinstance(channels, int) or channels < 1:
        raise CollectiveError(f"ring: channels must be an integer >= 1, got {channels!r}")
    if bidirectional and channels < 2:
        raise CollectiveError(f"ring: bidirectional=True turns every odd ring around, so it needs channels >= 2, got {channels}")


@register("ring", "all_gather", "k rings; n-1 steps, bandwidth-optimal on a ring")
def ring_all_gather(
    nranks: int, *, channels: int = 1, bidirectional: bool = False, inplace: bool = False, pieces: int = 1, order: tuple[int, ...] | None = None
) -> Program:
    """Ring allgather on ``channels`` parallel rings.

    Every rank must call the collective; the input is not modified. Each ring moves its part of
    a block as ``pieces`` chunks one after another, so a receiver can use the first piece while
    the next is in flight (overlapped all-gather + matmul); ``order`` is the ring's rank order.

    >>> ring_all_gather(4, channels=2).spec.chunk_factor
    2
    >>> ring_all_gather(3, pieces=2, order=(0, 2, 1)).ranks[0].channels[0].send_peer
    2
    """
    _check_channels(channels, bidirectional)
    _check_pieces(pieces)
    n, k, m = nranks, channels, pieces
    spec = CollectiveSpec("all_gather", n, chunk_factor=k * m, inplace=inplace)
    suffix = f"_p{m}" if m > 1 else ""
    with program(f"ring_all_gather_n{n}_c{k}{suffix}", spec) as p:
        for j, ring in enumerate(_ring_orders(n, k, bidirectional, order)):
            for pos, owner in enumerate(ring):
                for i in range(m):
                    c = chunk(owner, Buffer.INPUT, j * m + i)
                    if not inplace:
                        c = c.copy(owner, Buffer.OUTPUT, (owner * k + j) * m + i)
                    _pass_around(c, ring, pos, (owner * k + j) * m + i, j)
    return p.program


@register("ring", "reduce_scatter", "k rings; n-1 steps, bandwidth-optimal on a ring")
def ring_reduce_scatter(
    nranks: int, *, channels: int = 1, bidirectional: bool = False, inplace: bool = False, pieces: int = 1, order: tuple[int, ...] | None = None
) -> Program:
    """Ring reduce-scatter on ``channels`` parallel rings.

    Partial sums travel around the ring and end, complete, at the rank that owns the block.
    Out of place, intermediate partials live in scratch so the input stays untouched. Each ring
    moves its part of a block as ``pieces`` chunks one after another (so a matmul can produce the
    next piece while the first travels); ``order`` is the ring's rank order.

    >>> ring_reduce_scatter(3).num_instructions()
    9
    >>> ring_reduce_scatter(2, pieces=3).spec.chunk_factor
    3
    """
    _check_channels(channels, bidirectional)
    _check_pieces(pieces)
    n, k, m = nranks, channels, pieces
    spec = CollectiveSpec("reduce_scatter", n, chunk_factor=k * m, inplace=inplace)
    suffix = f"_p{m}" if m > 1 else ""
    with program(f"ring_reduce_scatter_n{n}_c{k}{suffix}", spec) as p:
        for j, ring in enumerate(_ring_orders(n, k, bidirectional, order)):
            for pos, owner in enumerate(ring):
                for i in range(m):
                    idx, out = (owner * k + j) * m + i, j * m + i
                    if n == 1:
                        if not inplace:
                            chunk(owner, Buffer.INPUT, idx).copy(owner, Buffer.OUTPUT, out)
                        continue

                    def place(rank: int, owner: int = owner, idx: int = idx, out: int = out) -> ChunkRef:
                        # Out of place, partials live in scratch so the input stays untouched.
                        return p.ref(rank, Buffer.OUTPUT, out) if rank == owner else p.ref(rank, Buffer.INPUT if inplace else Buffer.SCRATCH, idx)

                    _reduce_around(ring, pos, idx, j, place)
    return p.program


@register("ring", "all_reduce", "k rings; reduce-scatter then allgather, 2(n-1) steps")
def ring_all_reduce(nranks: int, *, channels: int = 1, bidirectional: bool = False, inplace: bool = False) -> Program:
    """Ring allreduce (reduce-scatter then allgather) on ``channels`` parallel rings.

    Every rank must call the collective; out of place, the input is not modified.

    >>> ring_all_reduce(4, inplace=True).ranks[0].channels[0].instructions[1].op.value
    'recv_reduce_copy_send'
    """
    _check_channels(channels, bidirectional)
    n, k = nranks, channels
    spec = CollectiveSpec("all_reduce", n, chunk_factor=n * k, inplace=inplace)
    with program(f"ring_all_reduce_n{n}_c{k}", spec) as p:
        for j in range(k):
            order = _order(n, j, bidirectional)
            for pos, owner in enumerate(order):
                idx = owner * k + j
                if n == 1:
                    if not inplace:
                        chunk(owner, Buffer.INPUT, idx).copy(owner, Buffer.OUTPUT, idx)
                    continue
                # Reduce-scatter into the output, then the owner passes the result around.
                done = _reduce_around(order, pos, idx, j, lambda rank, idx=idx: p.ref(rank, Buffer.OUTPUT, idx))
                _pass_around(done, order, pos, idx, j)
    return p.program
