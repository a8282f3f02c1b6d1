"""Overlapped all-gather + matmul and matmul + reduce-scatter, with torch's symmetric-memory semantics.

``all_gather_matmul(a_shard, bs, gather_dim)`` returns ``(all_gather(a_shard, gather_dim),
[that @ b for b in bs])`` and ``matmul_reduce_scatter(a, b, scatter_dim)`` returns
``reduce_scatter(a @ b, scatter_dim)``, as torch's ``fused_all_gather_matmul`` and
``fused_matmul_reduce_scatter`` do. Each runs one verified fused Program
(:func:`synccl.collectives.fused_ring`): the transfers move row blocks of the matrices while
this thread multiplies the blocks that have arrived (or produces the blocks the transfers send
next). Every rank calls them with the same shapes; the shapes are compared across ranks first,
so a mismatch is a one-line error on every rank instead of a hang or wrong numbers.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from synccl._arraykit import ArrayKit, array_kit
from synccl._group import run_on
from synccl.collectives import Buffer, fused_ring
from synccl.exceptions import CommError
from synccl.runtime import Communicator
from synccl.runtime._buffers import DTYPES, as_array, dtype_code
from synccl.runtime._plan import RowLayout

__all__ = ["all_gather_matmul", "matmul_reduce_scatter"]

_MAX_DIMS = 8  # shapes compared across ranks: up to this many dimensions ...
_MAX_WEIGHTS = 16  # ... and this many right-hand matrices
_CHECK_BUFFERS: weakref.WeakKeyDictionary[Communicator, tuple[np.ndarray, np.ndarray]] = weakref.WeakKeyDictionary()


def all_gather_matmul(
    a_shard: Any, bs: Sequence[Any], gather_dim: int, *, comm: Communicator | None = None, group: Any = None, return_a: bool = True, splits: int | None = None
) -> tuple[Any, list[Any]]:
    """Gather ``a_shard`` from every rank along ``gather_dim`` and multiply it by each of ``bs``, overlapped.

    Parameters
    ----------
    a_shard : numpy array or CPU torch tensor, shape ``(..., K)``
        This rank's shard; every rank's has the same shape. ``gather_dim`` is any dimension but the last.
    bs : sequence of 2-D arrays ``(K, N_i)``
        The right-hand matrices, of ``a_shard``'s kind and dtype.
    gather_dim : int
        The dimension along which the shards are concatenated (negative counts from the end).
    comm, group : Communicator or torch ProcessGroup, optional
        Who takes part: a synccl Communicator, or a torch group on the "synccl" backend (the
        default group when neither is given).
    return_a : bool
        Whether to return the gathered ``a`` (``None`` in its place otherwise).
    splits : int, optional
        Pieces each shard travels in (default 1: the runtime's tiles already cut every block
        into slot-sized pieces that the matmul takes as they arrive).

    Returns
    -------
    (a_full or None, list of arrays)
        ``a_full`` has ``a_shard``'s shape with ``gather_dim`` multiplied by the rank count;
        result ``i`` is ``a_full @ bs[i]`` (last dimension ``N_i``).

    Examples
    --------
    >>> import numpy as np, synccl
    >>> from synccl.overlap import all_gather_matmul
    >>> with synccl.init() as comm:
    ...     a, (c,) = all_gather_matmul(np.ones((2, 3)), [np.eye(3)], 0, comm=comm)
    >>> a.shape, c.tolist()
    ((2, 3), [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    """
    op = "all_gather_matmul"

    def run(comm: Communicator) -> tuple[Any, list[Any]]:
        kit = array_kit(op, a_shard, "a_shard")
        dim = _dimension(op, "gather_dim", gather_dim, kit.ndim(a_shard), a_shard, kit)
        weights = _weights(op, kit, a_shard, bs)
        pieces = _splits(op, splits)
        p = comm.size
        shape = kit.shape(a_shard)
        _same_everywhere(comm, op, "a_shard", shape, dim, kit.dtype(a_shard), [kit.shape(b)[1] for b in weights])
        k = shape[-1]
        rows = kit.contiguous(kit.movedim(a_shard, dim, 0))  # (shard rows..., K): shards stack along dim 0
        share_rows = math.prod(kit.shape(rows)[:-1])
        # Returned to the caller, or else scratch the communicator keeps for the next call.
        gathered = kit.new((p * share_rows, k), a_shard) if return_a else kit.wrap(comm._spare(p * share_rows * k, kit.dtype(a_shard)).reshape(p * share_rows, k))
        results = [kit.new((p * share_rows, kit.shape(b)[1]), a_shard) for b in weights]
        output = as_array(gathered, name="a_full", op=op, writable=True)

        def consume(start: int, stop: int) -> None:  # elements of a_full that have arrived: whole rows
            first, last = start // k, stop // k
            for b, c in zip(weights, results, strict=True):
                kit.matmul(gathered[first:last], b, c[first:last])

        buffers = {Buffer.INPUT: as_array(rows, name="a_shard", op=op, writable=False), Buffer.OUTPUT: output}
        program = fused_ring(op, p, pieces=pieces)
        comm._run_fused(program, RowLayout(share_rows, k, pieces), buffers, consume, share=share_rows * k, label=op)
        moved = kit.shape(rows)
        full_shape = (p * moved[0], *moved[1:])

        def unmove(flat: Any, last: int) -> Any:
            return kit.movedim(kit.reshape(flat, (*full_shape[:-1], last)), 0, dim)

        return (unmove(gathered, k) if return_a else None), [unmove(c, kit.shape(b)[1]) for b, c in zip(weights, results, strict=True)]

    return run_on(comm, group, op, run)


def matmul_reduce_scatter(a: Any, b: Any, scatter_dim: int, *, op: str = "sum", comm: Communicator | None = None, group: Any = None, splits: int | None = None) -> Any:
    """``reduce_scatter(a @ b)`` along ``scatter_dim``, with the matmul producing the blocks the transfers send next.

    Parameters
    ----------
    a : numpy array or CPU torch tensor, shape ``(..., K)``
        This rank's left operand (in row-parallel layers: its slice of the activations' columns).
    b : 2-D array ``(K, N)``
        This rank's right operand, of ``a``'s kind and dtype.
    scatter_dim : int
        The dimension of the product split among the ranks (any but the last); its size must be
        a multiple of the rank count.
    op : {"sum", "avg"}
        How the ranks' products combine.
    comm, group, splits
        As for :func:`all_gather_matmul`.

    Returns
    -------
    array
        This rank's block: ``a @ b`` summed (or averaged) over the ranks, with ``scatter_dim``
        divided by the rank count.

    Examples
    --------
    >>> import numpy as np, synccl
    >>> from synccl.overlap import matmul_reduce_scatter
    >>> with synccl.init() as comm:
    ...     matmul_reduce_scatter(np.arange(6.0).reshape(2, 3), np.ones((3, 1)), 0, comm=comm).tolist()
    [[3.0], [12.0]]
    """
    name = "matmul_reduce_scatter"

    def run(comm: Communicator) -> Any:
        if op not in ("sum", "avg"):
            raise CommError(f"{name}: op must be 'sum' or 'avg', got {op!r}", op=name)
        kit = array_kit(name, a, "a")
        dim = _dimension(name, "scatter_dim", scatter_dim, kit.ndim(a), a, kit)
        (b_matrix,) = _weights(name, kit, a, [b], label="b")
        pieces = _splits(name, splits)
        p = comm.size
        shape = kit.shape(a)
        _same_everywhere(comm, name, "a", shape, dim, kit.dtype(a), [kit.shape(b_matrix)[1]])
        if shape[dim] % p:
            raise CommError(f"{name}: scatter_dim {dim} of a (size {shape[dim]}) does not split among {p} ranks", rank=comm.rank, op=name)
        rows = kit.contiguous(kit.movedim(a, dim, 0))
        moved = kit.shape(rows)
        k, n = moved[-1], kit.shape(b_matrix)[1]
        lhs = kit.reshape(rows, (-1, k))
        total_rows = kit.shape(lhs)[0]
        share_rows = total_rows // p
        product = kit.wrap(comm._spare(total_rows * n, kit.dtype(a)).reshape(total_rows, n))  # scratch, kept for the next call
        result = kit.new((share_rows, n), a)
        flat = as_array(product, name="a @ b", op=name, writable=True)

        def produce(start: int, stop: int) -> None:  # elements of the product the transfers send next: whole rows
            first, last = start // n, stop // n
            kit.matmul(lhs[first:last], b_matrix, product[first:last])

        buffers = {Buffer.INPUT: flat, Buffer.OUTPUT: as_array(result, name="result", op=name, writable=True)}
        program = fused_ring(name, p, pieces=pieces)
        comm._run_fused(program, RowLayout(share_rows, n, pieces), buffers, produce, share=share_rows * n, label=name)
        if op == "avg":
            kit.divide(result, p)
        return kit.movedim(kit.reshape(result, (moved[0] // p, *moved[1:-1], n)), 0, dim)

    return run_on(comm, group, name, run)


# -- checks --------------------------------------------------------------------------------------


def _dimension(op: str, name: str, value: Any, ndim: int, x: Any, kit: ArrayKit) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise CommError(f"{op}: {name} must be an integer, got {value!r}", op=op)
    if ndim < 2:
        raise CommError(f"{op}: the left operand must have at least 2 dimensions (..., K), got shape {kit.shape(x)}", op=op)
    if not -ndim <= value < ndim:
        raise CommError(f"{op}: {name} {value} does not exist for an operand of shape {kit.shape(x)} ({ndim} dimensions)", op=op)
    dim = int(value) % ndim
    if dim == ndim - 1:
        raise CommError(f"{op}: {name} {value} is the contracted (last) dimension of shape {kit.shape(x)}; pick one of 0..{ndim - 2}", op=op)
    if ndim > _MAX_DIMS:
        raise CommError(f"{op}: operands of up to {_MAX_DIMS} dimensions are supported, got {ndim}", op=op)
    return dim


def _weights(op: str, kit: ArrayKit, a: Any, bs: Sequence[Any], *, label: str = "bs") -> list[Any]:
    if isinstance(bs, np.ndarray) or kit.is_mine(bs) or not isinstance(bs, Sequence) or not bs:
        raise CommError(f"{op}: {label} must be a non-empty list of 2-D matrices, got {type(bs).__name__}", op=op)
    if len(bs) > _MAX_WEIGHTS:
        raise CommError(f"{op}: at most {_MAX_WEIGHTS} right-hand matrices are supported, got {len(bs)}", op=op)
    k = kit.shape(a)[-1]
    out = []
    for i, b in enumerate(bs):
        where = label if label == "b" else f"{label}[{i}]"
        if not kit.is_mine(b):
            raise CommError(f"{op}: {where} must be a {kit.name} array like the left operand, got {type(b).__name__}", op=op)
        if kit.ndim(b) != 2 or kit.shape(b)[0] != k:
            raise CommError(f"{op}: {where} has shape {kit.shape(b)}, expected ({k}, N) to multiply an operand of shape {kit.shape(a)}", op=op)
        if kit.dtype(b) != kit.dtype(a):
            raise CommError(f"{op}: dtype mismatch: the left operand is {kit.dtype(a)} but {where} is {kit.dtype(b)}", op=op)
        out.append(b)
    return out


def _splits(op: str, splits: Any) -> int:
    if splits is None:
        return 1
    if isinstance(splits, bool) or not isinstance(splits, int | np.integer) or splits < 1:
        raise CommError(f"{op}: splits must be an integer >= 1, got {splits!r}", op=op)
    return int(splits)


def _same_everywhere(comm: Communicator, op: str, name: str, shape: tuple[int, ...], dim: int, dtype: np.dtype, widths: list[int]) -> None:
    """Compare shapes, the dimension and the dtype across ranks; the same one-line error on every rank if they differ."""
    buffers = _CHECK_BUFFERS.get(comm)
    if buffers is None:  # the same arrays every call, so the communicator's prepared call is reused
        width = 4 + _MAX_DIMS + _MAX_WEIGHTS
        buffers = _CHECK_BUFFERS[comm] = (np.empty(width, dtype=np.int64), np.empty(comm.size * width, dtype=np.int64))
    mine, gathered = buffers
    mine[:] = -1
    mine[:4] = (len(shape), dim, dtype_code(dtype), len(widths))
    mine[4 : 4 + len(shape)] = shape
    mine[4 + _MAX_DIMS : 4 + _MAX_DIMS + len(widths)] = widths
    every = comm.allgather(mine, gathered).reshape(comm.size, -1)
    for rank, row in enumerate(every):
        if not np.array_equal(row, every[0]):
            raise CommError(f"{op}: ranks disagree: {_describe(row, name, rank)} but {_describe(every[0], name, 0)}", rank=comm.rank, op=op)


def _describe(row: np.ndarray, name: str, rank: int) -> str:
    ndim, dim, code, nweights = (int(v) for v in row[:4])
    shape = tuple(int(v) for v in row[4 : 4 + ndim])
    widths = [int(v) for v in row[4 + _MAX_DIMS : 4 + _MAX_DIMS + nweights]]
    return f"rank {rank} has {name} of shape {shape} and dtype {DTYPES[code]}, dim {dim}, output widths {widths}"
