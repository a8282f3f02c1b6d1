"""Pausing Python's cyclic garbage collector through bursts of allocation that make no cycles.

Lowering, verifying and exporting a Program allocate millions of small objects (instructions,
events, dictionary entries) that stay alive until the step ends and form no reference cycles.
The collector cannot free any of them, yet every 700 allocations it scans the youngest ones and
ever more often the whole heap: at 1,024 ranks (two million instructions) that scanning took
40% of the time. Reference counting still frees everything as usual while it is paused.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Turn the cyclic collector off inside the block (or decorated function), back on after it.

    Nested uses are safe: only the outermost one turns the collector back on, and only if it
    was on when that block began.

    >>> import gc
    >>> with gc_paused():
    ...     gc.isenabled()
    False
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
