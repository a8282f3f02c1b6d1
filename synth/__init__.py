"""Synthesis: lower bounds on collective time, and synthesizers that approach them (SMT and Pareto search, tree packing, all-to-all LP)."""

from synccl.synth._bounds import EXACT_CUT_VERTICES, Bound, bandwidth_bound, latency_bound, lower_bound, phased_all_reduce_bound
from synccl.synth._flow import FlowSchedule, flow_all_to_all
from synccl.synth._install import InstallResult, install, installed
from synccl.synth._pareto import Attempt, ParetoPoint, ParetoResult, pareto_frontier, rounds_per_chunk_bound, verdict
from synccl.synth._smt import steps_lower_bound, synthesize
from synccl.synth._trees import FLAT_RANKS, MAX_CHUNKS, TREE_COLLECTIVES, Certificate, Tree, TreePacking, TreePhase, pack_trees

__all__ = [
    "FlowSchedule",
    "flow_all_to_all",
    "Certificate",
    "FLAT_RANKS",
    "MAX_CHUNKS",
    "TREE_COLLECTIVES",
    "Tree",
    "TreePacking",
    "TreePhase",
    "pack_trees",
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
    "phased_all_reduce_bound",
    "pareto_frontier",
    "rounds_per_chunk_bound",
    "steps_lower_bound",
    "synthesize",
    "verdict",
]
