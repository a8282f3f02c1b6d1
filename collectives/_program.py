"""The Program: synccl's one intermediate representation of a collective algorithm.

A Program gives every rank a list of *channels* (MSCCL's thread blocks). A channel has at most
one send peer and one receive peer and runs its instructions strictly in order; an instruction
may also wait for instructions of other channels of the same rank (its ``deps``).
Point-to-point traffic flows over *connections* ``(src, dst, lane)``, where ``lane`` is MSCCL's
``chan`` attribute; on every connection the k-th send matches the k-th receive. Sends are
buffered (eager): a send completes once its data is in the connection, and the receiver writes
its destination when it executes the matching receive. This is the semantics of MSCCL's executor,
so Programs map one-to-one onto MSCCL XML.

Instruction semantics (``src`` and ``dst`` are slices of the executing rank's buffers)::

    SEND                   send src to the channel's send peer
    RECV                   dst := received
    COPY                   dst := src
    REDUCE                 dst := dst (+) src
    RECV_COPY_SEND         dst := received; send dst on
    RECV_REDUCE_COPY       dst := src (+) received
    RECV_REDUCE_SEND       send src (+) received on (nothing written locally)
    RECV_REDUCE_COPY_SEND  dst := src (+) received; send dst on
    NOP                    nothing; waits for its deps
    PRODUCE                dst := kernel(the rank's own operands): computes the chunks the collective moves
    CONSUME                result[src] := kernel(src): computes one block of the result from arrived chunks

PRODUCE and CONSUME are *compute steps* (``Instruction.kernel`` names the computation, e.g.
``'matmul'``): a Program with them fuses a collective with the computation around it, as
tensor-parallel layers do (matmul then reduce-scatter; all-gather then matmul). They run on a
channel with no peers -- the rank's compute stream -- and order against transfers through
dependencies like any instruction. A kernel must act block by block: the result block of chunk
``i`` depends on chunk ``i`` alone (a matmul's rows do), which is what lets the verifier prove the
fused Program computes the unfused result.

:data:`OP_SEMANTICS` is the same table in machine-readable form: the verifier, the reference
interpreter, the simulator and the runtime derive what an opcode does from it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from operator import attrgetter
from types import MappingProxyType
from typing import Literal

from synccl.collectives._spec import Buffer, Collective, CollectiveSpec

__all__ = ["Op", "OpSemantics", "OP_SEMANTICS", "Slice", "Dependency", "Instruction", "Channel", "RankProgram", "Program", "Protocol"]

Protocol = Literal["Simple", "LL", "LL128"]


class Op(str, Enum):
    """Instruction opcodes (MSCCL step types ``s r cpy re rcs rrc rrs rrcs nop``).

    What each one does is :attr:`semantics`, a row of :data:`OP_SEMANTICS`.
    """

    SEND = "send"
    RECV = "recv"
    COPY = "copy"
    REDUCE = "reduce"
    RECV_COPY_SEND = "recv_copy_send"
    RECV_REDUCE_COPY = "recv_reduce_copy"
    RECV_REDUCE_SEND = "recv_reduce_send"
    RECV_REDUCE_COPY_SEND = "recv_reduce_copy_send"
    NOP = "nop"
    PRODUCE = "produce"
    CONSUME = "consume"

    @property
    def semantics(self) -> OpSemantics:
        """What the op does (its row of :data:`OP_SEMANTICS`).

        >>> Op.RECV_REDUCE_SEND.semantics.writes_dst
        False
        """
        return OP_SEMANTICS[self]

    @property
    def receives(self) -> bool:
        """Whether the op takes data from the channel's receive peer."""
        return OP_SEMANTICS[self].receives

    @property
    def sends(self) -> bool:
        """Whether the op hands data to the channel's send peer."""
        return OP_SEMANTICS[self].sends

    @property
    def reads_src(self) -> bool:
        """Whether the op reads its local ``src`` slice."""
        return OP_SEMANTICS[self].reads_src

    @property
    def writes_dst(self) -> bool:
        """Whether the op writes its local ``dst`` slice."""
        return OP_SEMANTICS[self].writes_dst

    @property
    def reads_dst(self) -> bool:
        """Whether the op reads ``dst`` before writing it (local reduce)."""
        return OP_SEMANTICS[self].reads_dst


@dataclass(frozen=True, slots=True)
class OpSemantics:
    """What an opcode does: one row of :data:`OP_SEMANTICS`, the table every executor of Programs reads.

    The op's *value* follows from the flags: for a reduction, ``dst (+) src`` when it reads
    ``dst`` and ``src (+) received`` otherwise; else the received message when it receives, else
    ``src`` when it reads it (NOP has no value). The value is written to ``dst`` when
    ``writes_dst`` and sent to the channel's send peer when ``sends``.

    Attributes
    ----------
    receives : bool
        Takes the next message from the channel's receive peer.
    sends : bool
        Hands its value to the channel's send peer.
    reads_src : bool
        Reads its local ``src`` slice (so it needs one).
    reads_dst : bool
        Reads ``dst`` before writing it (the local REDUCE).
    writes_dst : bool
        Writes its local ``dst`` slice (so it needs one).
    reduces : bool
        Combines two operands with the reduction operator.
    local_work : bool
        Makes a pass over local memory: a copy out of ``src`` or a reduction. A plain receive, or
        the copy of RECV_COPY_SEND, writes straight from the connection (the simulator charges
        memory bandwidth only for local work).
    accepts_src : bool
        A ``src`` slice may be given: always when ``reads_src``; RECV_COPY_SEND accepts one and
        ignores it.
    computes : bool
        A compute step: runs ``Instruction.kernel`` instead of moving data. Its value is the
        rank's own contribution to the ``dst`` chunks (PRODUCE) or the kernel applied to ``src``,
        delivered to the rank's result (CONSUME); no MSCCL step type expresses it.

    Examples
    --------
    >>> [op.value for op, s in OP_SEMANTICS.items() if s.receives and s.sends]
    ['recv_copy_send', 'recv_reduce_send', 'recv_reduce_copy_send']
    """

    receives: bool = False
    sends: bool = False
    reads_src: bool = False
    reads_dst: bool = False
    writes_dst: bool = False
    reduces: bool = False
    local_work: bool = False
    accepts_src: bool = False
    computes: bool = False


#: The meaning of every opcode, in one place (see :class:`OpSemantics`); read-only.
OP_SEMANTICS: Mapping[Op, OpSemantics] = MappingProxyType(
    {
        Op.SEND: OpSemantics(sends=True, reads_src=True, accepts_src=True),
        Op.RECV: OpSemantics(receives=True, writes_dst=True),
        Op.COPY: OpSemantics(reads_src=True, writes_dst=True, local_work=True, accepts_src=True),
        Op.REDUCE: OpSemantics(reads_src=True, reads_dst=True, writes_dst=True, reduces=True, local_work=True, accepts_src=True),
        Op.RECV_COPY_SEND: OpSemantics(receives=True, sends=True, writes_dst=True, accepts_src=True),
        Op.RECV_REDUCE_COPY: OpSemantics(receives=True, reads_src=True, writes_dst=True, reduces=True, local_work=True, accepts_src=True),
        Op.RECV_REDUCE_SEND: OpSemantics(receives=True, sends=True, reads_src=True, reduces=True, local_work=True, accepts_src=True),
        Op.RECV_REDUCE_COPY_SEND: OpSemantics(
            receives=True, sends=True, reads_src=True, writes_dst=True, reduces=True, local_work=True, accepts_src=True
        ),
        Op.NOP: OpSemantics(),
        Op.PRODUCE: OpSemantics(writes_dst=True, computes=True),
        Op.CONSUME: OpSemantics(reads_src=True, accepts_src=True, computes=True),
    }
)


def _pickled_by_fields(cls: type) -> type:
    """Pickle ``cls`` as a call ``cls(*fields)``.

    The state functions dataclasses give frozen slotted classes look the fields up again for
    every object, which was most of the second it took to load the 330,000 objects of half a
    1,024-rank Program (what the lowering's helper process sends back).
    """
    values = attrgetter(*(f.name for f in fields(cls)))
    cls.__reduce__ = lambda self: (cls, values(self))  # type: ignore[method-assign]
    return cls


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class Slice:
    """``count`` consecutive chunks of one buffer, starting at ``index``."""

    buffer: Buffer
    index: int
    count: int = 1

    def __str__(self) -> str:
        return f"{self.buffer.value}[{self.index}:{self.index + self.count}]"


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class Dependency:
    """Wait for instruction ``instruction`` of channel ``channel`` on the same rank."""

    channel: int
    instruction: int


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class Instruction:
    """One step of a channel. ``src``/``dst`` are ``None`` where the op has no such operand.

    ``kernel`` names the computation of a compute step (PRODUCE, CONSUME) and is ``None`` otherwise.
    """

    op: Op
    src: Slice | None = None
    dst: Slice | None = None
    deps: tuple[Dependency, ...] = ()
    kernel: str | None = None

    @property
    def count(self) -> int:
        """Chunks the instruction moves (0 for NOP)."""
        operand = self.src or self.dst
        return operand.count if operand is not None else 0

    def __str__(self) -> str:
        parts = [self.op.value if self.kernel is None else f"{self.op.value} {self.kernel}"]
        if self.src is not None:
            parts.append(f"src={self.src}")
        if self.dst is not None:
            parts.append(f"dst={self.dst}")
        if self.deps:
            parts.append("deps=" + ",".join(f"{d.channel}.{d.instruction}" for d in self.deps))
        return " ".join(parts)


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class Channel:
    """An ordered instruction list with at most one send and one receive connection."""

    id: int
    send_peer: int | None
    recv_peer: int | None
    instructions: tuple[Instruction, ...]
    lane: int = 0


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class RankProgram:
    """What one rank runs: its channels and the scratch chunks it needs."""

    rank: int
    channels: tuple[Channel, ...]
    scratch_chunks: int = 0

    def channel(self, channel_id: int) -> Channel:
        """The channel with id ``channel_id`` (ids are ``0..len(channels)-1``)."""
        return self.channels[channel_id]


@dataclass(frozen=True, slots=True, weakref_slot=True)  # weakly referenced: the verifier remembers what it proved
class Program:
    """A collective algorithm for every rank.

    ``min_bytes``/``max_bytes`` state the message sizes the Program is meant for (MSCCL's
    ``minBytes``/``maxBytes``; ``None`` means unbounded).

    Examples
    --------
    >>> from synccl.collectives import library
    >>> prog = library.build("ring", "all_gather", nranks=4)
    >>> prog.nranks, prog.collective.value, prog.ranks[0].channels[0].send_peer
    (4, 'all_gather', 1)
    """

    name: str
    spec: CollectiveSpec
    ranks: tuple[RankProgram, ...]
    protocol: Protocol = "Simple"
    min_bytes: int = 0
    max_bytes: int | None = None
    metadata: tuple[tuple[str, str], ...] = field(default=())

    @property
    def nranks(self) -> int:
        """Number of ranks."""
        return self.spec.nranks

    @property
    def collective(self) -> Collective:
        """Which collective the Program implements."""
        return self.spec.collective

    @property
    def nlanes(self) -> int:
        """Number of lanes: one more than the largest ``Channel.lane`` of any rank (1 without channels).

        This is how many connections a pair of ranks may need (MSCCL's ``nchannels``).

        Examples
        --------
        >>> from synccl.collectives import library
        >>> library.build("ring", "all_reduce", nranks=4, channels=3).nlanes
        3
        """
        return 1 + max((ch.lane for rp in self.ranks for ch in rp.channels), default=0)

    def buffer_chunks(self, rank: int, buffer: Buffer) -> int:
        """Size in chunks of ``rank``'s ``buffer`` (before in-place aliasing)."""
        if buffer is Buffer.INPUT:
            return self.spec.input_chunks
        if buffer is Buffer.OUTPUT:
            return self.spec.output_chunks
        return self.ranks[rank].scratch_chunks

    def instructions(self) -> Iterator[tuple[int, int, int, Instruction]]:
        """Every instruction as ``(rank, channel, index, instruction)``."""
        for rp in self.ranks:
            for ch in rp.channels:
                for i, ins in enumerate(ch.instructions):
                    yield rp.rank, ch.id, i, ins

    @property
    def computes(self) -> bool:
        """Whether the Program has compute steps (it fuses computation with the collective)."""
        return any(ins.op.semantics.computes for _, _, _, ins in self.instructions())

    def num_instructions(self) -> int:
        """Total instruction count over all ranks."""
        return sum(len(ch.instructions) for rp in self.ranks for ch in rp.channels)

    def describe(self) -> str:
        """A multi-line listing of every rank's channels and instructions."""
        lines = [f"program {self.name!r}: {self.spec.describe()}, protocol {self.protocol}"]
        for rp in self.ranks:
            lines.append(f"rank {rp.rank} (scratch {rp.scratch_chunks})")
            for ch in rp.channels:
                lines.append(f"  channel {ch.id} lane {ch.lane} send->{ch.send_peer} recv<-{ch.recv_peer}")
                lines.extend(f"    {i}: {ins}" for i, ins in enumerate(ch.instructions))
        return "\n".join(lines)
