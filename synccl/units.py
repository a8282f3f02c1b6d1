"""Message sizes and element types as people write them: ``64MiB``, ``1G``, ``4K``, ``4096``; ``float``, ``bf16``.

Suffixes are binary as in nccl-tests (``1K`` = 1024 bytes, ``1G`` = 2**30); ``KiB``/``KB`` and
friends mean the same. Type names are nccl-tests' or numpy's (:func:`parse_dtype`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["parse_size", "format_size", "parse_dtype", "nccl_type_name"]

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)
# nccl-tests type name -> numpy name; numpy names map to themselves.
_NCCL_NAMES = {"half": "float16", "float": "float32", "double": "float64", "bfloat16": "bfloat16", "int8": "int8", "int32": "int32", "int64": "int64"}
_ALIASES = {"float16": "float16", "float32": "float32", "float64": "float64", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "fp64": "float64"}


def parse_size(text: str | int) -> int:
    """Bytes in ``text``.

    >>> parse_size("64MiB"), parse_size("1G"), parse_size("4096"), parse_size("8k")
    (67108864, 1073741824, 4096, 8192)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"size: must be >= 0 bytes, got {text!r}")
        return text
    match = _PATTERN.match(str(text))
    if not match:
        raise ValueError(f"size: cannot read {text!r}; write e.g. 4096, 8K, 64MiB or 1G")
    number, unit = float(match.group(1)), match.group(2).upper()
    value = number * _UNITS[unit]
    if value != int(value):
        raise ValueError(f"size: {text!r} is not a whole number of bytes")
    return int(value)


def format_size(nbytes: int) -> str:
    """The shortest exact binary rendering: ``64MiB``, ``1536B``, ``4KiB``.

    >>> format_size(67108864), format_size(1536), format_size(0)
    ('64MiB', '1536B', '0B')
    """
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale}{unit}"
    return f"{nbytes}B"


def parse_dtype(name: str) -> np.dtype:
    """The numpy dtype for an nccl-tests or numpy type name (``float``, ``half``, ``bfloat16``, ``int32``, ``float64`` ...).

    bfloat16 is ``ml_dtypes.bfloat16``, the numpy spelling torch and JAX interoperate with.

    Parameters
    ----------
    name : str
        ``float``, ``half``, ``bfloat16``, ``double``, ``int8``, ``int32``, ``int64`` (nccl-tests) or
        ``float32``, ``float16``, ``float64`` (numpy); ``fp16``/``bf16``/``fp32``/``fp64`` too.

    Returns
    -------
    numpy.dtype
        The element type.

    Raises
    ------
    ValueError
        If the name is unknown.

    Examples
    --------
    >>> parse_dtype("float"), parse_dtype("half"), parse_dtype("bfloat16").itemsize
    (dtype('float32'), dtype('float16'), 2)
    """
    key = str(name).strip().lower()
    canonical = _NCCL_NAMES.get(key) or _ALIASES.get(key)
    if canonical is None:
        valid = ", ".join(sorted({*_NCCL_NAMES, *_ALIASES}))
        raise ValueError(f"dtype: unknown data type {name!r}; valid: {valid}")
    import ml_dtypes  # imported on use: sizes alone need neither numpy nor ml_dtypes
    import numpy as np

    return np.dtype(ml_dtypes.bfloat16) if canonical == "bfloat16" else np.dtype(canonical)


def nccl_type_name(dtype: np.dtype) -> str:
    """The name nccl-tests prints in its ``type`` column.

    >>> nccl_type_name(parse_dtype("float32")), nccl_type_name(parse_dtype("bf16"))
    ('float', 'bfloat16')
    """
    import numpy as np

    name = np.dtype(dtype).name
    return next(nccl for nccl, numpy_name in _NCCL_NAMES.items() if numpy_name == name)
