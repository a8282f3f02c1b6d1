"""Tree algorithms: binomial broadcast and reduce, and NCCL's double binary tree allreduce.

Trees are given as a parent map. The data is cut into ``chunks`` pieces; because the lowering
orders work by dependency depth, piece ``m+1`` enters the tree while piece ``m`` is still moving
down (or up) it, which pipelines the tree as NCCL does.
"""

from __future__ import annotations

from collections.abc import Callable

from synccl.collectives._dsl import ChunkRef, ProgramBuilder, chunk, program
from synccl.collectives._program import Program
from synccl.collectives._spec import Buffer, CollectiveSpec
from synccl.collectives.library._registry import register
from synccl.exceptions import CollectiveError

__all__ = ["binomial_tree", "nccl_binary_tree", "binomial_broadcast", "binomial_reduce", "double_binary_tree_all_reduce"]

#: ``parent[r]`` is rank r's parent, ``None`` for the root.
Tree = dict[int, int | None]


def binomial_tree(nranks: int, root: int = 0) -> Tree:
    """The binomial tree rooted at ``root``, as MPICH builds it: relative rank v's parent clears v's lowest set bit.

    >>> binomial_tree(4)
    {0: None, 1: 0, 2: 0, 3: 2}
    """
    tree: Tree = {}
    for r in range(nranks):
        v = (r - root) % nranks
        tree[r] = None if v == 0 else ((v & (v - 1)) + root) % nranks
    return tree


def nccl_binary_tree(nranks: int, *, mirrored: bool = False) -> Tree:
    """NCCL's in-order binary tree (``ncclGetBtree``), or the complementary second tree.

    The second tree mirrors the first (even rank counts) or shifts it by one (odd counts), so
    that the leaves of one tree are inner nodes of the other (NCCL's ``ncclGetDtree``).

    >>> nccl_binary_tree(5)
    {0: None, 1: 2, 2: 4, 3: 2, 4: 0}
    """

    def parent(r: int) -> int | None:
        if r == 0:
            return None
        bit = r & -r
        up = (r ^ bit) | (bit << 1)
        return up if up < nranks else r ^ bit

    if not mirrored:
        return {r: parent(r) for r in range(nranks)}
    if nranks % 2 == 0:
        to, back = (lambda r: nranks - 1 - r), (lambda r: nranks - 1 - r)
    else:
        to, back = (lambda r: (r - 1) % nranks), (lambda r: (r + 1) % nranks)
    out: Tree = {}
    for r in range(nranks):
        p = parent(to(r))
        out[r] = None if p is None else back(p)
    return out


def _order_down(tree: Tree) -> list[int]:
    """Ranks in breadth-first order from the root (parents before children)."""
    children: dict[int, list[int]] = {r: [] for r in tree}
    root = next(r for r, p in tree.items() if p is None)
    for r, p in sorted(tree.items()):
        if p is not None:
            children[p].append(r)
    order, frontier = [], [root]
    while frontier:
        order.extend(frontier)
        frontier = [c for r in frontier for c in children[r]]
    return order


def _tree_reduce(p: ProgramBuilder, tree: Tree, idx: int, size: int, place: Callable[[int], ChunkRef], lane: int) -> ChunkRef:
    """Reduce ``input[idx:idx+size]`` of every rank up ``tree``; return the root's result."""
    partial: dict[int, ChunkRef] = {}
    for r in reversed(_order_down(tree)):
        kids = [c for c, par in tree.items() if par == r]
        acc = p.ref(r, Buffer.INPUT, idx, size)
        for kid in kids:
            acc = acc.reduce(partial[kid], into=place(r), lane=lane)
        partial[r] = acc
    root = next(r for r, par in tree.items() if par is None)
    return partial[root]


def _tree_broadcast(p: ProgramBuilder, tree: Tree, at_root: ChunkRef, place: Callable[[int], ChunkRef], lane: int) -> None:
    """Send the root's ``at_root`` down ``tree`` into ``place(r)`` of every other rank."""
    have = {next(r for r, par in tree.items() if par is None): at_root}
    for r in _order_down(tree):
        if tree[r] is not None:
            dst = place(r)
            have[r] = have[tree[r]].copy(dst.rank, dst.buffer, dst.index, lane=lane)


def _check_pieces(chunks: int) -> None:
    if not isinstance(chunks, int) or chunks < 1:
        raise CollectiveError(f"tree: chunks must be an integer >= 1, got {chunks!r}")


@register("binomial", "broadcast", "binomial tree, ceil(log2 n) steps; pipelined over chunks")
def binomial_broadcast(nranks: int, *, root: int = 0, chunks: int = 1, inplace: bool = False) -> Program:
    """Binomial-tree broadcast from ``root``, pipelined over ``chunks`` pieces.

    >>> binomial_broadcast(8, root=3).spec.root
    3
    """
    _check_pieces(chunks)
    spec = CollectiveSpec("broadcast", nranks, chunk_factor=chunks, inplace=inplace, root=root)
    tree = binomial_tree(nranks, spec.root)
    with program(f"binomial_broadcast_n{nranks}_root{spec.root}", spec) as p:
        for m in range(chunks):
            src = chunk(spec.root, Buffer.INPUT, m)
            _tree_broadcast(p, tree, src, lambda r, m=m: p.ref(r, Buffer.OUTPUT, m), lane=0)
            if not inplace:
                src.copy(spec.root, Buffer.OUTPUT, m)
    return p.program


@register("binomial", "reduce", "binomial tree, ceil(log2 n) steps; pipelined over chunks")
def binomial_reduce(nranks: int, *, root: int = 0, chunks: int = 1, inplace: bool = False) -> Program:
    """Binomial-tree reduce to ``root``, pipelined over ``chunks`` pieces.

    Non-root ranks keep partial sums in scratch: their output buffer is not theirs to use.

    >>> binomial_reduce(4).ranks[0].channels[0].recv_peer is not None
    True
    """
    _check_pieces(chunks)
    spec = CollectiveSpec("reduce", nranks, chunk_factor=chunks, inplace=inplace, root=root)
    tree = binomial_tree(nranks, spec.root)
    with program(f"binomial_reduce_n{nranks}_root{spec.root}", spec) as p:
        for m in range(chunks):

            def place(r: int, m: int = m) -> ChunkRef:
                return p.ref(r, Buffer.OUTPUT if r == spec.root else Buffer.SCRATCH, m)

            result = _tree_reduce(p, tree, m, 1, place, lane=0)
            if nranks == 1 and not inplace:
                result.copy(spec.root, Buffer.OUTPUT, m)
    return p.program


@register("double_binary_tree", "all_reduce", "NCCL's two complementary binary trees, each reducing and broadcasting half")
def double_binary_tree_all_reduce(nranks: int, *, chunks: int = 1, inplace: bool = False) -> Program:
    """NCCL's double binary tree allreduce: two trees each reduce then broadcast half of the data.

    Every rank is a leaf in one tree and (mostly) an inner node in the other, so the load on
    every rank's links is balanced; latency is logarithmic in ``nranks``.

    >>> double_binary_tree_all_reduce(5, chunks=2).spec.chunk_factor
    4
    """
    _check_pieces(chunks)
    spec = CollectiveSpec("all_reduce", nranks, chunk_factor=2 * chunks, inplace=inplace)
    trees = (nccl_binary_tree(nranks), nccl_binary_tree(nranks, mirrored=True))
    with program(f"double_binary_tree_all_reduce_n{nranks}", spec) as p:
        for m in range(chunks):
            for t, tree in enumerate(trees):
                idx = t * chunks + m

                def place(r: int, idx: int = idx) -> ChunkRef:
                    return p.ref(r, Buffer.OUTPUT, idx)

                result = _tree_reduce(p, tree, idx, 1, place, lane=t)
                if nranks == 1 and not inplace:
                    result = result.copy(0, Buffer.OUTPUT, idx)
                _tree_broadcast(p, tree, result, place, lane=t)
    return p.program
