"""Running a fused Program on the CPU: the kernel moves data on one thread while this one computes.

A fused Program (:mod:`synccl.collectives._fuse`) gives each rank a compute stream beside its
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
from synccl.runtime._kernel_abi import State
from synccl.runtime._plan import Step

if TYPE_CHECKING:
    from synccl.runtime._world import World

__all__ = ["ComputeFn", "run_alongside"]

#: Runs one compute step (a PRODUCE or CONSUME of one tile) over the step's views.
ComputeFn = Callable[[Step], None]

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
        _compute_steps(plan, compute, mover)
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


def _compute_steps(plan: native.NativePlan, compute: ComputeFn, mover: threading.Thread) -> None:
    state = plan.state
    for channel, steps in enumerate(plan.plan.channels):
        if not native.host_channel(steps):
            continue
        for done, step in enumerate(steps):
            if not _wait_for(state, step.deps, mover):
                return  # the transfers stopped: their error is raised by the caller
            compute(step)
            state[channel, State.POSITION] = done + 1  # transfers that depend on this step may go


def _wait_for(state, deps: tuple[tuple[int, int], ...], mover: threading.Thread) -> bool:
    """Wait until every ``(channel, steps)`` dependency has completed; ``False`` if the kernel stopped first."""
    checks = 0
    for channel, needed in deps:
        while state[channel, State.POSITION] < needed:
            if not mover.is_alive():
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
