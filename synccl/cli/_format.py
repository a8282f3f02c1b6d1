"""Plain-text tables and JSON for the command line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["table", "print_json"]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces.

    >>> print(table(["a", "bb"], [[1, "x"], [22, "y"]]))
    a   bb
    1   x
    22  y
    """
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def print_json(payload: Any) -> None:
    """Print ``payload`` as indented JSON with sorted keys."""
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))
