"""Synthesis: lower bounds on collective time, and synthesizers that approach them."""

from synccl.synth._bounds import EXACT_CUT_VERTICES, Bound, bandwidth_bound, latency_bound, lower_bound

__all__ = [
    "EXACT_CUT_VERTICES",
    "Bound",
    "bandwidth_bound",
    "latency_bound",
    "lower_bound",
]
