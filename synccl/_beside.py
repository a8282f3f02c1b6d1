"""A second core for one job: a task runs in a forked child while the caller works on.

Lowering and verifying a Program at a thousand ranks is a minute of pure Python in one
process. Parts of it are independent (the race pass and the symbolic execution; the structure
check and the schedule; the ranks a lowering finishes one by one), so a child forked from the
caller does one part (:class:`Beside`) or a share of a map (:func:`map_beside`): it sees
every object as it was at the fork (copy on write) and sends back only its result, pickled
through a pipe.

The child is used only where that is safe and useful: on Linux, with no other Python thread
running (a thread that held a lock at the fork would leave it held in the child; native
worker pools such as BLAS's or HiGHS's hold no lock the child's pure-Python task takes), and
with a second CPU to run on. Anywhere else -- and whenever the child fails or dies -- the task
runs in the caller when its result is asked for, so results never depend on the child.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

__all__ = ["Beside", "map_beside", "can_fork", "WORTH_FORKING_FROM"]

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


def map_beside(work: Callable[[int], T], count: int) -> list[T]:
    """``[work(i) for i in range(count)]``, shared with a forked child where :func:`can_fork` allows.

    The caller takes indices from the front and the child from the back, each announcing the
    index on a shared page before taking it, so they meet wherever their speeds put them: a
    fixed split left the caller waiting seconds for a child slowed by copy-on-write faults or
    a busy host. The child pickles each value as soon as it has it, into one stream whose memo
    shares equal objects between values. An index both took is kept once (the caller's); one
    neither took (both announced it at once) is made by the caller at the end, as is the rest
    of the child's share if it fails. ``work`` must give equal values for an index wherever it
    runs, and its side effects stay in the process that ran it.

    Examples
    --------
    >>> map_beside(lambda i: i * i, 5)
    [0, 1, 4, 9, 16]
    """
    if count < 2 or not can_fork():
        return [work(i) for i in range(count)]
    board = mmap.mmap(-1, 16)  # anonymous and shared: the child's announcements are seen here
    ends = memoryview(board).cast("q")  # [next index from the front, lowest index taken from the back]
    ends[0], ends[1] = 0, count

    def from_the_back() -> tuple[list[int], bytes]:
        stream = io.BytesIO()
        pickler = pickle.Pickler(stream, protocol=pickle.HIGHEST_PROTOCOL)
        taken = []
        while True:
            index = ends[1] - 1
            ends[1] = index
            if index < ends[0]:
                return taken, stream.getvalue()
            pickler.dump(work(index))
            taken.append(index)

    made: dict[int, T] = {}
    try:
        with Beside(from_the_back) as child:
            while True:
                index = ends[0]
                ends[0] = index + 1
                if index >= ends[1]:
                    break
                made[index] = work(index)
            taken, stream = child.result()
    finally:
        ends.release()
        board.close()
    reader = pickle.Unpickler(io.BytesIO(stream))  # noqa: S301 - written by our own child a moment ago
    for index in taken:
        made.setdefault(index, reader.load())  # loaded in order, whether kept or not: the stream's memo needs every value
    return [made[i] if i in made else work(i) for i in range(count)]
