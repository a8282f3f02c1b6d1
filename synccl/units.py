"""Message sizes as people write them: ``64MiB``, ``1G``, ``4K``, ``4096``.

Suffixes are binary as in nccl-tests (``1K`` = 1024 bytes, ``1G`` = 2**30); ``KiB``/``KB`` and
friends mean the same.
"""

from __future__ import annotations

import re

__all__ = ["parse_size", "format_size"]

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


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
