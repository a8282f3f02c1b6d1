"""A DSL for collective algorithms in the spirit of MSCCLang: chunk references that copy and reduce.

Inside ``with program(name, spec) as prog:`` the functions :func:`chunk`, :meth:`ChunkRef.copy`
and :meth:`ChunkRef.reduce` record operations on chunks; leaving the block lowers them to a
:class:`~synccl.collectives.Program` (instructions, channels, dependencies, fused
receive-and-forward instructions) and verifies it. Every function also accepts the builder
explicitly (``program=prog``); the "current program" lives in a context variable, never in a
module global.

Example: ring allgather on four ranks::

    >>> from synccl.collectives import Buffer, CollectiveSpec, program, chunk
    >>> spec = CollectiveSpec("all_gather", nranks=4)
    >>> with program("ring_allgather", spec) as prog:
    ...     for r in range(4):
    ...         c = chunk(r, Buffer.INPUT, 0).copy(r, Buffer.OUTPUT, r)
    ...         for step in range(1, 4):
    ...             c = c.copy((r + step) % 4, Buffer.OUTPUT, r)
    >>> prog.program.ranks[1].channels[0].send_peer
    2
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from synccl.collectives._lowering import OpRecord, RefKey, lower
from synccl.collectives._program import Program, Protocol
from synccl.collectives._spec import Buffer, Collective, CollectiveSpec
from synccl.collectives._transform import replicate
from synccl.collectives._verifier import verify
from synccl.exceptions import ProgramError

__all__ = ["ProgramBuilder", "ChunkRef", "program", "chunk", "current_program"]

_CURRENT: contextvars.ContextVar[ProgramBuilder | None] = contextvars.ContextVar("synccl_current_program", default=None)


class ProgramBuilder:
    """Collects DSL operations for one Program; :attr:`program` holds the result after :meth:`build`."""

    def __init__(self, name: str, spec: CollectiveSpec, *, protocol: Protocol = "Simple", instances: int = 1) -> None:
        if not isinstance(instances, int) or instances < 1:
            raise ProgramError(f"program {name!r}: instances must be an integer >= 1, got {instances!r}")
        self.name = name
        self.spec = spec
        self.protocol: Protocol = protocol
        self.instances = instances
        self.ops: list[OpRecord] = []
        self._program: Program | None = None
        self._sizes: dict[Buffer, int | None] = {Buffer.INPUT: spec.input_chunks, Buffer.OUTPUT: spec.output_chunks, Buffer.SCRATCH: None}  # scratch grows on demand

    @property
    def program(self) -> Program:
        """The lowered, verified Program (after the ``with`` block or :meth:`build`)."""
        if self._program is None:
            raise ProgramError(f"program {self.name!r}: not built yet; leave the with-block or call build()")
        return self._program

    def build(self, *, check: bool = True) -> Program:
        """Lower the recorded operations to a Program and (by default) verify it."""
        prog = lower(self.name, self.spec, self.ops, protocol=self.protocol)
        if self.instances > 1:
            prog = replicate(prog, self.instances)
        if check:
            verify(prog)
        self._program = prog
        return prog

    # -- used by ChunkRef ----------------------------------------------------------------
    def ref(self, rank: int, buffer: Buffer | str, index: int, size: int = 1) -> ChunkRef:
        """A checked reference to ``size`` chunks of ``rank``'s ``buffer`` at ``index`` (see :func:`chunk`)."""
        if type(buffer) is not Buffer:
            try:
                buffer = Buffer(buffer)
            except ValueError:
                raise ProgramError(f"chunk: buffer must be input, output or scratch, got {buffer!r}") from None
        if not isinstance(rank, int) or not 0 <= rank < self.spec.nranks:
            raise ProgramError(f"chunk: no rank {rank!r} in a {self.spec.nranks}-rank program {self.name!r}")
        if not isinstance(size, int) or size < 1:
            raise ProgramError(f"chunk: size must be an integer >= 1, got {size!r}")
        limit = self._sizes[buffer]
        if not isinstance(index, int) or index < 0 or (limit is not None and index + size > limit):
            raise ProgramError(self._out_of_bounds(rank, buffer, index, size, limit))
        return ChunkRef(rank, buffer, index, size, self)

    def _out_of_bounds(self, rank: int, buffer: Buffer, index: object, size: int, limit: int | None) -> str:
        """The error for a reference past the buffer: past the end, it says which ``chunk_factor`` would fit it."""
        bound = f"0..{limit - size}" if limit is not None else ">= 0"
        message = f"chunk: rank {rank} {buffer.value}[{index}:{index}+{size}] is out of bounds (index must be {bound})"
        if limit is None or not isinstance(index, int) or index < 0:
            return message
        spec = self.spec
        per_factor = limit // spec.chunk_factor  # chunks this buffer gains per unit of chunk_factor (1 or nranks)
        needed = -(-(index + size) // per_factor)
        hint = (
            f"{message}: the program was made with chunk_factor={spec.chunk_factor}, so {buffer.value} holds {limit} chunk(s) per rank "
            f"({spec.describe()}); to cut each rank's data into more chunks, pass chunk_factor={needed} or more, "
            f"e.g. CollectiveSpec({spec.collective.value!r}, {spec.nranks}, chunk_factor={needed})"
        )
        if spec.collective is Collective.ALL_REDUCE and needed <= spec.nranks:
            hint += f" (a ring all_reduce on {spec.nranks} ranks uses chunk_factor={spec.nranks})"
        return hint

    def operation(
        self,
        kind: Literal["copy", "reduce"],
        src: RefKey,
        dst: RefKey,
        *,
        local: RefKey | None = None,
        lane: int = 0,
        send_channel: int | None = None,
        recv_channel: int | None = None,
        step: int = 0,
    ) -> None:
        """Record ``dst := src`` (copy) or ``dst := local (+) src`` (reduce) on references already checked.

        :meth:`ChunkRef.copy` and :meth:`ChunkRef.reduce` check their references and come here;
        lowering an :class:`~synccl.collectives.Algorithm` comes here directly, with references
        it made in bounds itself (millions at a thousand ranks, where building and checking a
        ChunkRef for each was a third of the time).
        """
        if self._program is not None:
            raise ProgramError(f"program {self.name!r}: already built; operations can no longer be added")
        self.ops.append(OpRecord(len(self.ops), kind, src, dst, local, lane, send_channel, recv_channel, step))


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """``size`` consecutive chunks of ``rank``'s ``buffer`` starting at ``index``."""

    rank: int
    buffer: Buffer
    index: int
    size: int = 1
    builder: ProgramBuilder = field(compare=False, repr=False, default=None)  # type: ignore[assignment]

    def split(self, parts: int) -> list[ChunkRef]:
        """Cut into ``parts`` equal references.

        >>> spec = CollectiveSpec("all_reduce", nranks=2, chunk_factor=4)
        >>> with program("p", spec, check=False) as p:
        ...     [c.index for c in chunk(0, Buffer.INPUT, 0, 4).split(2)]
        [0, 2]
        """
        if not isinstance(parts, int) or parts < 1 or self.size % parts:
            raise ProgramError(f"split: cannot cut {self} into {parts!r} equal parts")
        step = self.size // parts
        return [ChunkRef(self.rank, self.buffer, self.index + k * step, step, self.builder) for k in range(parts)]

    def group(self, other: ChunkRef) -> ChunkRef:
        """Join with the adjacent reference ``other`` (same rank and buffer, right after this one)."""
        if (other.rank, other.buffer, other.index) != (self.rank, self.buffer, self.index + self.size):
            raise ProgramError(f"group: {other} does not directly follow {self}")
        return ChunkRef(self.rank, self.buffer, self.index, self.size + other.size, self.builder)

    def copy(
        self,
        rank: int,
        buffer: Buffer | str,
        index: int,
        *,
        lane: int = 0,
        send_channel: int | None = None,
        recv_channel: int | None = None,
        step: int = 0,
    ) -> ChunkRef:
        """Copy these chunks to ``rank``'s ``buffer`` at ``index``; return the destination reference.

        A copy to another rank becomes a send and a receive over connection
        ``(self.rank, rank, lane)``; ``send_channel``/``recv_channel`` pin the channels
        (MSCCL thread blocks) that run them, otherwise channels are assigned automatically.
        ``step`` orders the copy in its channels no earlier than that step (a pipelined
        schedule's order; data dependencies may place it later).
        """
        dst = self.builder.ref(rank, buffer, index, self.size)
        self.builder.operation("copy", self._key(), dst._key(), lane=lane, send_channel=send_channel, recv_channel=recv_channel, step=step)
        return dst

    def reduce(
        self,
        other: ChunkRef,
        *,
        into: ChunkRef | None = None,
        lane: int = 0,
        send_channel: int | None = None,
        recv_channel: int | None = None,
        step: int = 0,
    ) -> ChunkRef:
        """Combine ``other`` (on any rank) with these chunks; return the reference holding the result.

        The result is written over these chunks, or to ``into`` (a same-size reference on this
        rank) so that an out-of-place collective can leave its input untouched. ``lane``,
        channels and ``step`` are as for :meth:`copy`.
        """
        if other.size != self.size:
            raise ProgramError(f"reduce: {self} and {other} differ in size")
        target = into if into is not None else self
        if target.rank != self.rank or target.size != self.size:
            raise ProgramError(f"reduce: into={target} must be on rank {self.rank} with size {self.size}")
        if other.rank == self.rank and into is not None and into._key() != self._key():
            # Local reduce into a third location: copy, then reduce in place there.
            target = self.copy(target.rank, target.buffer, target.index, step=step)
            return target.reduce(other, step=step)
        self.builder.operation("reduce", other._key(), target._key(), local=self._key(), lane=lane, send_channel=send_channel, recv_channel=recv_channel, step=step)
        return ChunkRef(target.rank, target.buffer, target.index, target.size, self.builder)

    def _key(self) -> tuple[int, Buffer, int, int]:
        return (self.rank, self.buffer, self.index, self.size)

    def __str__(self) -> str:
        return f"rank {self.rank} {self.buffer.value}[{self.index}:{self.index + self.size}]"


@contextmanager
def program(
    name: str,
    spec: CollectiveSpec,
    *,
    protocol: Protocol = "Simple",
    instances: int = 1,
    check: bool = True,
) -> Iterator[ProgramBuilder]:
    """Open a DSL program; on a clean exit it is lowered (and verified unless ``check=False``).

    ``instances=k`` replicates the whole algorithm k times over k-fold finer chunks on separate
    lanes and channels (MSCCLang's instances), which multiplies parallelism.

    >>> spec = CollectiveSpec("broadcast", nranks=2)
    >>> with program("bcast", spec) as p:
    ...     _ = chunk(0, Buffer.INPUT, 0).copy(0, Buffer.OUTPUT, 0)
    ...     _ = chunk(0, Buffer.INPUT, 0).copy(1, Buffer.OUTPUT, 0)
    >>> p.program.num_instructions()
    3
    """
    builder = ProgramBuilder(name, spec, protocol=protocol, instances=instances)
    token = _CURRENT.set(builder)
    try:
        yield builder
    finally:
        _CURRENT.reset(token)
    builder.build(check=check)


def current_program() -> ProgramBuilder:
    """The builder of the innermost open ``with program(...)`` block."""
    builder = _CURRENT.get()
    if builder is None:
        raise ProgramError("no current program: call this inside 'with program(...)' or pass program=")
    return builder


def chunk(rank: int, buffer: Buffer | str, index: int, size: int = 1, *, program: ProgramBuilder | None = None) -> ChunkRef:
    """Reference ``size`` chunks of ``rank``'s ``buffer`` starting at ``index``."""
    builder = program if program is not None else current_program()
    return builder.ref(rank, buffer, index, size)
