"""All-to-all algorithms: pairwise exchange, Bruck's log-step algorithm and Tutel's 2D hierarchical one.

Rank ``r``'s input block ``d`` (chunks ``d*c .. d*c+c-1``) goes to rank ``d``'s output block
``r``. In place, input and output are one buffer, so a block may only be overwritten once it has
been sent; the algorithms stage what arrives too early in scratch. Out of place, the input is
never written.
"""

from __future__ import annotations

from synccl.collectives._dsl import ChunkRef, ProgramBuilder, chunk, program
from synccl.collectives._program import Program
from synccl.collectives._spec import Buffer, CollectiveSpec
from synccl.collectives.library._hierarchical import node_count
from synccl.collectives.library._registry import hierarchical, register
from synccl.exceptions import CollectiveError

__all__ = ["pairwise_all_to_all", "bruck_all_to_all", "hierarchical_2d_all_to_all"]


def _runs(blocks: list[ChunkRef]) -> list[ChunkRef]:
    """``blocks`` with every run of adjacent references (same rank and buffer) joined into one."""
    out = [blocks[0]]
    for b in blocks[1:]:
        last = out[-1]
        if (b.rank, b.buffer, b.index) == (last.rank, last.buffer, last.index + last.size):
            out[-1] = last.group(b)
        else:
            out.append(b)
    return out


def _contiguous(p: ProgramBuilder, rank: int, blocks: list[ChunkRef], stage_at: int, *, off_io: bool = False) -> ChunkRef:
    """One reference holding ``blocks`` in order, packing them into scratch at ``stage_at`` if needed.

    The blocks are used where they are when they already sit side by side (and, with
    ``off_io``, in scratch rather than in the input/output buffer).
    """
    runs = _runs(blocks)
    if len(runs) == 1 and not (off_io and runs[0].buffer is not Buffer.SCRATCH):
        return runs[0]
    packed: ChunkRef | None = None
    offset = stage_at
    for run in runs:
        dst = run.copy(rank, Buffer.SCRATCH, offset)
        offset += run.size
        packed = dst if packed is None else packed.group(dst)
    return packed  # type: ignore[return-value]  # blocks is never empty


def _same_storage(spec: CollectiveSpec, a: ChunkRef, b: ChunkRef) -> bool:
    """Whether ``a`` and ``b`` name the same chunks after in-place aliasing."""
    return a.rank == b.rank and a.size == b.size and spec.resolve(a.rank, a.buffer, a.index) == spec.resolve(b.rank, b.buffer, b.index)


@register("pairwise", "all_to_all", "n-1 exchange steps; at step s rank r sends to r+s and receives from r-s")
def pairwise_all_to_all(nranks: int, *, channels: int = 1, inplace: bool = False) -> Program:
    """Pairwise-exchange all-to-all: at step ``s`` rank ``r`` sends its block for ``(r+s) % n``.

    Every rank must call the collective; out of place, the input is not modified. Each block is
    cut into ``channels`` chunks that travel on separate lanes. In place, a block that arrives
    before the slot it lands in has been sent (steps ``s <= n/2``) waits in scratch.

    Parameters
    ----------
    nranks : int
        Number of ranks, at least 1.
    channels : int
        Parallel lanes per pair of ranks; the chunk factor.
    inplace : bool
        Whether input and output are one buffer.

    Returns
    -------
    Program
        The verified Program.

    Raises
    ------
    CollectiveError
        If ``nranks`` or ``channels`` is not a positive integer.

    Examples
    --------
    >>> prog = pairwise_all_to_all(4, channels=2)
    >>> prog.spec.input_chunks, len(prog.ranks[0].channels)
    (8, 12)
    """
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise CollectiveError(f"pairwise all_to_all: channels must be an integer >= 1, got {channels!r}")
    n, k = nranks, channels
    spec = CollectiveSpec("all_to_all", n, chunk_factor=k, inplace=inplace)
    with program(f"pairwise_all_to_all_n{n}_c{k}", spec) as p:
        if not inplace:
            for r in range(n):
                chunk(r, Buffer.INPUT, r * k, k).copy(r, Buffer.OUTPUT, r * k)
        staged: list[tuple[ChunkRef, int]] = []
        for s in range(1, n):
            stage = inplace and 2 * s <= n
            for r in range(n):
                dst = (r + s) % n
                for j in range(k):
                    src = chunk(r, Buffer.INPUT, dst * k + j)
                    if stage:
                        src.copy(dst, Buffer.SCRATCH, (s - 1) * k + j, lane=j)
                    else:
                        src.copy(dst, Buffer.OUTPUT, r * k + j, lane=j)
                if stage:
                    staged.append((p.ref(dst, Buffer.SCRATCH, (s - 1) * k, k), r * k))
        # Every slot has been sent by now, so the staged blocks can land.
        for held, idx in staged:
            held.copy(held.rank, Buffer.OUTPUT, idx)
    return p.program


@register("bruck", "all_to_all", "Bruck: ceil(log2 n) steps, each packing the blocks whose index has bit k set")
def bruck_all_to_all(nranks: int, *, inplace: bool = False) -> Program:
    """Bruck's all-to-all: ``ceil(log2 n)`` steps of one packed message each, for small messages.

    Every rank must call the collective; out of place, the input is not modified. Rank ``r``
    views its blocks rotated (block ``i`` is the one for rank ``(r+i) % n``); at step ``k`` it
    packs the blocks whose index has bit ``k`` set into scratch, sends them to
    ``(r + 2^k) % n`` as one message and receives the same indices from ``(r - 2^k) % n``; the
    block at index ``i`` finally came from rank ``(r-i) % n`` and is copied to that output slot.
    Each step has its own packing and receiving area, so scratch holds about ``n log2 n``
    chunks.

    Parameters
    ----------
    nranks : int
        Number of ranks, at least 1.
    inplace : bool
        Whether input and output are one buffer.

    Returns
    -------
    Program
        The verified Program.

    Raises
    ------
    CollectiveError
        If ``nranks`` is not a positive integer.

    Examples
    --------
    >>> prog = bruck_all_to_all(5)
    >>> sorted({ch.send_peer for ch in prog.ranks[0].channels} - {None})
    [1, 2, 4]
    """
    n = nranks
    spec = CollectiveSpec("all_to_all", n, inplace=inplace)
    with program(f"bruck_all_to_all_n{n}", spec) as p:
        # where[r][i]: where rank r currently holds its rotated block i.
        where = [[p.ref(r, Buffer.INPUT, (r + i) % n) for i in range(n)] for r in range(n)]
        area = 0
        for k in range((n - 1).bit_length()):
            moving = [i for i in range(n) if i >> k & 1]
            m = len(moving)
            for r in range(n):
                message = _contiguous(p, r, [where[r][i] for i in moving], area)
                message.copy((r + (1 << k)) % n, Buffer.SCRATCH, area + m)
            for r in range(n):
                for j, i in enumerate(moving):
                    where[r][i] = p.ref(r, Buffer.SCRATCH, area + m + j)
            area += 2 * m
        # Last, so that in place no slot is overwritten before it has been read.
        for r in range(n):
            for i in range(n):
                dst = p.ref(r, Buffer.OUTPUT, (r - i) % n)
                if not _same_storage(spec, where[r][i], dst):
                    where[r][i].copy(r, Buffer.OUTPUT, dst.index)
    return p.program


@register(
    "hierarchical_2d",
    "all_to_all",
    "Tutel's 2DH: intra-machine all-to-all grouped by local rank, then one aggregated message per remote machine",
    support=hierarchical,
)
def hierarchical_2d_all_to_all(nranks: int, *, local_size: int, inplace: bool = False) -> Program:
    """Tutel's two-dimensional hierarchical all-to-all for machines of ``local_size`` ranks.

    Every rank must call the collective; out of place, the input is not modified. Rank
    ``(a, l)`` (machine ``a``, local rank ``l``) first packs the blocks for ranks ``(b, m)``,
    ``b = 0 .. nnodes-1``, and sends them to local rank ``m`` as one message; then rank
    ``(a, m)`` packs what it got from every local rank for machine ``b`` and sends it to
    ``(b, m)`` as one message, which lands contiguously in the output (sources
    ``(a, 0) .. (a, local_size-1)``). Inter-machine traffic is thus ``nnodes - 1`` messages per
    rank instead of ``nranks - local_size``. The two layout transforms are local copies into
    scratch (up to three ``nranks``-block areas); blocks already in place are not copied.

    Parameters
    ----------
    nranks : int
        Number of ranks, a multiple of ``local_size``.
    local_size : int
        Ranks per machine; ranks ``a * local_size .. (a + 1) * local_size - 1`` share machine ``a``.
    inplace : bool
        Whether input and output are one buffer.

    Returns
    -------
    Program
        The verified Program.

    Raises
    ------
    CollectiveError
        If ``nranks`` is not a positive multiple of ``local_size``.

    Examples
    --------
    >>> prog = hierarchical_2d_all_to_all(8, local_size=4)
    >>> sorted({ch.send_peer for ch in prog.ranks[0].channels} - {None})
    [1, 2, 3, 4]
    """
    n = nranks
    spec = CollectiveSpec("all_to_all", n, inplace=inplace)
    nodes = node_count("hierarchical_2d all_to_all", n, local_size)
    size = local_size
    s1, s2, s3 = 0, n, 2 * n  # scratch areas: packed for phase 1, received in phase 1, packed for phase 2
    with program(f"hierarchical_2d_all_to_all_n{n}_l{size}", spec) as p:
        # held[r, local, b]: where rank r = (a, m) holds the block from (a, local) for (b, m).
        held: dict[tuple[int, int, int], ChunkRef] = {}
        # 1. Intra-machine all-to-all, grouped by destination local rank.
        for r in range(n):
            a, local = divmod(r, size)
            for m in range(size):
                blocks = [p.ref(r, Buffer.INPUT, b * size + m) for b in range(nodes)]
                if m == local:
                    held.update(((r, local, b), blocks[b]) for b in range(nodes))
                    continue
                peer = a * size + m
                message = _contiguous(p, r, blocks, s1 + m * nodes)
                # On a single machine, out of place, the block can go straight to the output.
                if nodes == 1 and not inplace:
                    got = message.copy(peer, Buffer.OUTPUT, r)
                else:
                    got = message.copy(peer, Buffer.SCRATCH, s2 + local * nodes)
                held.update(((peer, local, b), p.ref(peer, got.buffer, got.index + b)) for b in range(nodes))
        # 2. Pack per destination machine (before any output is written, for the in-place case).
        outgoing: dict[tuple[int, int], ChunkRef] = {}
        for r in range(n):
            a = r // size
            for b in range(nodes):
                if b != a:
                    outgoing[r, b] = _contiguous(p, r, [held[r, local, b] for local in range(size)], s3 + b * size, off_io=inplace)
        # 3. Inter-machine all-to-all among equal local ranks; the own machine's blocks are copied.
        for r in range(n):
            a, m = divmod(r, size)
            for local in range(size):
                dst = p.ref(r, Buffer.OUTPUT, a * size + local)
                if not _same_storage(spec, held[r, local, a], dst):
                    held[r, local, a].copy(r, Buffer.OUTPUT, dst.index)
            for b in range(nodes):
                if b != a:
                    outgoing[r, b].copy(b * size + m, Buffer.OUTPUT, a * size)
    return p.program
