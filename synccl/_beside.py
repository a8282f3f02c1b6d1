"""A second core for one job: a task runs in a forked child while the caller works on.

Lowering and verifying a Program at a thousand ranks is a minute of pure Python in one
process. Parts of it are independent (the race pass and the symbolic execution; the structure
check and the schedule; halves of the ranks), so a child forked from the caller does one
part: it sees every object as it was at the fork (copy on write) and sends back only its
result, pickled through a pipe.

The child is used only where that is safe and useful: on Linux, with no other Python thread
running (a thread that held a lock at the fork would leave it held in the child; native
worker pools such as BLAS's or HiGHS's hold no lock the child's pure-Python task takes), and
with a second CPU to run on. Anywhere else -- and whenever the child fails or dies -- the task
runs in the caller when its result is asked for, so results never depend on the child.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

__all__ = ["Beside", "can_fork", "WORTH_FORKING_FROM"]

T = TypeVar("T")

#: Lowering and verification use a second core for Programs of this many instructions or more;
#: below it a fork costs more than it saves.
WORTH_FORKING_FROM = 200_000


def can_fork() -> bool:
    """Whether a task may run in a forked child here (module docstring).

    >>> isinstance(can_fork(), bool)
    True
    """
    return sys.platform == "linux" and threading.active_count() == 1 and len(os.sched_getaffinity(0)) >= 2


class Beside(Generic[T]):
    """Run ``task`` in a forked child from now on; :meth:`result` returns what it returned.

    Use it as a context manager, so that a child whose result is never asked for is stopped.
    Where :func:`can_fork` is False the task runs in the caller, inside :meth:`result`.

    Examples
    --------
    >>> with Beside(lambda: sum(range(10))) as total:
    ...     mine = sum(range(5))
    ...     (mine, total.result())
    (10, 45)
    """

    def __init__(self, task: Callable[[], T]) -> None:
        self._task = task
        self._pid: int | None = None
        self._pipe: int | None = None
        if not can_fork():
            return
        readable, writable = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a process with native threads; the child runs
            # only the pure-Python task and exits, which takes no lock those threads hold.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: run, send, and leave without running the parent's exit handlers
            os.close(readable)
            status = 1
            try:
                payload = memoryview(pickle.dumps(task(), protocol=pickle.HIGHEST_PROTOCOL))
                while payload:
                    payload = payload[os.write(writable, payload) :]
                status = 0
            finally:
                os._exit(status)
        os.close(writable)
        self._pid, self._pipe = pid, readable

    def result(self) -> T:
        """The task's value: the child's, or computed here if there is no child or it failed."""
        if self._pid is None:
            return self._task()
        pieces = []
        while piece := os.read(self._pipe, 1 << 20):
            pieces.append(piece)
        status = self._reap()
        if status != 0:
            return self._task()  # the child raised or died: a failure here has its real traceback
        return pickle.loads(b"".join(pieces))  # noqa: S301 - written by our own child a moment ago

    def _reap(self) -> int:
        """Wait for the child, close the pipe; the child's exit status (-1 if it was already reaped)."""
        pid, pipe = self._pid, self._pipe
        self._pid = self._pipe = None
        if pipe is not None:
            os.close(pipe)
        if pid is None:
            return -1
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # reaped by someone else (a SIGCHLD handler): its result cannot be trusted
            return -1
        return os.waitstatus_to_exitcode(status)

    def __enter__(self) -> Beside[T]:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._pid is not None:  # the result was never asked for (an error in the caller): stop the child
            os.kill(self._pid, signal.SIGKILL)
            self._reap()
