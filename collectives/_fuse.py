"""Fusing computation into a collective: compute steps that consume or produce its chunks.

Tensor-parallel layers put a collective next to a matmul: an all-gather before it (sequence
parallelism's column-parallel linear) or a reduce-scatter after it (row-parallel). Decomposed,
the matmul runs block by block as the blocks arrive, or produces the blocks in the order the
collective first sends them, so transfers and compute overlap (torch's async TP, Flux,
TransformerEngine's userbuffers). Here that decomposition is a Program: each rank gets one more
channel, its compute stream, holding PRODUCE or CONSUME steps ordered against the transfers by
dependencies, so the verifier proves that every step reads only data that has arrived and that
the result is the unfused computation, and the simulator times compute and transfers together.

The collective's own instructions are unchanged (a consumer adds no dependency to them; a
producer makes each transfer that first reads an input chunk wait for the step computing it).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Literal

from synccl.collectives import library
from synccl.collectives._execution import schedule
from synccl.collectives._program import Channel, Dependency, Instruction, Op, Program, RankProgram, Slice
from synccl.collectives._spec import Buffer, CollectiveSpec
from synccl.collectives._verifier import verify
from synccl.exceptions import ProgramError

__all__ = ["FusedKind", "FUSED_KINDS", "consume_output", "produce_input", "compute_channel", "fused_ring"]

#: The fused operations of tensor parallelism (torch's ``fused_all_gather_matmul`` and ``fused_matmul_reduce_scatter``).
FusedKind = Literal["all_gather_matmul", "matmul_reduce_scatter"]
FUSED_KINDS: tuple[str, ...] = ("all_gather_matmul", "matmul_reduce_scatter")


def consume_output(program: Program, kernel: str) -> Program:
    """``program`` followed, block by block, by ``kernel`` on every rank's output (all-gather + matmul).

    Each rank's compute stream consumes every output chunk with a postcondition once, as soon as
    the instruction that writes its final value has run, in the order those writes happen in one
    valid execution (on a ring: own block first, then the blocks as they come around).

    >>> from synccl.collectives import library, verify
    >>> fused = consume_output(library.build("ring", "all_gather", 2), "matmul")
    >>> print(fused.ranks[0].channels[-1].instructions[1])
    consume matmul src=output[1:2] deps=1.0
    >>> verify(fused).instructions
    10
    """
    _check_plain(program, "consume_output")
    spec = program.spec
    final_writer: dict[tuple[int, Buffer, int], tuple[int, int, int]] = {}  # location -> (position, channel, index)
    for pos, ev in enumerate(schedule(program).events):
        ins = ev.instruction
        if ins.op.writes_dst:
            for i in range(ins.dst.index, ins.dst.index + ins.dst.count):
                final_writer[(ev.rank, *spec.resolve(ev.rank, ins.dst.buffer, i))] = (pos, ev.channel, ev.index)
    ranks = []
    for rp in program.ranks:
        steps = []
        for idx in spec.postcondition(rp.rank):
            writer = final_writer.get((rp.rank, *spec.resolve(rp.rank, Buffer.OUTPUT, idx)))
            when, deps = (-1, ()) if writer is None else (writer[0], (Dependency(writer[1], writer[2]),))  # in place: already there
            steps.append((when, idx, Instruction(Op.CONSUME, src=Slice(Buffer.OUTPUT, idx), deps=deps, kernel=kernel)))
        steps.sort(key=lambda s: (s[0], s[1]))
        stream = Channel(len(rp.channels), None, None, tuple(ins for _, _, ins in steps))
        ranks.append(replace(rp, channels=(*rp.channels, stream)))
    return replace(program, name=f"{program.name}+{kernel}", ranks=tuple(ranks))


def produce_input(program: Program, kernel: str) -> Program:
    """``kernel`` producing every rank's input, block by block, in the order ``program`` first reads it (matmul + reduce-scatter).

    Each rank's compute stream produces every input chunk once; a transfer that reads an input
    chunk waits for the step that produced it, so the first blocks travel while later ones are
    still being computed.

    >>> from synccl.collectives import library, verify
    >>> fused = produce_input(library.build("ring", "reduce_scatter", 2), "matmul")
    >>> [str(ins) for ins in fused.ranks[0].channels[-1].instructions]
    ['produce matmul dst=input[1:2]', 'produce matmul dst=input[0:1]']
    >>> verify(fused).collective
    'reduce_scatter'
    """
    _check_plain(program, "produce_input")
    spec = program.spec
    # Where each rank's input chunks live once in-place aliasing is resolved.
    input_at = [{spec.resolve(rank, Buffer.INPUT, k): k for k in spec.precondition(rank)} for rank in range(spec.nranks)]
    first_read: dict[tuple[int, int], int] = {}  # (rank, input chunk) -> schedule position of its first read
    for pos, ev in enumerate(schedule(program).events):
        for k in _input_chunks_read(spec, input_at[ev.rank], ev.rank, ev.instruction):
            first_read.setdefault((ev.rank, k), pos)
    ranks = []
    for rp in program.ranks:
        unread = len(first_read) + 1
        chunks = sorted(spec.precondition(rp.rank), key=lambda k: (first_read.get((rp.rank, k), unread), k))
        step_of = {k: n for n, k in enumerate(chunks)}
        stream_id = len(rp.channels)
        channels = []
        for ch in rp.channels:
            instructions = []
            for ins in ch.instructions:
                needed = sorted({step_of[k] for k in _input_chunks_read(spec, input_at[rp.rank], rp.rank, ins)})
                extra = tuple(Dependency(stream_id, n) for n in needed)
                instructions.append(replace(ins, deps=ins.deps + extra) if extra else ins)
            channels.append(replace(ch, instructions=tuple(instructions)))
        stream = Channel(stream_id, None, None, tuple(Instruction(Op.PRODUCE, dst=Slice(Buffer.INPUT, k), kernel=kernel) for k in chunks))
        ranks.append(RankProgram(rp.rank, (*channels, stream), rp.scratch_chunks))
    return replace(program, name=f"{kernel}+{program.name}", ranks=tuple(ranks))


@lru_cache(maxsize=64)
def fused_ring(kind: FusedKind, nranks: int, *, pieces: int = 1, order: tuple[int, ...] | None = None) -> Program:
    """The verified ring decomposition of ``kind`` on ``nranks`` ranks, each block moved in ``pieces`` chunks.

    ``order`` is the ring's rank order (the topology's ring; ``0..n-1`` by default). The Program
    is verified before it is returned, so every caller runs or times a proven schedule.

    >>> p = fused_ring("matmul_reduce_scatter", 4, pieces=2)
    >>> p.name, p.spec.chunk_factor
    ('matmul+ring_reduce_scatter_n4_c1_p2', 2)
    """
    if kind == "all_gather_matmul":
        program = consume_output(library.build("ring", "all_gather", nranks, pieces=pieces, order=order), "matmul")
    elif kind == "matmul_reduce_scatter":
        program = produce_input(library.build("ring", "reduce_scatter", nranks, pieces=pieces, order=order), "matmul")
    else:
        raise ProgramError(f"fused_ring: kind must be one of {', '.join(FUSED_KINDS)}, got {kind!r}")
    verify(program)
    return program


def compute_channel(rank_program: RankProgram) -> Channel | None:
    """The rank's compute stream: its channel of compute steps, if it has one.

    >>> from synccl.collectives import library
    >>> compute_channel(library.build("ring", "all_gather", 2).ranks[0]) is None
    True
    """
    for ch in rank_program.channels:
        if any(ins.op.semantics.computes for ins in ch.instructions):
            return ch
    return None


def _check_plain(program: Program, what: str) -> None:
    if program.computes:
        raise ProgramError(f"{what}: {program.name!r} already has compute steps")


def _local_reads(ins: Instruction) -> tuple[Slice, ...]:
    """The local slices an instruction reads."""
    sem = ins.op.semantics
    return tuple(s for s, reads in ((ins.src, sem.reads_src), (ins.dst, sem.reads_dst)) if reads and s is not None)


def _input_chunks_read(spec: CollectiveSpec, input_at: dict[tuple[Buffer, int], int], rank: int, ins: Instruction) -> set[int]:
    """The rank's input chunks that ``ins`` reads (``input_at``: resolved location -> input chunk)."""
    out = set()
    for where in _local_reads(ins):
        for i in range(where.index, where.index + where.count):
            k = input_at.get(spec.resolve(rank, where.buffer, i))
            if k is not None:
                out.add(k)
    return out
