"""Gather and scatter: linear (every rank talks to the root) and binomial-tree versions.

The binomial versions use relative ranks ``v = (r - root) % n``. Relative rank ``v`` heads the
subtree ``v .. v + lowbit(v) - 1`` (cut at ``n``), its parent is ``v - lowbit(v)``, and every
tree edge carries one message: the whole subtree's blocks, contiguous in the sender's scratch.
Non-root ranks never touch the buffers that are only meaningful at the root (gather's output,
scatter's input); they stage in scratch. ``ceil(log2 n)`` steps instead of the root's ``n - 1``
messages.
"""

from __future__ import annotations

from synccl.collectives._dsl import ChunkRef, ProgramBuilder, chunk, program
from synccl.collectives._program import Program
from synccl.collectives._spec import Buffer, CollectiveSpec
from synccl.collectives.library._registry import register

__all__ = ["direct_gather", "direct_scatter", "binomial_gather", "binomial_scatter"]


def _subtree(v: int, nranks: int) -> int:
    """Ranks in relative rank ``v``'s subtree of the lowbit binomial tree."""
    return nranks if v == 0 else min(v & -v, nranks - v)


def _children(v: int, nranks: int) -> list[int]:
    """Relative ranks whose parent is ``v``, largest subtree first."""
    limit = v & -v if v else nranks
    kids, bit = [], 1
    while bit < limit and v + bit < nranks:
        kids.append(v + bit)
        bit *= 2
    return kids[::-1]


def _root_span(
    p: ProgramBuilder, root: int, buffer: Buffer, start: int, count: int, *, stage_first: bool
) -> tuple[ChunkRef, list[tuple[ChunkRef, int]]]:
    """Blocks ``start .. start+count-1`` (mod n) of the root's ``buffer`` as one contiguous reference.

    Returns the reference and the pieces ``(scratch part, block index)`` that wrap around the end
    of the buffer and so pass through scratch; ``stage_first`` copies them into scratch now (the
    root sends them), otherwise the caller copies them out after receiving.
    """
    n = p.spec.nranks
    if start + count <= n:
        return p.ref(root, buffer, start, count), []
    head = n - start
    staged = p.ref(root, Buffer.SCRATCH, 0, count)
    pieces = [(p.ref(root, Buffer.SCRATCH, 0, head), start), (p.ref(root, Buffer.SCRATCH, head, count - head), 0)]
    if stage_first:
        for part, idx in pieces:
            p.ref(root, buffer, idx, part.size).copy(root, Buffer.SCRATCH, part.index)
    return staged, pieces


@register("direct", "gather", "every rank sends its block straight to the root; one step")
def direct_gather(nranks: int, *, root: int = 0, inplace: bool = False) -> Program:
    """Linear gather: every rank sends its input to slot ``rank`` of the root's output.

    Every rank must call the collective; out of place, the input is not modified.

    Parameters
    ----------
    nranks : int
        Number of ranks, at least 1.
    root : int
        The rank that receives everything.
    inplace : bool
        Whether the root's input is its slot of the output.

    Returns
    -------
    Program
        The verified Program.

    Raises
    ------
    CollectiveError
        If ``nranks`` is not a positive integer or ``root`` is not a rank.

    Examples
    --------
    >>> prog = direct_gather(4, root=2)
    >>> sorted(ch.recv_peer for ch in prog.ranks[2].channels if ch.recv_peer is not None)
    [0, 1, 3]
    """
    spec = CollectiveSpec("gather", nranks, inplace=inplace, root=root)
    with program(f"direct_gather_n{nranks}_root{spec.root}", spec) as p:
        for r in range(nranks):
            if not (inplace and r == spec.root):
                chunk(r, Buffer.INPUT, 0).copy(spec.root, Buffer.OUTPUT, r)
    return p.program


@register("direct", "scatter", "the root sends every rank its block directly; one step")
def direct_scatter(nranks: int, *, root: int = 0, inplace: bool = False) -> Program:
    """Linear scatter: the root sends block ``r`` of its input to rank ``r``.

    Every rank must call the collective; out of place, the input is not modified.

    Parameters
    ----------
    nranks : int
        Number of ranks, at least 1.
    root : int
        The rank that holds the data.
    inplace : bool
        Whether every rank's output is its slot of the input (NCCL style).

    Returns
    -------
    Program
        The verified Program.

    Raises
    ------
    CollectiveError
        If ``nranks`` is not a positive integer or ``root`` is not a rank.

    Examples
    --------
    >>> prog = direct_scatter(3, root=1)
    >>> sorted(ch.send_peer for ch in prog.ranks[1].channels if ch.send_peer is not None)
    [0, 2]
    """
    spec = CollectiveSpec("scatter", nranks, inplace=inplace, root=root)
    with program(f"direct_scatter_n{nranks}_root{spec.root}", spec) as p:
        for r in range(nranks):
            if not (inplace and r == spec.root):
                chunk(spec.root, Buffer.INPUT, r).copy(r, Buffer.OUTPUT, 0)
    return p.program


@register("binomial", "gather", "binomial tree of contiguous subtree blocks; ceil(log2 n) steps")
def binomial_gather(nranks: int, *, root: int = 0, inplace: bool = False) -> Program:
    """Binomial-tree gather: every subtree's blocks travel to its parent as one message.

    Every rank must call the collective; out of place, the input is not modified. Inner ranks collect their
    subtree in scratch; the root receives straight into its output, except for the one subtree
    whose blocks wrap around the end of the output, which passes through scratch.

    Parameters
    ----------
    nranks : int
        Number of ranks, at least 1.
    root : int
        The rank that receives everything.
    inplace : bool
        Whether the root's input is its slot of the output.

    Returns
    -------
    Program
        The verified Program.

    Raises
    ------
    CollectiveError
        If ``nranks`` is not a positive integer or ``root`` is not a rank.

    Examples
    --------
    >>> prog = binomial_gather(8)
    >>> sorted(ch.recv_peer for ch in prog.ranks[0].channels if ch.recv_peer is not None)
    [1, 2, 4]
    """
    n = nranks
    spec = CollectiveSpec("gather", n, inplace=inplace, root=root)
    root = spec.root
    with program(f"binomial_gather_n{n}_root{root}", spec) as p:
        wrapped: list[tuple[ChunkRef, int]] = []
        for v in range(n):
            r = (v + root) % n
            if v == 0 and not inplace:
                chunk(r, Buffer.INPUT, 0).copy(r, Buffer.OUTPUT, r)
            elif v and _subtree(v, n) > 1:
                chunk(r, Buffer.INPUT, 0).copy(r, Buffer.SCRATCH, 0)
        # Leaves first: a subtree's message leaves once all its children's messages arrived.
        for v in sorted(range(1, n), key=lambda v: v & -v):
            r, size, parent = (v + root) % n, _subtree(v, n), v - (v & -v)
            message = chunk(r, Buffer.INPUT, 0) if size == 1 else p.ref(r, Buffer.SCRATCH, 0, size)
            if parent:
                message.copy((parent + root) % n, Buffer.SCRATCH, v - parent)
            else:
                target, pieces = _root_span(p, root, Buffer.OUTPUT, r, size, stage_first=False)
                message.copy(root, target.buffer, target.index)
                wrapped.extend(pieces)
        for part, idx in wrapped:
            part.copy(root, Buffer.OUTPUT, idx)
    return p.program


@register("binomial", "scatter", "binomial tree of contiguous subtree blocks; ceil(log2 n) steps")
def binomial_scatter(nranks: int, *, root: int = 0, inplace: bool = False) -> Program:
    """Binomial-tree scatter: every rank receives its subtree's blocks as one message and splits them.

    Every rank must call the collective; out of place, the input is not modified. Inner ranks receive into
    scratch and forward the parts for their children, largest subtree first; leaves receive
    straight into their output. The root sends from its input, except for the one subtree whose
    blocks wrap around the end of the input, which it packs in scratch first.

    Parameters
    ----------
    nranks : int
        Number of ranks, at least 1.
    root : int
        The rank that holds the data.
    inplace : bool
        Whether every rank's output is its slot of the input (NCCL style).

    Returns
    -------
    Program
        The verified Program.

    Raises
    ------
    CollectiveError
        If ``nranks`` is not a positive integer or ``root`` is not a rank.

    Examples
    --------
    >>> prog = binomial_scatter(6, root=5)
    >>> sorted(ch.send_peer for ch in prog.ranks[5].channels if ch.send_peer is not None)
    [0, 1, 3]
    """
    n = nranks
    spec = CollectiveSpec("scatter", n, inplace=inplace, root=root)
    root = spec.root
    with program(f"binomial_scatter_n{n}_root{root}", spec) as p:
        # Parents (smaller relative ranks) before children: a rank forwards what it has received.
        for v in range(n):
            r = (v + root) % n
            for w in _children(v, n):
                child, size = (w + root) % n, _subtree(w, n)
                if v == 0:
                    message, _ = _root_span(p, root, Buffer.INPUT, child, size, stage_first=True)
                else:
                    message = p.ref(r, Buffer.SCRATCH, w - v, size)
                message.copy(child, Buffer.OUTPUT if size == 1 else Buffer.SCRATCH, 0)
            if v == 0:
                if not inplace:
                    chunk(r, Buffer.INPUT, r).copy(r, Buffer.OUTPUT, 0)
            elif _subtree(v, n) > 1:
                p.ref(r, Buffer.SCRATCH, 0).copy(r, Buffer.OUTPUT, 0)
    return p.program
