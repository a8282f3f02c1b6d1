"""HiGHS solvers that print nothing: the one place synccl creates a ``highspy.Highs``.

HiGHS writes its banner ("Running HiGHS 1.x ...") to the C library's standard output the first
time a solver is created in a process, before any option can be set, so ``output_flag`` alone
cannot silence it and Python's ``sys.stdout`` never sees it. :func:`silent_highs` swallows that
banner once per process by pointing file descriptor 1 at ``/dev/null`` around the first
construction; every solver it returns has ``output_flag`` off, so ``--json`` output stays JSON.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading

import highspy

__all__ = ["silent_highs"]

_BANNER_LOCK = threading.Lock()


def silent_highs() -> highspy.Highs:
    """A new HiGHS solver with its console output off; no byte reaches stdout, banner included.

    Returns
    -------
    highspy.Highs
        An empty model with ``output_flag`` set to False.

    Examples
    --------
    >>> highs = silent_highs()
    >>> highs.getNumCol(), highs.getNumRow()
    (0, 0)
    """
    with _BANNER_LOCK:
        _swallow_banner()
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    return highs


@functools.cache
def _swallow_banner() -> None:
    """Create (and drop) the process's first solver with file descriptor 1 on /dev/null: HiGHS prints its banner then, once."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all: nothing to protect
        highspy.Highs()
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        highspy.Highs()
        ctypes.CDLL(None).fflush(None)  # a banner still in C's buffer goes to /dev/null, not later to the real stdout
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
