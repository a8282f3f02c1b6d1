"""User buffers as flat numpy arrays: numpy arrays as they are, CPU torch tensors as zero-copy views."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from synccl.exceptions import CommError

__all__ = ["DTYPES", "as_array", "dtype_code", "is_torch"]

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


def as_array(obj: Any, *, name: str, op: str, writable: bool) -> np.ndarray:
    """A flat numpy view of a contiguous numpy array or CPU torch tensor (no copy).

    >>> as_array(np.zeros((2, 3), np.float32), name="buf", op="allreduce", writable=True).shape
    (6,)
    """
    if is_torch(obj):
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
        raise CommError(f"{op}: {name} is on {tensor.device}; the CPU runtime moves CPU tensors (the GPU runtime needs a CUDA device)", op=op)
    if not tensor.is_contiguous():
        raise CommError(f"{op}: {name} must be contiguous; call .contiguous() first", op=op)
    if tensor.dtype == torch.bfloat16:
        return tensor.detach().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    try:
        return tensor.detach().numpy()
    except (TypeError, RuntimeError) as err:
        raise CommError(f"{op}: {name} of dtype {tensor.dtype} cannot be moved: {err}", op=op) from None
