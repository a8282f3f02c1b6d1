"""Finding the synccl Communicator behind a torch process group (imported only when one is used)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from synccl.exceptions import CommError
from synccl.runtime import Communicator

__all__ = ["run_in_group"]


def run_in_group(group: Any, op: str, run: Callable[[Communicator], Any]) -> Any:
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
