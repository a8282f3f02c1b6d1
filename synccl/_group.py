"""Who takes part in a layer-level call: a synccl Communicator, or the one behind a torch process group.

:mod:`synccl.overlap` and :mod:`synccl.moe` take ``comm=`` or ``group=``; torch is imported only
when a group is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from synccl.exceptions import CommError
from synccl.runtime import Communicator

__all__ = ["run_on"]


def run_on(comm: Communicator | None, group: Any, op: str, run: Callable[[Communicator], Any]) -> Any:
    """Run ``run`` with ``comm``, or with the Communicator of torch ``group`` in that group's order of operations.

    Without either, the default torch group is used (it must be on the "synccl" backend).
    ``run`` checks its arguments itself: a :class:`CommError` it raises is posted for the peers.
    """
    if comm is not None and group is not None:
        raise CommError(f"{op}: pass comm= or group=, not both", op=op)
    if comm is not None:
        if not isinstance(comm, Communicator):
            raise CommError(f"{op}: comm must be a synccl Communicator, got {type(comm).__name__}", op=op)
        return _refusing(comm, run)
    return _run_in_group(group, op, lambda c: _refusing(c, run))


def _refusing(comm: Communicator, run: Callable[[Communicator], Any]) -> Any:
    """``run(comm)``; an argument this rank rejects is posted for the peers, which raise instead of waiting for it."""
    try:
        return run(comm)
    except CommError as err:
        comm._refuse(err)
        raise


def _run_in_group(group: Any, op: str, run: Callable[[Communicator], Any]) -> Any:
    """Run ``run`` on the Communicator of torch ``group`` (the default group if ``None``), in the group's order of operations."""
    import torch
    import torch.distributed as dist

    from synccl.runtime._torch_backend import SynccclProcessGroup

    if group is None:
        if not dist.is_available() or not dist.is_initialized():
            raise CommError(f"{op}: pass comm= (a synccl Communicator) or group=, or init_process_group('synccl') first", op=op)
        group = dist.group.WORLD
    backend = group if isinstance(group, SynccclProcessGroup) else _backend_of(group, torch.device("cpu"))
    if not isinstance(backend, SynccclProcessGroup):
        raise CommError(f"{op}: group runs on the {dist.get_backend(group)!r} backend; overlapped compute needs a group on 'synccl'", op=op)
    return backend.run_exclusive(run)


def _backend_of(group: Any, device: Any) -> Any:
    try:
        return group._get_backend(device)
    except (AttributeError, RuntimeError):
        return None
