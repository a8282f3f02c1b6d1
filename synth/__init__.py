"""Synthesis: lower bounds on collective time, and synthesizers that approach them (SMT, Pareto search)."""

from synccl.synth._bounds import EXACT_CUT_VERTICES, Bound, bandwidth_bound, latency_bound, lower_bound
from synccl.synth._install import InstallResult, install, installed
from synccl.synth._pareto import Attempt, ParetoPoint, ParetoResult, pareto_frontier, rounds_per_chunk_bound, verdict
from synccl.synth._smt import steps_lower_bound, synthesize

__all__ = [
    "Attempt",
    "InstallResult",
    "install",
    "installed",
    "EXACT_CUT_VERTICES",
    "ParetoPoint",
    "ParetoResult",
    "Bound",
    "bandwidth_bound",
    "latency_bound",
    "lower_bound",
    "pareto_frontier",
    "rounds_per_chunk_bound",
    "steps_lower_bound",
    "synthesize",
    "verdict",
]
