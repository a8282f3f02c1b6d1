"""The chunk-level Algorithm form (what SMT synthesis emits) and its lowering to a Program.

An Algorithm is a sequence of steps; each step moves whole chunks between ranks, either as a
copy or, for combining collectives, as a reduction into the receiver's partial result. Chunks are
numbered globally (see :func:`chunk_sources` and :func:`chunk_destinations`); ``rounds`` says how
many bandwidth rounds a step takes (SCCL's cost model).
"""

from __future__ import annotations

from dataclasses import dataclass

from synccl._gcpause import gc_paused
from synccl.collectives._dsl import ProgramBuilder
from synccl.collectives._lowering import RefKey
from synccl.collectives._program import Program
from synccl.collectives._spec import Buffer, Collective, CollectiveSpec
from synccl.exceptions import ProgramError

__all__ = ["Transfer", "Step", "Algorithm", "chunk_sources", "chunk_destinations"]


@dataclass(frozen=True, slots=True)
class Transfer:
    """Move global chunk ``chunk`` from ``src`` to ``dst``; ``reduce`` combines it into dst's partial.

    ``lane`` picks the connection ``(src, dst, lane)``: transfers on different lanes run on
    different channels, so one waiting for its data never holds up another.
    """

    chunk: int
    src: int
    dst: int
    reduce: bool = False
    lane: int = 0


@dataclass(frozen=True, slots=True)
class Step:
    """Transfers that may run concurrently, taking ``rounds`` bandwidth rounds."""

    transfers: tuple[Transfer, ...]
    rounds: int = 1


@dataclass(frozen=True, slots=True)
class Algorithm:
    """A chunk-level schedule for ``spec``.

    Examples
    --------
    >>> spec = CollectiveSpec("all_gather", nranks=2)
    >>> alg = Algorithm("swap", spec, (Step((Transfer(0, 0, 1), Transfer(1, 1, 0))),))
    >>> alg.to_program().num_instructions()
    6
    """

    name: str
    spec: CollectiveSpec
    steps: tuple[Step, ...]
    topology: str | None = None

    @property
    def total_rounds(self) -> int:
        """Sum of the steps' rounds (SCCL's bandwidth cost)."""
        return sum(s.rounds for s in self.steps)

    def to_program(self, *, check: bool = True) -> Program:
        """Lower to a Program through the DSL (and verify it unless ``check=False``)."""
        return _lower_algorithm(self, check=check)


def chunk_sources(spec: CollectiveSpec) -> dict[int, list[tuple[int, int]]]:
    """Global chunk -> the ``(rank, input index)`` pairs holding it (or a contribution to it) at the start.

    >>> chunk_sources(CollectiveSpec("all_gather", nranks=2))
    {0: [(0, 0)], 1: [(1, 0)]}
    """
    n, c, coll = spec.nranks, spec.chunk_factor, spec.collective
    if coll in (Collective.ALL_GATHER, Collective.GATHER):
        return {i * c + k: [(i, k)] for i in range(n) for k in range(c)}
    if coll in (Collective.BROADCAST, Collective.SCATTER):
        return {g: [(spec.root, g)] for g in range(spec.input_chunks)}
    if coll is Collective.ALL_TO_ALL:
        return {(i * n + j) * c + k: [(i, j * c + k)] for i in range(n) for j in range(n) for k in range(c)}
    # Combining: every rank contributes to every chunk.
    return {g: [(r, g) for r in range(n)] for g in range(spec.input_chunks)}


def chunk_destinations(spec: CollectiveSpec) -> dict[int, list[tuple[int, int]]]:
    """Global chunk -> the ``(rank, output index)`` pairs that must hold it at the end.

    >>> chunk_destinations(CollectiveSpec("reduce_scatter", nranks=2))
    {0: [(0, 0)], 1: [(1, 0)]}
    """
    n, c, coll, root = spec.nranks, spec.chunk_factor, spec.collective, spec.root
    if coll is Collective.ALL_GATHER:
        return {g: [(r, g) for r in range(n)] for g in range(n * c)}
    if coll is Collective.GATHER:
        return {g: [(root, g)] for g in range(n * c)}
    if coll is Collective.BROADCAST:
        return {g: [(r, g) for r in range(n)] for g in range(c)}
    if coll is Collective.SCATTER:
        return {g: [(g // c, g % c)] for g in range(n * c)}
    if coll is Collective.ALL_TO_ALL:
        return {(i * n + j) * c + k: [(j, i * c + k)] for i in range(n) for j in range(n) for k in range(c)}
    if coll is Collective.REDUCE_SCATTER:
        return {g: [(g // c, g % c)] for g in range(n * c)}
    if coll is Collective.ALL_REDUCE:
        return {g: [(r, g) for r in range(n)] for g in range(c)}
    return {g: [(root, g)] for g in range(c)}  # REDUCE


@gc_paused()
def _lower_algorithm(alg: Algorithm, *, check: bool) -> Program:
    spec = alg.spec
    builder = ProgramBuilder(alg.name, spec)
    # Chunk-rank pairs are keyed by the integer ``chunk * nranks + rank``: a thousand ranks hold
    # millions of them, and tuple keys cost as much again to build, hash and free.
    n = spec.nranks
    final = {g * n + r: idx for g, places in chunk_destinations(spec).items() for r, idx in places}
    where: dict[int, RefKey] = {}  # chunk * n + rank -> where the rank holds the chunk now
    for g, places in chunk_sources(spec).items():
        for r, idx in places:
            where[g * n + r] = (r, Buffer.INPUT, idx, 1)
    scratch = [0] * spec.nranks

    def writable(g: int, r: int) -> RefKey:
        """Where rank r keeps chunk g: its output slot if it has one, else fresh scratch."""
        slot = final.get(g * n + r)
        if slot is not None:
            return (r, Buffer.OUTPUT, slot, 1)
        current = where.get(g * n + r)
        if current is not None and current[1] is Buffer.SCRATCH:
            return current
        scratch[r] += 1
        return (r, Buffer.SCRATCH, scratch[r] - 1, 1)

    # The references made here are in bounds by construction (the spec's input and output slots,
    # fresh scratch), so operations are recorded without a ChunkRef each (see ProgramBuilder.operation).
    for s, step in enumerate(alg.steps):
        for t in step.transfers:
            source = where.get(t.chunk * n + t.src)
            if source is None:
                raise ProgramError(
                    f"algorithm {alg.name!r} step {s}: rank {t.src} does not hold chunk {t.chunk} when it sends it to rank {t.dst}"
                )
            if not isinstance(t.dst, int) or not 0 <= t.dst < spec.nranks or t.dst == t.src:
                raise ProgramError(f"algorithm {alg.name!r} step {s}: bad destination rank {t.dst!r} for chunk {t.chunk}")
            if t.reduce:
                mine = where.get(t.chunk * n + t.dst)
                if mine is None:
                    raise ProgramError(f"algorithm {alg.name!r} step {s}: rank {t.dst} has no partial of chunk {t.chunk} to reduce into")
                target = mine if mine[1] is not Buffer.INPUT or spec.inplace else writable(t.chunk, t.dst)
                builder.operation("reduce", source, target, local=mine, lane=t.lane, step=s)
            else:
                target = writable(t.chunk, t.dst)
                builder.operation("copy", source, target, lane=t.lane, step=s)
            where[t.chunk * n + t.dst] = target
    # Chunks that end where they started (e.g. a rank's own allgather slot) still need their copy;
    # it is ordered after the last step so that it never holds up a channel's sends.
    for key, idx in final.items():
        held = where.get(key)
        if held is None or (held[1] is Buffer.OUTPUT and held[2] == idx):
            continue  # in place already -- or missing, which the verifier reports with its location
        r = key % n
        if spec.resolve(r, held[1], held[2]) != spec.resolve(r, Buffer.OUTPUT, idx):
            builder.operation("copy", held, (r, Buffer.OUTPUT, idx, 1), step=len(alg.steps))
            where[key] = (r, Buffer.OUTPUT, idx, 1)
    return builder.build(check=check)
