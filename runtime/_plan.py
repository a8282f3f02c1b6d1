"""Compiling one rank's part of a Program into pipelined tiles over real buffers.

Large buffers are cut into ``T`` *tiles*, and the whole Program runs once per tile, tile after
tile in every channel -- the way MSCCL's executor loops over a buffer. Each message of a tile fits
one FIFO slot, so a Program that needs only a few messages in flight per connection runs in
bounded memory, and tile ``t+1`` streams while tile ``t`` finishes. Tiles are disjoint in every
buffer (scratch included), so they never conflict.

A *layout* says which elements each chunk covers within a tile. A single pass over the
Program's schedule tells which chunk *class* each message and scratch chunk carries (its size
follows from the class), and which sends read data that nothing writes later (those may be read
in place by the peer when the buffer is registered).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from synccl.collectives import Buffer, Event, Op, Program, Schedule, Slice, schedule
from synccl.collectives._execution import replay
from synccl.exceptions import CommError, ProgramError

__all__ = ["Layout", "ShareLayout", "RowLayout", "TrafficLayout", "RankPlan", "Step", "check_capacity", "compile_plan", "tile_count"]

#: What a chunk location holds, as far as sizes go (see :meth:`Layout.contribution_class`).
ChunkClass = tuple[int, ...]


class Layout:
    """Element ranges of the chunks of a rank's input and output buffers, per tile."""

    def range(self, buffer: Buffer, chunk: int, tile: int, tiles: int) -> tuple[int, int]:
        raise NotImplementedError

    def contribution_class(self, rank: int, chunk: int) -> ChunkClass:
        """A key such that equal keys mean equal sizes in every tile."""
        raise NotImplementedError

    def class_size(self, cls: ChunkClass, tile: int, tiles: int) -> int:
        raise NotImplementedError

    def largest_chunk(self) -> int:
        """Elements of the largest chunk (before tiling), on this rank."""
        raise NotImplementedError

    def largest_piece(self, tiles: int) -> int:
        """Elements of the largest piece of a chunk in any of ``tiles`` tiles, on this rank."""
        raise NotImplementedError


def _part(lo: int, hi: int, k: int, parts: int) -> tuple[int, int]:
    """The k-th of ``parts`` near-equal pieces of ``[lo, hi)``."""
    n = hi - lo
    return lo + k * n // parts, lo + (k + 1) * n // parts


@dataclass(frozen=True, slots=True)
class ShareLayout(Layout):
    """Buffers made of shares of ``share`` elements, each cut into ``chunk_factor`` chunks.

    Tile ``t`` takes the t-th piece of every share; within it chunk ``j`` takes the j-th piece.

    >>> ShareLayout(8, 2).range(Buffer.OUTPUT, 3, 0, 1)
    (12, 16)
    >>> ShareLayout(8, 2).range(Buffer.OUTPUT, 3, 1, 2)
    (14, 16)
    """

    share: int
    chunk_factor: int

    def range(self, buffer: Buffer, chunk: int, tile: int, tiles: int) -> tuple[int, int]:
        s, j = divmod(chunk, self.chunk_factor)
        lo, hi = _part(s * self.share, (s + 1) * self.share, tile, tiles)
        return _part(lo, hi, j, self.chunk_factor)

    def contribution_class(self, rank: int, chunk: int) -> ChunkClass:
        return (chunk % self.chunk_factor,)

    def class_size(self, cls: ChunkClass, tile: int, tiles: int) -> int:
        lo, hi = _part(0, self.share, tile, tiles)
        a, b = _part(lo, hi, cls[0], self.chunk_factor)
        return b - a

    def largest_chunk(self) -> int:
        return -(-self.share // self.chunk_factor)

    def largest_piece(self, tiles: int) -> int:
        # The largest tile of a share, cut into chunks: rounding up twice can exceed largest_chunk / tiles.
        widest_tile = -(-self.share // tiles)
        return -(-widest_tile // self.chunk_factor)


@dataclass(frozen=True, slots=True)
class RowLayout(Layout):
    """Buffers of whole rows of ``row`` elements: shares of ``share_rows`` rows, each cut into ``chunk_factor`` chunks.

    Unlike :class:`ShareLayout`, tiles and chunks never split a row, and a chunk's tiles follow
    one another in memory (chunk ``j`` is the j-th part of its share; tile ``t`` the t-th part of
    the chunk). So every piece a step touches is a block of rows of a matrix, and the pieces of
    one chunk that have arrived form one block -- what a compute step multiplies at once.

    >>> RowLayout(4, 3, 2).range(Buffer.OUTPUT, 3, 0, 1)
    (18, 24)
    >>> [RowLayout(4, 3, 1).range(Buffer.OUTPUT, 0, t, 2) for t in (0, 1)]
    [(0, 6), (6, 12)]
    """

    share_rows: int
    row: int
    chunk_factor: int

    def range(self, buffer: Buffer, chunk: int, tile: int, tiles: int) -> tuple[int, int]:
        s, j = divmod(chunk, self.chunk_factor)
        lo, hi = _part(s * self.share_rows, (s + 1) * self.share_rows, j, self.chunk_factor)
        lo, hi = _part(lo, hi, tile, tiles)
        return lo * self.row, hi * self.row

    def contribution_class(self, rank: int, chunk: int) -> ChunkClass:
        return (chunk % self.chunk_factor,)

    def class_size(self, cls: ChunkClass, tile: int, tiles: int) -> int:
        lo, hi = _part(0, self.share_rows, cls[0], self.chunk_factor)
        a, b = _part(lo, hi, tile, tiles)
        return (b - a) * self.row

    def largest_chunk(self) -> int:
        return -(-self.share_rows // self.chunk_factor) * self.row

    def largest_piece(self, tiles: int) -> int:
        widest_chunk = -(-self.share_rows // self.chunk_factor)
        return -(-widest_chunk // tiles) * self.row


@dataclass(frozen=True, slots=True)
class TrafficLayout(Layout):
    """All-to-allv over any all_to_all Program: rank ``s``'s block for rank ``d`` is ``traffic[s][d]`` elements.

    Input chunk ``d*c + k`` of a rank is the k-th of ``c = chunk_factor`` pieces of its block for
    rank ``d`` (blocks packed in rank order); output chunk ``s*c + k`` is the k-th piece of what
    rank ``s`` sent it. Every rank knows the whole matrix (the counts are exchanged first), so a
    rank that relays another pair's piece knows its size, and every rank tiles alike.

    >>> layout = TrafficLayout(1, ((0, 4, 2), (3, 0, 5), (1, 1, 0)), 1)
    >>> layout.range(Buffer.INPUT, 2, 0, 1), layout.range(Buffer.OUTPUT, 2, 0, 1)
    ((3, 8), (4, 5))
    """

    rank: int
    traffic: tuple[tuple[int, ...], ...]
    chunk_factor: int = 1

    def range(self, buffer: Buffer, chunk: int, tile: int, tiles: int) -> tuple[int, int]:
        peer, piece = divmod(chunk, self.chunk_factor)
        if buffer is Buffer.INPUT:
            lo, size = sum(self.traffic[self.rank][:peer]), self.traffic[self.rank][peer]
        else:
            lo, size = sum(row[self.rank] for row in self.traffic[:peer]), self.traffic[peer][self.rank]
        lo, hi = _part(lo, lo + size, piece, self.chunk_factor)
        return _part(lo, hi, tile, tiles)

    def contribution_class(self, rank: int, chunk: int) -> ChunkClass:
        return (rank, chunk)  # sizes differ by pair: the class is the contribution itself

    def class_size(self, cls: ChunkClass, tile: int, tiles: int) -> int:
        src, chunk = cls
        dst, piece = divmod(chunk, self.chunk_factor)
        lo, hi = _part(0, self.traffic[src][dst], piece, self.chunk_factor)
        a, b = _part(lo, hi, tile, tiles)
        return b - a

    def largest_chunk(self) -> int:
        return -(-max((count for row in self.traffic for count in row), default=0) // self.chunk_factor)

    def largest_piece(self, tiles: int) -> int:
        return -(-self.largest_chunk() // tiles)


def tile_count(program: Program, largest_piece: Callable[[int], int], itemsize: int, slice_bytes: int) -> int:
    """How many tiles make every message fit one slot of ``slice_bytes``.

    ``largest_piece(tiles)`` gives the elements of the largest piece of a chunk when cut into
    ``tiles`` tiles (:meth:`Layout.largest_piece`); it must be the same on every rank (it is, for
    equal shares).

    >>> from synccl.collectives import library
    >>> tile_count(library.build("ring", "all_reduce", 2), ShareLayout(8 << 20, 2).largest_piece, 4, 1 << 20)
    16
    """
    widest = max((ins.count for _, _, _, ins in program.instructions()), default=1)
    tiles = max(1, -(-widest * largest_piece(1) * itemsize // slice_bytes))
    smallest = largest_piece(1 << 40)  # a piece cannot shrink below one element (one row of a RowLayout)
    while widest * largest_piece(tiles) * itemsize > slice_bytes and largest_piece(tiles) > smallest:
        tiles += 1  # pieces round up: a message of several chunks may need one more tile
    return tiles


@dataclass(slots=True)
class Step:
    """One instruction of one tile, ready to execute."""

    op: Op
    channel: int
    instruction: int
    tile: int
    deps: tuple[tuple[int, int], ...]  # (channel, steps it must have completed)
    src: np.ndarray | None
    dst: np.ndarray | None
    recv_peer: int | None
    send_peer: int | None
    lane: int
    nbytes: int
    dtype: np.dtype
    lend: bool  # the peer may read ``src`` in place instead of a copy
    receiver: object = None  # the connection ends, bound by the communicator
    sender: object = None
    lent_at: tuple[int, int] | None = None  # (region, offset) of ``src`` when lent
    # Views prepared once per call site so the hot loop allocates nothing:
    inbox: list[np.ndarray] | None = None  # the receiver's slots, typed and shaped like the data
    inbox_bytes: list[memoryview] | None = None
    outbox: list[np.ndarray] | None = None  # the sender's slots, typed and shaped
    outbox_bytes: list[memoryview] | None = None
    src_bytes: memoryview | None = None
    dst_bytes: memoryview | None = None
    shape: tuple[int, ...] = field(default=())
    handler: object = None  # the executor's function for ``op``

    def bind(self, receiver: object, sender: object, lent_at: tuple[int, int] | None) -> None:
        """Attach the connection ends and prepare the views the executor uses."""
        self.receiver, self.sender, self.lent_at = receiver, sender, lent_at
        n = self.nbytes
        if receiver is not None:
            self.inbox = [slot[:n].view(self.dtype).reshape(self.shape) for slot in receiver.slot_arrays]
            self.inbox_bytes = [memoryview(slot[:n]) for slot in receiver.slot_arrays]
        if sender is not None:
            self.outbox = [slot[:n].view(self.dtype).reshape(self.shape) for slot in sender.slot_arrays]
            self.outbox_bytes = [memoryview(slot[:n]) for slot in sender.slot_arrays]
        self.src_bytes = _bytes(self.src)
        self.dst_bytes = _bytes(self.dst)


def _bytes(array: np.ndarray | None) -> memoryview | None:
    """A byte view for memmove-speed copies (``None`` when the array cannot give one)."""
    if array is None or not array.flags.c_contiguous or not array.flags.writeable:
        return None
    return memoryview(array.reshape(-1).view(np.uint8)) if array.size else memoryview(bytearray())


@dataclass(slots=True)
class RankPlan:
    """Everything one rank executes for one call."""

    channels: list[list[Step]]
    scratch: np.ndarray
    tiles: int
    lends: bool


@lru_cache(maxsize=64)
def _cached_schedule(program: Program) -> Schedule:
    return schedule(program)


@lru_cache(maxsize=64)
def check_capacity(program: Program, slots: int) -> None:
    """Refuse a Program that cannot finish when a connection holds only ``slots`` messages.

    The verifier assumes buffered sends without bound; the FIFOs hold ``slots`` slices.
    """
    sched = schedule(program, capacity=slots)
    if sched.stalls:
        s = sched.stalls[0]
        raise CommError(f"{program.name}: needs more than SYNCCL_SLOTS={slots} messages in flight (rank {s.rank} channel {s.channel} instruction {s.index} {s.reason}); raise SYNCCL_SLOTS")


class _ClassMachine:
    """Replays the Program tracking which chunk class each location holds.

    For rank ``me`` it records every event with the classes of its ``src`` and ``dst`` chunks,
    and the schedule position of the last write to each of its locations.
    """

    def __init__(self, program: Program, layout: Layout, me: int) -> None:
        spec = program.spec
        self.spec = spec
        self.me = me
        self.memory: dict[tuple[int, Buffer, int], ChunkClass | None] = {}
        self.last_write: dict[tuple[Buffer, int], int] = {}
        self.events: list[tuple[int, Event, list[ChunkClass | None], list[ChunkClass | None]]] = []
        self.position = 0
        for rank in range(spec.nranks):
            for k, (r, kk) in spec.precondition(rank).items():
                self.memory[(rank, *spec.resolve(rank, Buffer.INPUT, k))] = layout.contribution_class(r, kk)

    def on_event(self, pos: int, ev: Event) -> None:
        self.position = pos
        if ev.rank == self.me:
            src = ev.instruction.src
            self.events.append((pos, ev, list(self.read(ev, ev.rank, src)) if src is not None else [], []))

    def read(self, event: Event, rank: int, where: Slice) -> tuple[ChunkClass | None, ...]:
        return tuple(self.memory.get((rank, *self.spec.resolve(rank, where.buffer, i))) for i in range(where.index, where.index + where.count))

    def write(self, event: Event, rank: int, where: Slice, value: tuple[ChunkClass | None, ...]) -> None:
        if rank == self.me:
            self.events[-1][3].extend(value)
        for offset, cls in enumerate(value):
            loc = self.spec.resolve(rank, where.buffer, where.index + offset)
            self.memory[(rank, *loc)] = cls
            if rank == self.me:
                self.last_write[loc] = self.position

    def combine(self, event: Event, local: tuple, received: tuple) -> tuple:
        return tuple(a if a is not None else b for a, b in zip(local, received, strict=True))

    def produce(self, event: Event, rank: int, where: Slice) -> tuple[ChunkClass | None, ...]:
        return self.read(event, rank, where)  # a produced chunk has the size of the input chunk it fills

    def consume(self, event: Event, rank: int, value: tuple) -> None:
        return None  # sizes of results are the caller's (synccl.overlap)


def compile_plan(
    program: Program,
    me: int,
    layout: Layout,
    buffers: dict[Buffer, np.ndarray],
    *,
    tiles: int,
    registered: tuple[bool, bool] = (False, False),
) -> RankPlan:
    """Rank ``me``'s steps of ``program`` over ``buffers`` (1-D arrays of one dtype), in ``tiles`` tiles.

    ``buffers`` maps the canonical buffers after in-place aliasing. ``registered`` says whether
    input and output live in registered shared memory, which lets sends of data that nothing
    overwrites later be read in place.
    """
    spec = program.spec
    classes = _ClassMachine(program, layout, me)
    replay(_cached_schedule(program), classes, on_event=classes.on_event)
    dtype = next(iter(buffers.values())).dtype
    rank_program = program.ranks[me]

    # Scratch: per tile, chunk i of scratch holds whatever class is written there (largest wins).
    scratch_classes: dict[int, set[ChunkClass]] = {}
    for _, ev, src_cls, dst_cls in classes.events:
        for where, values in ((ev.instruction.src, src_cls), (ev.instruction.dst, dst_cls)):
            if where is not None and where.buffer is Buffer.SCRATCH:
                for k, cls in enumerate(values):
                    if cls is not None:
                        scratch_classes.setdefault(where.index + k, set()).add(cls)
    scratch_offsets: dict[tuple[int, int], int] = {}
    total = 0
    for tile in range(tiles):
        for idx in range(rank_program.scratch_chunks):
            scratch_offsets[tile, idx] = total
            total += max((layout.class_size(c, tile, tiles) for c in scratch_classes.get(idx, ())), default=0)
    scratch = np.empty(total, dtype=dtype)

    def view(where: Slice, values: list[ChunkClass | None], ev: Event, tile: int) -> np.ndarray:
        ranges = []
        for k in range(where.count):
            buf, idx = spec.resolve(me, where.buffer, where.index + k)
            if buf is Buffer.SCRATCH:
                cls = values[k] if k < len(values) and values[k] is not None else next(iter(scratch_classes.get(idx, {(0,)})))
                lo = scratch_offsets[tile, idx]
                ranges.append((scratch, lo, lo + layout.class_size(cls, tile, tiles)))
            else:
                lo, hi = layout.range(buf, idx, tile, tiles)
                ranges.append((buffers[buf], lo, hi))
        return _join(ranges, f"rank {me} channel {ev.channel} instruction {ev.index}: {where}")

    per_channel = [len(ch.instructions) for ch in rank_program.channels]
    channels: list[list[Step]] = [[] for _ in rank_program.channels]
    lends = False
    steps_of: list[tuple[int, Event, Slice | None, list, list, bool]] = []
    for pos, ev, src_cls, dst_cls in classes.events:
        ins = ev.instruction
        lend = False
        if ins.op.sends and not ins.op.receives and ins.src is not None:
            buf, _ = spec.resolve(me, ins.src.buffer, ins.src.index)
            reg = registered[0] if buf is Buffer.INPUT else registered[1] if buf is Buffer.OUTPUT else False
            # Lend only data that no later instruction of this rank overwrites.
            lend = reg and all(classes.last_write.get(spec.resolve(me, ins.src.buffer, i), -1) < pos for i in range(ins.src.index, ins.src.index + ins.src.count))
        lends = lends or lend
        steps_of.append((pos, ev, ins.src, src_cls, dst_cls, lend))
    # Tile-major order: every channel runs its whole instruction list for tile 0, then tile 1, ...
    by_channel: list[list[tuple]] = [[] for _ in rank_program.channels]
    for item in steps_of:
        by_channel[item[1].channel].append(item)
    for k, items in enumerate(by_channel):
        items.sort(key=lambda it: it[1].index)
        ch = rank_program.channels[k]
        for tile in range(tiles):
            for _, ev, _, src_cls, dst_cls, lend in items:
                ins = ev.instruction
                src = view(ins.src, src_cls, ev, tile) if ins.src is not None else None
                dst = view(ins.dst, dst_cls, ev, tile) if ins.dst is not None else None
                if src is not None and dst is not None and src.shape != dst.shape and src.size == dst.size:
                    # Contiguous on one side, evenly strided on the other: view both as rows.
                    src, dst = (src.reshape(dst.shape), dst) if src.ndim == 1 else (src, dst.reshape(src.shape)) if dst.ndim == 1 else (src, dst)
                if src is not None and dst is not None and src.shape != dst.shape:
                    raise CommError(f"plan: rank {me} channel {ev.channel} instruction {ev.index}: {ins.src} holds {src.size} elements but {ins.dst} holds {dst.size}")
                shaped = dst if dst is not None else src
                channels[k].append(
                    Step(
                        op=ins.op,
                        channel=k,
                        instruction=ev.index,
                        tile=tile,
                        deps=tuple((d.channel, tile * per_channel[d.channel] + d.instruction + 1) for d in ins.deps),
                        src=src,
                        dst=dst,
                        recv_peer=ch.recv_peer if ins.op.receives else None,
                        send_peer=ch.send_peer if ins.op.sends else None,
                        lane=ch.lane,
                        nbytes=shaped.size * dtype.itemsize if shaped is not None else 0,
                        dtype=dtype,
                        lend=lend,
                        shape=shaped.shape if shaped is not None else (0,),
                    )
                )
    return RankPlan(channels, scratch, tiles, lends)


def _join(ranges: list[tuple[np.ndarray, int, int]], what: str) -> np.ndarray:
    """One view over chunk ranges: 1-D when contiguous, 2-D when evenly strided."""
    base = ranges[0][0]
    if any(arr is not base for arr, _, _ in ranges):
        raise ProgramError(f"plan: {what} spans two buffers")
    if all(ranges[k][2] == ranges[k + 1][1] for k in range(len(ranges) - 1)):
        return base[ranges[0][1] : ranges[-1][2]]
    length = ranges[0][2] - ranges[0][1]
    stride = ranges[1][1] - ranges[0][1]
    if all(hi - lo == length for _, lo, hi in ranges) and all(ranges[k + 1][1] - ranges[k][1] == stride for k in range(len(ranges) - 1)):
        itemsize = base.itemsize
        start = ranges[0][1]
        return np.lib.stride_tricks.as_strided(base[start:], shape=(len(ranges), length), strides=(stride * itemsize, itemsize), writeable=True)
    raise ProgramError(f"plan: {what} is neither contiguous nor evenly strided in memory")
