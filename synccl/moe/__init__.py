"""Mixture-of-experts expert parallelism: token dispatch and combine, and an MoE layer for torch.

``dispatch`` / ``combine`` follow DeepEP's shapes (:mod:`synccl.moe._dispatch`); routing and
expert capacity are GShard's (:mod:`synccl.moe._routing`); ``check_dispatch`` proves a routing
(:mod:`synccl.moe._verify`); ``MoELayer`` (a torch module, imported on first use) pipelines
them with the experts (:mod:`synccl.moe._layer`).

>>> from synccl.moe import combine, dispatch
"""

from __future__ import annotations

import importlib
from typing import Any

from synccl.moe._dispatch import DispatchHandle, combine, dispatch, send_forward
from synccl.moe._routing import Routing, capacity, plan_routing
from synccl.moe._verify import check_dispatch

__all__ = ["DispatchHandle", "MoELayer", "Routing", "capacity", "check_dispatch", "combine", "dispatch", "plan_routing", "send_forward"]


def __getattr__(name: str) -> Any:
    if name == "MoELayer":  # torch is imported only by those who ask for the layer
        value = importlib.import_module("synccl.moe._layer").MoELayer
        globals()[name] = value
        return value
    raise AttributeError(f"module 'synccl.moe' has no attribute {name!r}")
