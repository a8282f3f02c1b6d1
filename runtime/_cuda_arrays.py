"""GPU buffers as the host side of the runtime sees them: host *placeholders* standing for device memory.

A collective on GPU buffers is prepared by the same code as one on host buffers (argument checks,
Program selection, plan compilation, encoding); that code only ever looks at addresses, sizes and
dtypes. So a GPU buffer enters it as a :class:`Placeholder`'s numpy array: the same dtype and size,
over address space reserved for it and never backed by memory: it reads as zeros (so printing it,
or a traceback showing it, is harmless) and writing it faults (so a host path that wrote GPU
results would crash at once instead of losing them). The CUDA engine maps any address inside a
placeholder back to the device::

    device address = device base + (host address - placeholder base)

GPU buffers are recognized through ``__cuda_array_interface__`` (CuPy, Numba, and torch CUDA
tensors, which export it; a bfloat16 tensor is read as int16 and keeps its dtype). Nothing here
needs CuPy or a GPU.
"""

from __future__ import annotations

import math
import mmap
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from synccl.exceptions import CommError

__all__ = ["DeviceArray", "Placeholder", "describe", "device_address", "on_device", "placeholder_array", "placeholder_of"]

#: Placeholders kept for reuse (the same device buffer gets the same host addresses, so prepared
#: calls are found again and in-place calls are recognized); the oldest is dropped beyond this.
PLACEHOLDER_CACHE = 256


@dataclass(frozen=True, slots=True)
class DeviceArray:
    """A contiguous GPU buffer: where it is, how large, of which element type.

    ``device`` is the CUDA device ordinal when the object tells it (torch, CuPy), else ``None``;
    ``torch`` says the buffer is a torch tensor (its collectives run on torch's current stream).
    """

    pointer: int
    nbytes: int
    dtype: np.dtype
    readonly: bool
    device: int | None
    torch: bool


def _is_torch(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "data_ptr")


def describe(obj: Any, *, name: str, op: str) -> DeviceArray:
    """The device buffer behind ``obj`` (a CuPy array, a CUDA torch tensor, any ``__cuda_array_interface__``).

    Parameters
    ----------
    obj : object
        The GPU array; it must be C-contiguous.
    name, op : str
        The argument and the collective, for error messages.

    Returns
    -------
    DeviceArray
        Its device pointer, size in bytes, numpy dtype, and whether it is read-only.

    Raises
    ------
    CommError
        If it is not contiguous or carries a mask.

    Examples
    --------
    >>> class Buffer:  # what CuPy or Numba export
    ...     __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (0x7f0000000000, False), "version": 3, "strides": None}
    >>> describe(Buffer(), name="buf", op="allreduce")
    DeviceArray(pointer=139637976727552, nbytes=24, dtype=dtype('float32'), readonly=False, device=None, torch=False)
    """
    torch = _is_torch(obj)
    dtype_override = None
    device = None
    if torch:
        device = obj.device.index
        source = obj.detach()
        if str(source.dtype) == "torch.bfloat16":  # torch exports no bfloat16 typestr: read its bits as int16
            import torch as torch_module

            source, dtype_override = source.view(torch_module.int16), np.dtype(ml_dtypes.bfloat16)
        interface = source.__cuda_array_interface__
    else:
        interface = obj.__cuda_array_interface__
        device = getattr(getattr(obj, "device", None), "id", None)  # CuPy arrays name their device
    if interface.get("mask") is not None:
        raise CommError(f"{op}: {name} is a masked GPU array; pass its data", op=op)
    shape = tuple(int(n) for n in interface["shape"])
    dtype = dtype_override or np.dtype(interface["typestr"])
    if dtype.kind == "V" and hasattr(obj, "dtype"):  # CuPy exports ml_dtypes' bfloat16 as '<V2': its dtype says what it is
        dtype = np.dtype(obj.dtype)
    strides = interface.get("strides")
    if strides is not None and not _c_contiguous(shape, tuple(strides), dtype.itemsize):
        raise CommError(f"{op}: {name} must be contiguous (got strides {tuple(strides)}); pass cupy.ascontiguousarray(...) or .contiguous()", op=op)
    pointer, readonly = interface["data"]
    return DeviceArray(int(pointer), math.prod(shape) * dtype.itemsize, dtype, bool(readonly), device, torch)


def _c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> bool:
    expected = itemsize
    for extent, stride in zip(reversed(shape), reversed(strides), strict=True):
        if extent > 1 and stride != expected:
            return False
        expected *= extent
    return True


class Placeholder:
    """Host address space standing for one device buffer: reserved, never backed, read-only.

    Its :attr:`array` (bytes) and views of it are ordinary numpy arrays to code that only reads
    their addresses, sizes and dtypes; their elements read as zeros and writing one faults.

    Examples
    --------
    >>> buffer = DeviceArray(0x7f0000000000, 64, np.dtype("float32"), False, 0, False)
    >>> p = Placeholder(buffer)
    >>> view = p.array.view(np.float32)[4:8]
    >>> placeholder_of(view) is p, device_address(view) - buffer.pointer
    (True, 16)
    """

    def __init__(self, buffer: DeviceArray) -> None:
        self.buffer = buffer
        length = max(buffer.nbytes, 1)
        # A private read-only mapping costs no memory (its pages, if read, are the zero page).
        self._reserved = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ)
        self.host = np.frombuffer(self._reserved, np.uint8, count=1).__array_interface__["data"][0]
        # Writable as numpy sees it (collectives check that outputs are), so a stray write faults.
        self.array: np.ndarray = np.asarray(self)  # its base is this object: views lead back here

    @property
    def __array_interface__(self) -> dict[str, Any]:
        return {"shape": (self.buffer.nbytes,), "typestr": "|u1", "data": (self.host, False), "version": 3}

    def __repr__(self) -> str:
        return f"Placeholder({self.buffer.nbytes} bytes at {self.buffer.pointer:#x} on the GPU, host {self.host:#x})"


_PLACEHOLDERS: OrderedDict[tuple[int, int, bool], Placeholder] = OrderedDict()


def placeholder_array(obj: Any, *, name: str, op: str) -> np.ndarray:
    """A flat numpy array of ``obj``'s dtype and size whose addresses stand for ``obj``'s device memory.

    The same device buffer gets the same placeholder while it is among the last
    :data:`PLACEHOLDER_CACHE` ones used. A read-only buffer gives a read-only array.

    Examples
    --------
    >>> class Buffer:
    ...     __cuda_array_interface__ = {"shape": (6,), "typestr": "<i8", "data": (0x7f0000000000, True), "version": 3}
    >>> a = placeholder_array(Buffer(), name="buf", op="allreduce")
    >>> a.shape, a.dtype, a.flags.writeable, device_address(a) == 0x7f0000000000
    ((6,), dtype('int64'), False, True)
    """
    buffer = describe(obj, name=name, op=op)
    key = (buffer.pointer, buffer.nbytes, buffer.torch)
    placeholder = _PLACEHOLDERS.pop(key, None)
    if placeholder is None or placeholder.buffer.device != buffer.device:
        placeholder = Placeholder(buffer)
    _PLACEHOLDERS[key] = placeholder
    while len(_PLACEHOLDERS) > PLACEHOLDER_CACHE:
        _PLACEHOLDERS.popitem(last=False)  # arrays still holding it keep its addresses reserved
    array = placeholder.array.view(buffer.dtype)
    if buffer.readonly:
        array.flags.writeable = False
    return array


def placeholder_of(array: np.ndarray) -> Placeholder | None:
    """The placeholder ``array`` is a view of, or ``None`` for an ordinary host array."""
    obj: Any = array
    while obj is not None:
        if isinstance(obj, Placeholder):
            return obj
        obj = getattr(obj, "base", None)
    return None


def device_address(array: np.ndarray) -> int | None:
    """The device address of ``array``'s first element, or ``None`` for an ordinary host array."""
    placeholder = placeholder_of(array)
    if placeholder is None:
        return None
    return placeholder.buffer.pointer + (array.__array_interface__["data"][0] - placeholder.host)


def on_device(arrays: Any) -> bool:
    """Whether any of ``arrays`` (a mapping's values or an iterable) stands for GPU memory.

    >>> on_device({"in": np.zeros(3)})
    False
    """
    values = arrays.values() if hasattr(arrays, "values") else arrays
    return any(placeholder_of(a) is not None for a in values)
