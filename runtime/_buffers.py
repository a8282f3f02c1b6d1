"""User buffers as flat numpy arrays: numpy arrays as they are, CPU torch tensors as zero-copy views.

GPU buffers (CuPy arrays, CUDA torch tensors: anything with ``__cuda_array_interface__``) become
placeholders of the same dtype and size whose addresses stand for the device memory
(:mod:`synccl.runtime._cuda_arrays`); the CUDA engine runs the collectives on them.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from synccl.exceptions import CommError
from synccl.runtime._cuda_arrays import placeholder_array

__all__ = ["DTYPES", "as_array", "dtype_code", "is_cuda_array", "is_torch"]

#: The element types the runtime moves and reduces, in the order of their call-check codes.
DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(t) for t in (np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.bool_)
)
_CODES = {dt: code for code, dt in enumerate(DTYPES)}


def dtype_code(dtype: np.dtype) -> int:
    """The small integer that stands for ``dtype`` in call checks."""
    return _CODES[np.dtype(dtype)]


def is_torch(obj: Any) -> bool:
    """Whether ``obj`` is a torch tensor (without importing torch)."""
    return type(obj).__module__.startswith("torch") and hasattr(obj, "data_ptr")


def is_cuda_array(obj: Any) -> bool:
    """Whether ``obj`` lives in GPU memory: a CUDA torch tensor or an object with ``__cuda_array_interface__``.

    >>> class Buffer:
    ...     __cuda_array_interface__ = {"shape": (4,), "typestr": "<f4", "data": (0x7f0000000000, False), "version": 3}
    >>> is_cuda_array(Buffer()), is_cuda_array(np.zeros(4))
    (True, False)
    """
    if is_torch(obj):
        return obj.device.type == "cuda"  # every tensor has the attribute; CPU ones raise when it is read
    return hasattr(obj, "__cuda_array_interface__")


def as_array(obj: Any, *, name: str, op: str, writable: bool, device_ok: bool = True) -> np.ndarray:
    """A flat numpy view of a contiguous numpy array or CPU torch tensor (no copy), or a GPU buffer's placeholder.

    ``device_ok=False`` refuses GPU buffers (for operations without a GPU path).

    >>> as_array(np.zeros((2, 3), np.float32), name="buf", op="allreduce", writable=True).shape
    (6,)
    """
    if is_cuda_array(obj):
        if not device_ok:
            raise CommError(f"{op}: {name} is in GPU memory, which {op} does not move yet; pass a host array", op=op)
        arr = placeholder_array(obj, name=name, op=op)
    elif is_torch(obj):
        arr = _torch_view(obj, name=name, op=op)
    elif isinstance(obj, np.ndarray):
        arr = obj
    else:
        raise CommError(f"{op}: {name} must be a numpy array or a CPU torch tensor, got {type(obj).__name__}", op=op)
    if arr.dtype not in _CODES:
        valid = ", ".join(str(d) for d in DTYPES)
        raise CommError(f"{op}: {name} has dtype {arr.dtype}, which synccl does not move; use one of {valid}", op=op)
    if not arr.flags.c_contiguous:
        raise CommError(f"{op}: {name} must be contiguous (got strides {arr.strides}); pass np.ascontiguousarray(...) or .contiguous()", op=op)
    if writable and not arr.flags.writeable:
        raise CommError(f"{op}: {name} is read-only but the collective writes it", op=op)
    return arr.reshape(-1)


def _torch_view(tensor: Any, *, name: str, op: str) -> np.ndarray:
    import torch

    if tensor.device.type != "cpu":
        raise CommError(f"{op}: {name} is on {tensor.device}; the CPU runtime moves CPU tensors (the GPU runtime moves CUDA ones)", op=op)
    if not tensor.is_contiguous():
        raise CommError(f"{op}: {name} must be contiguous; call .contiguous() first", op=op)
    if tensor.dtype == torch.bfloat16:
        return tensor.detach().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    try:
        return tensor.detach().numpy()
    except (TypeError, RuntimeError) as err:
        raise CommError(f"{op}: {name} of dtype {tensor.dtype} cannot be moved: {err}", op=op) from None
