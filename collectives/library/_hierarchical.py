"""Node-aware allreduce: reduce-scatter inside each machine, allreduce across machines, allgather inside.

Ranks are numbered machine by machine: rank ``a * local_size + l`` is local rank ``l`` of
machine ``a``. The buffer is cut into ``local_size`` blocks of ``nnodes`` chunks. Inside every
machine a ring reduce-scatter leaves block ``l`` summed over the machine at local rank ``l``
(one message of ``nnodes`` chunks per ring step); the ``nnodes`` ranks with local index ``l``
then run a ring allreduce over that block's chunks, so only ``1/local_size`` of the data crosses
machines per rank; a ring allgather inside every machine spreads the blocks again.
"""

from __future__ import annotations

from synccl.collectives._dsl import chunk, program
from synccl.collectives._program import Program
from synccl.collectives._spec import Buffer, CollectiveSpec
from synccl.collectives.library._registry import hierarchical, register
from synccl.exceptions import CollectiveError

__all__ = ["hierarchical_all_reduce"]


def node_count(algorithm: str, nranks: int, local_size: int) -> int:
    """Machines in a ``nranks``-rank job with ``local_size`` ranks each; raise if they do not divide."""
    if not isinstance(local_size, int) or isinstance(local_size, bool) or local_size < 1 or nranks % local_size:
        raise CollectiveError(f"{algorithm}: local_size must be an integer >= 1 dividing nranks={nranks}, got {local_size!r}")
    return nranks // local_size


@register(
    "hierarchical",
    "all_reduce",
    "intra-machine ring reduce-scatter, inter-machine ring allreduce, intra-machine ring allgather",
    support=hierarchical,
)
def hierarchical_all_reduce(nranks: int, *, local_size: int, inplace: bool = False) -> Program:
    """Two-level ring allreduce for machines of ``local_size`` ranks each.

    Every rank must call the collective; out of place, the input is not modified (partial sums
    live in the output buffer, which the final allgather overwrites).

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
        The verified Program, with ``chunk_factor == nranks``.

    Raises
    ------
    CollectiveError
        If ``nranks`` is not a positive multiple of ``local_size``.

    Examples
    --------
    >>> prog = hierarchical_all_reduce(8, local_size=4)
    >>> prog.spec.chunk_factor, prog.ranks[0].channels[0].send_peer
    (8, 1)
    """
    spec = CollectiveSpec("all_reduce", nranks, chunk_factor=nranks, inplace=inplace)
    nodes = node_count("hierarchical all_reduce", nranks, local_size)
    size = local_size
    with program(f"hierarchical_all_reduce_n{nranks}_l{size}", spec) as p:
        # 1. Intra-machine reduce-scatter: block `local` (nodes chunks) ends summed at that local rank.
        for a in range(nodes):
            base = a * size
            for local in range(size):
                blk = local * nodes
                if size == 1:
                    if not inplace:
                        chunk(base, Buffer.INPUT, blk, nodes).copy(base, Buffer.OUTPUT, blk)
                    continue
                c = chunk(base + (local + 1) % size, Buffer.INPUT, blk, nodes)
                for step in range(2, size + 1):
                    rank = base + (local + step) % size
                    c = chunk(rank, Buffer.INPUT, blk, nodes).reduce(c, into=chunk(rank, Buffer.OUTPUT, blk, nodes))
        # 2. Inter-machine ring allreduce of block `local` among that local rank of every machine;
        #    chunk m of the block is completed by machine m.
        for local in range(size if nodes > 1 else 0):
            for m in range(nodes):
                idx = local * nodes + m
                c = chunk(((m + 1) % nodes) * size + local, Buffer.OUTPUT, idx)
                for step in range(2, nodes + 1):
                    c = chunk(((m + step) % nodes) * size + local, Buffer.OUTPUT, idx).reduce(c)
                for step in range(1, nodes):
                    c = c.copy(((m + step) % nodes) * size + local, Buffer.OUTPUT, idx)
        # 3. Intra-machine ring allgather of the finished blocks.
        for a in range(nodes if size > 1 else 0):
            base = a * size
            for local in range(size):
                c = chunk(base + local, Buffer.OUTPUT, local * nodes, nodes)
                for step in range(1, size):
                    c = c.copy(base + (local + step) % size, Buffer.OUTPUT, local * nodes)
    return p.program
