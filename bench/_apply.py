"""Calling a collective by name, as an application would: the checking harnesses' one dispatcher."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["call_collective"]


def call_collective(comm: Any, empty: Callable[[int], Any], coll: str, mine: Any, count: int, *, op: str, inplace: bool, root: int, algorithm: str | None = None) -> Any:
    """Call collective ``coll`` on ``mine`` (``count`` elements per share) and return its output.

    ``empty(k)`` allocates an output of ``k`` elements of ``mine``'s dtype (numpy, registered
    shared memory, CuPy ...). In place follows the Communicator's conventions.

    >>> import numpy as np, synccl
    >>> with synccl.init() as comm:
    ...     call_collective(comm, lambda k: np.empty(k, np.float32), "all_reduce", np.ones(2, np.float32), 2, op="sum", inplace=False, root=0).tolist()
    [1.0, 1.0]
    """
    import synccl

    n, r = comm.size, comm.rank
    if coll == "all_reduce":
        return comm.allreduce(mine, None if inplace else empty(mine.size), op=op, algorithm=algorithm)
    if coll == "all_gather":
        out = empty(count * n)
        if inplace:
            out[r * count : (r + 1) * count] = mine
            return comm.allgather(synccl.IN_PLACE, out, algorithm=algorithm)
        return comm.allgather(mine, out, algorithm=algorithm)
    if coll == "reduce_scatter":
        return comm.reduce_scatter(mine, None if inplace else empty(count), op=op, algorithm=algorithm)
    if coll == "all_to_all":
        return comm.alltoall(mine, None if inplace else empty(mine.size), algorithm=algorithm)
    if coll == "broadcast":
        return comm.broadcast(mine, root=root, recvbuf=None if inplace else empty(mine.size), algorithm=algorithm)
    if coll == "reduce":
        return comm.reduce(mine, None if inplace else empty(mine.size), root=root, op=op, algorithm=algorithm)
    if coll == "gather":
        return comm.gather(mine, empty(count * n) if r == root else None, root=root, algorithm=algorithm)
    if coll == "scatter":
        return comm.scatter(mine if r == root else None, empty(count), root=root, algorithm=algorithm)
    raise ValueError(f"call_collective: unknown collective {coll!r}")
