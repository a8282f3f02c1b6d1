"""Direct (all-pairs and linear) algorithms: one step, latency-optimal, for small messages.

One-shot allreduce sends the whole buffer to every peer and reduces locally; two-shot
allreduce reduce-scatters and then allgathers with direct sends (each rank owns one block).
"""

from __future__ import annotations

from synccl.collectives._dsl import chunk, program
from synccl.collectives._program import Program
from synccl.collectives._spec import Buffer, CollectiveSpec
from synccl.collectives.library._registry import register

__all__ = ["one_shot_all_reduce", "two_shot_all_reduce", "direct_all_gather", "direct_broadcast", "direct_reduce"]


@register("one_shot", "all_reduce", "every rank sends its whole buffer to every peer; one step, for small messages")
def one_shot_all_reduce(nranks: int, *, inplace: bool = False) -> Program:
    """One-shot allreduce: one step of latency, ``(n-1)`` buffers sent per rank.

    In place, the sum builds up in scratch and lands in the buffer once every peer has read it.

    >>> one_shot_all_reduce(4).num_instructions()
    24
    """
    n = nranks
    spec = CollectiveSpec("all_reduce", n, inplace=inplace)
    with program(f"one_shot_all_reduce_n{n}", spec) as p:
        for r in range(n):
            acc = chunk(r, Buffer.INPUT, 0)
            target = p.ref(r, Buffer.SCRATCH if inplace else Buffer.OUTPUT, 0)
            for step in range(1, n):
                acc = acc.reduce(chunk((r + step) % n, Buffer.INPUT, 0), into=target, lane=0)
            if n == 1 and not inplace:
                acc.copy(r, Buffer.OUTPUT, 0)
        if inplace and n > 1:
            for r in range(n):
                p.ref(r, Buffer.SCRATCH, 0).copy(r, Buffer.INPUT, 0)
    return p.program


@register("two_shot", "all_reduce", "direct reduce-scatter then direct allgather; two steps")
def two_shot_all_reduce(nranks: int, *, inplace: bool = False) -> Program:
    """Two-shot allreduce: rank b reduces block b from every peer, then sends it to every peer.

    >>> two_shot_all_reduce(3).spec.chunk_factor
    3
    """
    n = nranks
    spec = CollectiveSpec("all_reduce", n, chunk_factor=n, inplace=inplace)
    with program(f"two_shot_all_reduce_n{n}", spec) as p:
        for b in range(n):
            acc = chunk(b, Buffer.INPUT, b)
            for step in range(1, n):
                acc = acc.reduce(chunk((b + step) % n, Buffer.INPUT, b), into=p.ref(b, Buffer.OUTPUT, b))
            if n == 1 and not inplace:
                acc = acc.copy(b, Buffer.OUTPUT, b)
            for step in range(1, n):
                acc.copy((b + step) % n, Buffer.OUTPUT, b)
    return p.program


@register("direct", "all_gather", "every rank sends its block straight to every peer; one step")
def direct_all_gather(nranks: int, *, inplace: bool = False) -> Program:
    """All-pairs allgather: one step, ``n-1`` messages per rank.

    >>> direct_all_gather(3).num_instructions()
    15
    """
    n = nranks
    spec = CollectiveSpec("all_gather", n, inplace=inplace)
    with program(f"direct_all_gather_n{n}", spec) as p:
        for r in range(n):
            src = chunk(r, Buffer.INPUT, 0)
            for step in range(1, n):
                src.copy((r + step) % n, Buffer.OUTPUT, r)
            if not inplace:
                src.copy(r, Buffer.OUTPUT, r)
    return p.program


@register("direct", "broadcast", "the root sends straight to every rank; one step")
def direct_broadcast(nranks: int, *, root: int = 0, inplace: bool = False) -> Program:
    """Linear broadcast: the root sends its buffer to each rank in turn.

    >>> direct_broadcast(3, root=1).ranks[1].channels[0].send_peer
    2
    """
    spec = CollectiveSpec("broadcast", nranks, inplace=inplace, root=root)
    with program(f"direct_broadcast_n{nranks}_root{spec.root}", spec) as p:
        src = chunk(spec.root, Buffer.INPUT, 0)
        for step in range(1, nranks):
            src.copy((spec.root + step) % nranks, Buffer.OUTPUT, 0)
        if not inplace:
            src.copy(spec.root, Buffer.OUTPUT, 0)
    return p.program


@register("direct", "reduce", "every rank sends straight to the root, which reduces; one step")
def direct_reduce(nranks: int, *, root: int = 0, inplace: bool = False) -> Program:
    """Linear reduce: the root receives every buffer and reduces them in arrival order.

    >>> direct_reduce(3).num_instructions()
    4
    """
    spec = CollectiveSpec("reduce", nranks, inplace=inplace, root=root)
    with program(f"direct_reduce_n{nranks}_root{spec.root}", spec) as p:
        root = spec.root
        acc = chunk(root, Buffer.INPUT, 0)
        for step in range(1, nranks):
            acc = acc.reduce(chunk((root + step) % nranks, Buffer.INPUT, 0), into=p.ref(root, Buffer.OUTPUT, 0))
        if nranks == 1 and not inplace:
            acc.copy(root, Buffer.OUTPUT, 0)
    return p.program
