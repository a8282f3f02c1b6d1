"""Compiling one rank's part of a Program into pipelined slices over real buffers.

A *layout* says which elements every chunk of the input and output buffers covers. A size pass
over the Program's schedule tells how many elements each message and scratch chunk holds (so
uneven splits and all-to-allv work), and which sends read data that nothing writes later (those
may be read in place by the peer when the buffer is registered). Every instruction is then cut
into slices of at most one FIFO slot; both ends cut a message identically, so the k-th slice sent
meets the k-th slice received.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from synccl.collectives import Buffer, Event, Op, Program, Schedule, Slice, schedule
from synccl.collectives._execution import replay
from synccl.exceptions import CommError, ProgramError

__all__ = ["Layout", "ShareLayout", "CountsLayout", "RankPlan", "Step", "compile_plan"]


class Layout:
    """Element ranges of the chunks of a rank's input and output buffers."""

    def range(self, buffer: Buffer, chunk: int) -> tuple[int, int]:
        raise NotImplementedError

    def contribution_size(self, rank: int, chunk: int) -> int | None:
        """Elements of input chunk ``chunk`` of ``rank`` (``None`` when unknown here)."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ShareLayout(Layout):
    """Buffers made of shares of ``share`` elements, each cut into ``chunk_factor`` chunks.

    Chunk ``i`` covers ``[s*m + j*m//c, s*m + (j+1)*m//c)`` with ``s, j = divmod(i, c)``.

    >>> ShareLayout(7, 2).range(Buffer.OUTPUT, 3)
    (10, 14)
    """

    share: int
    chunk_factor: int

    def range(self, buffer: Buffer, chunk: int) -> tuple[int, int]:
        m, c = self.share, self.chunk_factor
        s, j = divmod(chunk, c)
        return s * m + j * m // c, s * m + (j + 1) * m // c

    def contribution_size(self, rank: int, chunk: int) -> int | None:
        lo, hi = self.range(Buffer.INPUT, chunk)
        return hi - lo


@dataclass(frozen=True, slots=True)
class CountsLayout(Layout):
    """All-to-allv: input chunk ``j`` holds ``send_counts[j]`` elements for rank ``j``; output chunk ``i`` what rank ``i`` sent."""

    rank: int
    send_counts: tuple[int, ...]
    recv_counts: tuple[int, ...]

    def range(self, buffer: Buffer, chunk: int) -> tuple[int, int]:
        counts = self.send_counts if buffer is Buffer.INPUT else self.recv_counts
        lo = sum(counts[:chunk])
        return lo, lo + counts[chunk]

    def contribution_size(self, rank: int, chunk: int) -> int | None:
        if rank == self.rank:
            return self.send_counts[chunk]
        if chunk == self.rank:
            return self.recv_counts[rank]
        return None


@dataclass(slots=True)
class Step:
    """One slice of one instruction, ready to execute."""

    op: Op
    channel: int
    instruction: int
    last: bool  # the instruction's last slice
    deps: tuple[tuple[int, int], ...]  # (channel, instruction) that must be complete first
    src: np.ndarray | None
    dst: np.ndarray | None
    recv_peer: int | None
    send_peer: int | None
    lane: int
    nelems: int
    nbytes: int
    dtype: np.dtype
    lend: bool  # the peer may read ``src`` in place instead of a copy
    receiver: object = None  # the connection ends, bound by the communicator
    sender: object = None
    lent_at: tuple[int, int] | None = None  # (region, offset) of ``src`` when lent
    # Views prepared once per call site so the hot loop allocates nothing:
    inbox: list[np.ndarray] | None = None  # the receiver's slots, typed, [:nelems]
    outbox: list[np.ndarray] | None = None  # the sender's slots, typed, [:nelems]
    outbox_bytes: list[memoryview] | None = None  # the same as bytes
    inbox_bytes: list[memoryview] | None = None
    src_bytes: memoryview | None = None
    dst_bytes: memoryview | None = None

    def bind(self, receiver: object, sender: object, lent_at: tuple[int, int] | None) -> None:
        """Attach the connection ends and prepare the views the executor uses."""
        self.receiver, self.sender, self.lent_at = receiver, sender, lent_at
        n = self.nbytes
        if receiver is not None:
            self.inbox = [slot[:n].view(self.dtype) for slot in receiver.slot_arrays]
            self.inbox_bytes = [memoryview(slot[:n]) for slot in receiver.slot_arrays]
        if sender is not None:
            self.outbox = [slot[:n].view(self.dtype) for slot in sender.slot_arrays]
            self.outbox_bytes = [memoryview(slot[:n]) for slot in sender.slot_arrays]
        self.src_bytes = _bytes(self.src)
        self.dst_bytes = _bytes(self.dst)


def _bytes(array: np.ndarray | None) -> memoryview | None:
    """A byte view for memmove-speed copies (``None`` when the array cannot give one)."""
    if array is None or not array.flags.c_contiguous or not array.flags.writeable:
        return None
    return memoryview(array.view(np.uint8)) if array.size else memoryview(bytearray())


@dataclass(slots=True)
class RankPlan:
    """Everything one rank executes for one call."""

    channels: list[list[Step]]
    scratch: np.ndarray
    sends: int
    lends: bool


@lru_cache(maxsize=64)
def _cached_schedule(program: Program) -> Schedule:
    return schedule(program)


class _SizeMachine:
    """Replays the Program tracking how many elements each chunk location holds.

    For rank ``me`` it records every event with the element counts of its ``src`` and ``dst``
    chunks, and the schedule position of the last write to each of its locations.
    """

    def __init__(self, program: Program, layout: Layout, me: int) -> None:
        spec = program.spec
        self.spec = spec
        self.me = me
        self.memory: dict[tuple[int, Buffer, int], int | None] = {}
        self.last_write: dict[tuple[Buffer, int], int] = {}
        self.events: list[tuple[int, Event, list[int | None], list[int | None]]] = []
        self.position = 0
        for rank in range(spec.nranks):
            for k, (r, kk) in spec.precondition(rank).items():
                self.memory[(rank, *spec.resolve(rank, Buffer.INPUT, k))] = layout.contribution_size(r, kk)

    def on_event(self, pos: int, ev: Event) -> None:
        self.position = pos
        if ev.rank == self.me:
            src = ev.instruction.src
            self.events.append((pos, ev, list(self.read(ev, ev.rank, src)) if src is not None else [], []))

    def read(self, event: Event, rank: int, where: Slice) -> tuple[int | None, ...]:
        return tuple(self.memory.get((rank, *self.spec.resolve(rank, where.buffer, i))) for i in range(where.index, where.index + where.count))

    def write(self, event: Event, rank: int, where: Slice, value: tuple[int | None, ...]) -> None:
        if rank == self.me:
            self.events[-1][3].extend(value)
        for offset, size in enumerate(value):
            loc = self.spec.resolve(rank, where.buffer, where.index + offset)
            self.memory[(rank, *loc)] = size
            if rank == self.me:
                self.last_write[loc] = self.position

    def combine(self, event: Event, local: tuple[int | None, ...], received: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(a if a is not None else b for a, b in zip(local, received, strict=True))


def compile_plan(
    program: Program,
    me: int,
    layout: Layout,
    buffers: dict[Buffer, np.ndarray],
    *,
    slice_elems: int,
    registered: tuple[bool, bool] = (False, False),
) -> RankPlan:
    """Rank ``me``'s slices of ``program`` over ``buffers`` (1-D arrays of one dtype).

    ``buffers`` maps the canonical buffers after in-place aliasing (an in-place allreduce
    passes only ``INPUT``). ``registered`` says whether input and output live in registered
    shared memory, which lets sends of data that nothing overwrites later be read in place.
    """
    spec = program.spec
    sizes = _SizeMachine(program, layout, me)
    replay(_cached_schedule(program), sizes, on_event=sizes.on_event)
    my_events = sizes.events

    scratch_sizes: dict[int, int] = {}
    for _, ev, src_sizes, dst_sizes in my_events:
        for where, vals in ((ev.instruction.src, src_sizes), (ev.instruction.dst, dst_sizes)):
            if where is not None and where.buffer is Buffer.SCRATCH:
                for k, v in enumerate(vals):
                    scratch_sizes[where.index + k] = max(scratch_sizes.get(where.index + k, 0), v or 0)
    scratch_offsets: dict[int, int] = {}
    total = 0
    for idx in range(program.ranks[me].scratch_chunks):
        scratch_offsets[idx] = total
        total += scratch_sizes.get(idx, 0)
    dtype = next(iter(buffers.values())).dtype
    scratch = np.empty(total, dtype=dtype)

    def elements(where: Slice, content: list[int | None], ev: Event) -> tuple[np.ndarray, int]:
        first = spec.resolve(me, where.buffer, where.index)
        if first[0] is Buffer.SCRATCH:
            lo = scratch_offsets[first[1]]
            n = sum(v or 0 for v in content) if content else sum(scratch_sizes.get(where.index + k, 0) for k in range(where.count))
            return scratch[lo : lo + n], n
        lo, _ = layout.range(first[0], first[1])
        last = spec.resolve(me, where.buffer, where.index + where.count - 1)
        _, hi = layout.range(last[0], last[1])
        if last[0] is not first[0] or hi < lo:
            raise ProgramError(f"plan: rank {me} channel {ev.channel} instruction {ev.index}: {where} is not contiguous in memory")
        return buffers[first[0]][lo:hi], hi - lo

    channels: list[list[Step]] = [[] for _ in program.ranks[me].channels]
    sends = 0
    lends = False
    for pos, ev, src_sizes, dst_sizes in my_events:
        ins = ev.instruction
        ch = program.ranks[me].channels[ev.channel]
        src = dst = None
        n = 0
        if ins.src is not None:
            src, n = elements(ins.src, src_sizes, ev)
        if ins.dst is not None:
            dst, n_dst = elements(ins.dst, dst_sizes, ev)
            if src is not None and n_dst != n:
                raise CommError(f"plan: rank {me} channel {ev.channel} instruction {ev.index}: {ins.src} holds {n} elements but {ins.dst} holds {n_dst}")
            n = n_dst
        if ins.op.receives and not ins.op.reads_src and dst is None:
            raise ProgramError(f"plan: rank {me} channel {ev.channel} instruction {ev.index}: nowhere to receive")
        lend = False
        if ins.op.sends and not ins.op.receives and ins.src is not None:
            buf, _ = spec.resolve(me, ins.src.buffer, ins.src.index)
            reg = registered[0] if buf is Buffer.INPUT else registered[1] if buf is Buffer.OUTPUT else False
            # Lend only data that no later instruction of this rank overwrites.
            untouched = all(sizes.last_write.get(spec.resolve(me, ins.src.buffer, i), -1) < pos for i in range(ins.src.index, ins.src.index + ins.src.count))
            lend = reg and untouched
        lends = lends or lend
        sends += ins.op.sends
        deps = tuple((d.channel, d.instruction) for d in ins.deps)
        pieces = max(1, -(-n // slice_elems))
        for k in range(pieces):
            lo, hi = k * slice_elems, min(n, (k + 1) * slice_elems)
            channels[ev.channel].append(
                Step(
                    op=ins.op,
                    channel=ev.channel,
                    instruction=ev.index,
                    last=k == pieces - 1,
                    deps=deps if k == 0 else (),
                    src=src[lo:hi] if src is not None else None,
                    dst=dst[lo:hi] if dst is not None else None,
                    recv_peer=ch.recv_peer if ins.op.receives else None,
                    send_peer=ch.send_peer if ins.op.sends else None,
                    lane=ch.lane,
                    nelems=hi - lo,
                    nbytes=(hi - lo) * scratch.dtype.itemsize,
                    dtype=scratch.dtype,
                    lend=lend,
                )
            )
    return RankPlan(channels, scratch, sends, lends)

