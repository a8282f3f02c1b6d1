"""Simulation: time a Program on a Topology with an event-driven, max-min fair flow model."""

from synccl.sim._engine import simulate
from synccl.sim._fairness import max_min_rates
from synccl.sim._moe import MoeShape, choose_moe_degree, exchange_us, moe_layer_us
from synccl.sim._overlap import FUSIONS, OverlapEstimate, estimate_overlap, ring_order
from synccl.sim._plot import plot_busbw
from synccl.sim._result import LinkUsage, SimResult, busbw_factor
from synccl.sim._routing import Route, routes
from synccl.sim._sweep import compare, size_range, sweep

__all__ = [
    "FUSIONS",
    "LinkUsage",
    "MoeShape",
    "choose_moe_degree",
    "exchange_us",
    "moe_layer_us",
    "OverlapEstimate",
    "estimate_overlap",
    "ring_order",
    "Route",
    "SimResult",
    "busbw_factor",
    "compare",
    "max_min_rates",
    "plot_busbw",
    "routes",
    "simulate",
    "size_range",
    "sweep",
]
