"""Mixture-of-experts expert parallelism: token dispatch and combine, and an MoE layer for torch.

``dispatch`` / ``combine`` follow DeepEP's shapes (:mod:`synccl.moe._dispatch`); routing and
expert capacity are GShard's (:mod:`synccl.moe._routing`).

>>> from synccl.moe import combine, dispatch
"""

from __future__ import annotations

from synccl.moe._dispatch import DispatchHandle, combine, dispatch
from synccl.moe._routing import Routing, capacity, plan_routing
from synccl.moe._verify import check_dispatch

__all__ = ["DispatchHandle", "Routing", "capacity", "check_dispatch", "combine", "dispatch", "plan_routing"]
