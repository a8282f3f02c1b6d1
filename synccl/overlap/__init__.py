"""Compute-communication overlap for tensor-parallel layers: fused collectives + matmuls as verified Programs.

``all_gather_matmul`` and ``matmul_reduce_scatter`` follow torch's symmetric-memory
``fused_all_gather_matmul`` / ``fused_matmul_reduce_scatter``; ``ColumnParallelLinear`` and
``RowParallelLinear`` (torch modules, imported on first use) build Megatron-style sequence-parallel
layers on them, with autograd.

>>> from synccl.overlap import all_gather_matmul, matmul_reduce_scatter
"""

from __future__ import annotations

import importlib
from typing import Any

from synccl.overlap._api import all_gather_matmul, matmul_reduce_scatter

__all__ = ["all_gather_matmul", "matmul_reduce_scatter", "ColumnParallelLinear", "RowParallelLinear"]

_LAYERS = ("ColumnParallelLinear", "RowParallelLinear")


def __getattr__(name: str) -> Any:
    if name in _LAYERS:  # torch is imported only by those who ask for a layer
        value = getattr(importlib.import_module("synccl.overlap._layers"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'synccl.overlap' has no attribute {name!r}")
