"""Collectives: specifications, the Program IR, its DSL, the verifier and the algorithm library."""

from synccl.collectives._algorithm import Algorithm, Step, Transfer, chunk_destinations, chunk_sources
from synccl.collectives._dsl import ChunkRef, ProgramBuilder, chunk, current_program, program
from synccl.collectives._execution import Connection, Event, Schedule, schedule
from synccl.collectives._fuse import FUSED_KINDS, FusedKind, compute_channel, consume_output, fused_ring, produce_input
from synccl.collectives._msccl_xml import (
    MSCCL_LIMITS,
    ExecutorLimits,
    XmlError,
    from_msccl_xml,
    load_msccl_xml,
    save_msccl_xml,
    to_msccl_xml,
)
from synccl.collectives._oracle import REDUCE_OPS, ReduceOp, expected_outputs, reduce_arrays
from synccl.collectives._program import OP_SEMANTICS, Channel, Dependency, Instruction, Op, OpSemantics, Program, RankProgram, Slice
from synccl.collectives._spec import Buffer, Collective, CollectiveSpec, Contribution, parse_collective
from synccl.collectives._transform import replicate
from synccl.collectives._verifier import VerificationReport, check, verify

__all__ = [
    "Algorithm",
    "ExecutorLimits",
    "MSCCL_LIMITS",
    "XmlError",
    "from_msccl_xml",
    "load_msccl_xml",
    "save_msccl_xml",
    "to_msccl_xml",
    "REDUCE_OPS",
    "ReduceOp",
    "expected_outputs",
    "reduce_arrays",
    "ChunkRef",
    "ProgramBuilder",
    "Step",
    "Transfer",
    "chunk",
    "chunk_destinations",
    "chunk_sources",
    "current_program",
    "program",
    "replicate",
    "Buffer",
    "Channel",
    "Collective",
    "CollectiveSpec",
    "Connection",
    "Contribution",
    "Dependency",
    "Event",
    "Instruction",
    "Op",
    "OP_SEMANTICS",
    "OpSemantics",
    "Program",
    "RankProgram",
    "Schedule",
    "Slice",
    "VerificationReport",
    "check",
    "parse_collective",
    "schedule",
    "verify",
    "FUSED_KINDS",
    "FusedKind",
    "compute_channel",
    "consume_output",
    "fused_ring",
    "produce_input",
]
