"""numpy or torch: the few array operations synccl's layer-level APIs need, one kit per library.

:mod:`synccl.overlap` and :mod:`synccl.moe` take numpy arrays or CPU torch tensors and return the
same kind. A kit does each operation the way its library does (torch's without building an
autograd graph: the layers' autograd Functions own the graph), so the algorithms are written once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from synccl.exceptions import CommError
from synccl.runtime._buffers import as_array, is_cuda_array, is_torch

__all__ = ["ArrayKit", "array_kit", "numpy_kit", "torch_kit"]


@dataclass(frozen=True, slots=True)
class ArrayKit:
    """Array operations for one array library (see :func:`array_kit`).

    Examples
    --------
    >>> kit = numpy_kit()
    >>> kit.sum_rows(2, np.array([1, 0, 1]), np.ones((3, 2)), np.array([2, 1])).tolist()
    [[1.0, 1.0], [2.0, 2.0]]
    """

    name: str
    ndim: Callable[[Any], int]
    shape: Callable[[Any], tuple[int, ...]]
    dtype: Callable[[Any], np.dtype]  # the numpy dtype the runtime moves the elements as
    movedim: Callable[[Any, int, int], Any]
    contiguous: Callable[[Any], Any]
    reshape: Callable[[Any, tuple[int, ...]], Any]
    new: Callable[[tuple[int, ...], Any], Any]  # (shape, like) -> uninitialized array of like's dtype
    wrap: Callable[[np.ndarray], Any]  # a numpy array as this library's array, sharing memory
    to_numpy: Callable[[Any], np.ndarray]  # a (small) array's values as numpy, e.g. indices
    # (n, index, rows, block sizes) -> out of n rows, out[t] = the sum of rows[i] with index[i] == t, block
    # by block in order; within a block the indices are distinct.
    sum_rows: Callable[[int, np.ndarray, Any, np.ndarray], Any]
    matmul: Callable[[Any, Any, Any], None]  # (a, b, out)
    divide: Callable[[Any, int], None]  # in place
    is_mine: Callable[[Any], bool]


def numpy_kit() -> ArrayKit:
    """The kit for numpy arrays."""

    def divide(x: np.ndarray, p: int) -> None:
        if np.issubdtype(x.dtype, np.integer):
            np.floor_divide(x, p, out=x)
        else:
            np.divide(x, p, out=x, casting="unsafe")

    return ArrayKit(
        "numpy",
        ndim=lambda x: x.ndim,
        shape=lambda x: tuple(x.shape),
        dtype=lambda x: x.dtype,
        movedim=lambda x, src, dst: np.moveaxis(x, src, dst),
        contiguous=np.ascontiguousarray,
        reshape=lambda x, shape: x.reshape(shape),
        new=lambda shape, like: np.empty(shape, dtype=like.dtype),
        wrap=lambda x: x,
        to_numpy=np.asarray,
        sum_rows=_sum_rows_numpy,
        matmul=lambda a, b, out: np.matmul(a, b, out=out),
        divide=divide,
        is_mine=lambda x: isinstance(x, np.ndarray),
    )


def _sum_rows_numpy(n: int, index: np.ndarray, rows: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    out = np.zeros((n, *rows.shape[1:]), dtype=rows.dtype)
    at = 0
    for k, size in enumerate(blocks.tolist()):
        where, block = index[at : at + size], rows[at : at + size]
        if k == 0:
            out[where] = block  # into zeros: a store instead of a load, an add and a store
        else:
            out[where] += block
        at += size
    return out


def torch_kit() -> ArrayKit:
    """The kit for CPU torch tensors (imports torch)."""
    import torch

    def divide(x: torch.Tensor, p: int) -> None:
        if x.is_floating_point():
            x.div_(p)
        else:
            x.div_(p, rounding_mode="floor")

    def wrap(x: np.ndarray) -> torch.Tensor:
        if x.dtype == ml_dtypes.bfloat16:  # numpy has no bfloat16 of its own: reinterpret the bits
            return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(x)

    def dtype(x: torch.Tensor) -> np.dtype:
        return as_array(torch.empty(0, dtype=x.dtype), name="tensor", op="dtype", writable=False).dtype

    def sum_rows(n: int, index: np.ndarray, rows: torch.Tensor, blocks: np.ndarray) -> torch.Tensor:
        out = torch.zeros((n, *rows.shape[1:]), dtype=rows.dtype)
        at = 0
        for size in blocks.tolist():  # blocks in order, so the sums do not depend on torch's scheduling
            where = torch.from_numpy(np.ascontiguousarray(index[at : at + size], dtype=np.int64))
            out.index_add_(0, where, rows[at : at + size].detach())
            at += size
        return out

    return ArrayKit(
        "torch",
        ndim=lambda x: x.dim(),
        shape=lambda x: tuple(x.shape),
        dtype=dtype,
        movedim=lambda x, src, dst: torch.movedim(x, src, dst),
        contiguous=lambda x: x.detach().contiguous(),
        reshape=lambda x, shape: x.reshape(shape),
        new=lambda shape, like: torch.empty(shape, dtype=like.dtype),
        wrap=wrap,
        to_numpy=lambda x: x.detach().cpu().numpy(),
        sum_rows=sum_rows,
        matmul=lambda a, b, out: torch.matmul(a.detach(), b.detach(), out=out),
        divide=divide,
        is_mine=is_torch,
    )


def array_kit(op: str, x: Any, name: str) -> ArrayKit:
    """The kit for ``x``'s library, or a one-line :class:`CommError` naming ``op`` and ``name``.

    >>> array_kit("all_gather_matmul", np.ones(2), "a_shard").name
    'numpy'
    """
    if is_cuda_array(x):
        raise CommError(f"{op}: {name} is in GPU memory; {op} runs on the CPU runtime today (numpy arrays, CPU tensors)", op=op)
    if is_torch(x):
        if x.device.type != "cpu":
            raise CommError(f"{op}: {name} is on {x.device}; {op} runs on CPU tensors today", op=op)
        return torch_kit()
    if isinstance(x, np.ndarray):
        return numpy_kit()
    raise CommError(f"{op}: {name} must be a numpy array or a CPU torch tensor, got {type(x).__name__}", op=op)
