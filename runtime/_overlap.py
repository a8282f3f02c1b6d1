"""Running a fused Program on the CPU: the kernel moves data on one thread while this one computes.

A fused Program (:mod:`synccl.collectives._fuse`, run out of place) gives each rank a compute stream beside its
transfer channels. The native engine runs the transfer channels on a helper thread (the host
build is called through ctypes, which releases the GIL); the calling thread runs the compute
steps in stream order, each once the transfer steps it depends on have completed, and publishes
its progress in the same channel-state table the kernel reads -- so a transfer that depends on a
compute step (matmul + reduce-scatter) waits for it exactly as for another channel. NumPy and
torch matmuls release the GIL too, so both threads run at once.

Ordering: the kernel publishes a step's position with a release store after its data writes,
and this thread stores its position after the compute step's writes; x86-64 (the host build's
target here) keeps stores in order, and its loads are not reordered with older loads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from synccl.exceptions import CommError
from synccl.runtime import _native as native
from synccl.runtime._kernel_abi import Launch, State

if TYPE_CHECKING:
    from synccl.runtime._world import World

__all__ = ["ComputeFn", "run_alongside"]

#: Computes the elements ``[start, stop)`` of the buffer compute steps read (CONSUME: the output) or
#: write (PRODUCE: the input): whole rows of one chunk, the tiles of it that are ready.
ComputeFn = Callable[[int, int], None]

_SPIN_CHECKS = 200  # polls before the waiting thread starts to sleep
_NAP_S = 20e-6


def run_alongside(plan: native.NativePlan, world: World, signature: int, timeout_s: float, label: str, seq: int, compute: ComputeFn) -> None:
    """Run call ``seq``: the kernel on a helper thread, the plan's compute steps on this thread.

    Raises the kernel's :class:`CommError` when the transfers fail; when a compute step raises,
    the kernel is stopped and a :class:`CommError` naming the step is raised from the error (so
    the communicator tells its peers, which stop waiting for this rank).
    """
    native.begin(plan, signature)
    failure: list[BaseException] = []

    def transfers() -> None:
        try:
            native.run(plan, world, signature, timeout_s, label, seq, started=True)
        except BaseException as err:  # noqa: BLE001 - re-raised on the calling thread
            failure.append(err)

    mover = threading.Thread(target=transfers, name=f"synccl-{label}", daemon=True)
    mover.start()
    try:
        completed = _compute_steps(plan, compute, mover)
    except Exception as err:
        native.abort(plan)
        mover.join()
        raise CommError(f"{label}: rank {world.rank}: a compute step failed: {type(err).__name__}: {err}", rank=world.rank, op=label) from err
    except BaseException:  # KeyboardInterrupt and the like: stop the kernel, let it through
        native.abort(plan)
        mover.join()
        raise
    mover.join()
    if failure:
        raise failure[0]
    if not completed:  # the kernel ended without error but short of a compute step's inputs: never silently
        raise CommError(f"{label}: rank {world.rank}: the transfers ended before every compute step's inputs arrived", rank=world.rank, op=label)


def _compute_steps(plan: native.NativePlan, compute: ComputeFn, mover: threading.Thread) -> bool:
    """Run the compute stream in order; each step also takes the later tiles of its chunk that are already ready.

    The plan repeats the stream once per tile, and a chunk's tiles are adjacent rows
    (:class:`~synccl.runtime._plan.RowLayout`), so one call computes every tile of the chunk
    that has arrived: fewer, larger matmuls when compute runs behind the transfers. A step is
    published (its position stored) only once every step before it has run.
    """
    state = plan.state
    bases = {True: int(plan.launch[Launch.OUTPUT]), False: int(plan.launch[Launch.INPUT])}
    for channel, steps in enumerate(plan.plan.channels):
        if not native.host_channel(steps):
            continue
        per_tile = len(steps) // plan.plan.tiles
        computed = [False] * len(steps)
        for i, step in enumerate(steps):
            if not computed[i]:
                if not _wait_for(state, step.deps, mover):
                    return False  # the transfers stopped short: the caller raises why
                last = i
                while last + per_tile < len(steps) and _ready(state, steps[last + per_tile].deps):
                    last += per_tile
                consumes = step.src is not None
                first_view, last_view = (step.src, steps[last].src) if consumes else (step.dst, steps[last].dst)
                start = (_address(first_view) - bases[consumes]) // first_view.itemsize
                stop = (_address(last_view) - bases[consumes]) // last_view.itemsize + last_view.size
                compute(start, stop)
                for j in range(i, last + 1, per_tile):
                    computed[j] = True
            state[channel, State.POSITION] = i + 1  # transfers that depend on this step may go
    return True


def _ready(state, deps: tuple[tuple[int, int], ...]) -> bool:
    return all(state[channel, State.POSITION] >= needed for channel, needed in deps)


def _address(view) -> int:
    return view.__array_interface__["data"][0]


def _wait_for(state, deps: tuple[tuple[int, int], ...], mover: threading.Thread) -> bool:
    """Wait until every ``(channel, steps)`` dependency has completed; ``False`` if the kernel stopped short of it.

    The kernel may finish between a look at its progress and the look at its thread: progress
    is read again after the thread is seen gone, so a finished kernel is never taken for a
    failed one.
    """
    checks = 0
    for channel, needed in deps:
        while state[channel, State.POSITION] < needed:
            if not mover.is_alive():
                if state[channel, State.POSITION] >= needed:
                    break
                return False
            checks += 1
            if checks > _SPIN_CHECKS:
                time.sleep(_NAP_S)
    return True


def require_native(engine: str, runs_natively: bool, label: str, rank: int) -> None:
    """Refuse, in one line, a fused call the native engine cannot run here."""
    if engine != "native":
        raise CommError(f"{label}: overlapped compute runs on the native engine; this communicator uses {engine!r} (SYNCCL_ENGINE)", rank=rank, op=label)
    if not runs_natively:
        raise CommError(f"{label}: overlapped compute needs every peer in shared memory (ranks on other nodes talk over MPI)", rank=rank, op=label)
