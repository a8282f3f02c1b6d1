"""Lowering DSL operations to a Program: instructions, channels, dependencies and fusion.

Every operation gets a *depth*: one more than the deepest earlier operation it conflicts with
(read-after-write, write-after-read or write-after-write on a chunk of the same rank), or the
operation's requested ``step`` if that is later (a schedule's pipelining order). Each
channel runs its instructions in ``(depth, sends first, program order)`` order. Taking all
instructions in that order is a valid sequential execution (a dependency always has a smaller
depth, and a send comes no later than its receive), so the lowered Program cannot deadlock and
the k-th send on a connection meets the k-th receive.

Channels: a rank gets one channel per connection end it uses, except that a receive connection
and a send connection are paired into one channel when chunks arrive on the first and leave on
the second (a forwarding pattern, as in a ring). A receive immediately followed in its channel by
the send of exactly the chunks it received is fused into one recv-copy-send (or
recv-reduce-copy-send) instruction, as MSCCLang does. Local copies and reductions run on the
channel of the instruction they wait for. Conflicts across channels become dependencies.
"""

from __future__ import annotations

from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Literal

from synccl._beside import WORTH_FORKING_FROM, map_beside
from synccl._gcpause import gc_paused
from synccl.collectives._program import Channel, Dependency, Instruction, Op, Program, Protocol, RankProgram, Slice
from synccl.collectives._spec import Buffer, ChunkLocations, CollectiveSpec
from synccl.exceptions import ProgramError

__all__ = ["OpRecord", "RefKey", "lower"]

#: ``(rank, buffer, index, size)`` of a chunk reference.
RefKey = tuple[int, Buffer, int, int]
_Conn = tuple[int, int]  # (peer, lane)


@dataclass(slots=True)  # not frozen: a frozen init costs twice as much, and lowering makes millions (treat as immutable)
class OpRecord:
    """One DSL operation: ``dst := src`` (copy) or ``dst := local (+) src`` (reduce)."""

    seq: int
    kind: Literal["copy", "reduce"]
    src: RefKey
    dst: RefKey
    local: RefKey | None
    lane: int
    send_channel: int | None
    recv_channel: int | None
    step: int = 0

    def describe(self) -> str:
        s, d = self.src, self.dst
        return f"{self.kind} #{self.seq} (rank {s[0]} {s[1].value}[{s[2]}:{s[2] + s[3]}] -> rank {d[0]} {d[1].value}[{d[2]}:{d[2] + d[3]}])"


@dataclass(eq=False, slots=True)
class _Ins:
    op: Op
    src: Slice | None
    dst: Slice | None
    key: int  # program order: (depth, send before receive, op seq) as one integer, which sorts faster and is smaller than the tuple
    record: OpRecord
    send_conn: _Conn | None = None
    recv_conn: _Conn | None = None
    pinned: int | None = None
    channel: _Chan | None = None
    deps: dict[int, int] | None = None  # channel -> latest instruction waited for, made when the first one is found
    slot: int = -1  # position in its channel, once channels are final


@dataclass(eq=False, slots=True)
class _Chan:
    send_conn: _Conn | None
    recv_conn: _Conn | None
    pinned: int | None
    items: list[_Ins] = field(default_factory=list)
    id: int = -1


@gc_paused()
def lower(name: str, spec: CollectiveSpec, ops: list[OpRecord], *, protocol: Protocol = "Simple") -> Program:
    """Lower recorded DSL operations to a Program (not yet verified). ``ops[k].seq`` must be ``k``."""
    scratch = _scratch_sizes(spec, ops)
    analysis = _analyse(ops, ChunkLocations(spec, scratch))
    # Equal slices and equal instructions are made once and shared (they are
    # immutable): at a thousand ranks most are repeated on many ranks, and sharing saves both
    # the time to build them and gigabytes.
    slices = _Slices()
    conns: dict[_Conn, _Conn] = {}
    made: dict[tuple, Instruction] = {}
    depth, nops = analysis.depth, len(ops)
    pairs = analysis.forwarding
    by_key = attrgetter("key")

    def finish(rank: int) -> RankProgram:
        """The rank in one go -- its instructions made, channels, fusion, dependencies, frozen instructions.

        Done while the rank's few thousand instructions are in the CPU's caches: made for all
        ranks first, in op order, a rank's instructions lay scattered over gigabytes, and every
        stage spent most of its time waiting for memory. A rank's stages only look at its own
        instructions (conflicts are between ops on the same rank), so ranks are independent.
        """
        items = sorted([_instruction(ops[entry >> 1], entry & 1, depth, nops, slices, conns) for entry in analysis.entries[rank]], key=by_key)
        placed = {ins.record.seq: ins for ins in items}  # an op has one instruction on a rank
        chans = _assign_channels(rank, items, pairs.get(rank, Counter()), analysis.local_preds, placed)
        _fuse(chans, placed, analysis.raw_writer)
        _add_dependencies(analysis.hazards[rank], placed, chans)
        done = RankProgram(rank, tuple(_freeze(c, made) for c in chans), scratch[rank])
        # The rank's working state is freed here, and its memory serves the next rank;
        # emptying the channels breaks the cycles between channels and instructions, which
        # would leave millions of objects at 1,024 ranks to the cyclic collector.
        analysis.entries[rank] = analysis.hazards[rank] = array("q")
        for ch in chans:
            ch.items = []
        return done

    n = spec.nranks
    if 2 * nops < WORTH_FORKING_FROM:
        return Program(name=name, spec=spec, ranks=tuple(map(finish, range(n))), protocol=protocol)
    # On two cores a forked child finishes ranks from the top down while this process goes
    # up, and sends its own back pickled: equal slices and instructions pickle once, so 2 M
    # instructions take 16 MB and 0.4 s to load.
    return Program(name=name, spec=spec, ranks=tuple(map_beside(finish, n)), protocol=protocol)


#: ``_Analysis.raw_writer`` values other than an op: no earlier op wrote the source, or several did.
_NO_WRITER, _SEVERAL_WRITERS = -1, -2


@dataclass(slots=True)
class _Analysis:
    """What lowering learns from the ops in program order, indexed by op seq.

    ``hazards[rank]`` holds the conflicts on ``rank`` as consecutive pairs ``earlier op, later
    op`` -- millions at a thousand ranks, hence machine integers rather than tuples (a conflict
    may appear twice; that changes nothing).
    """

    depth: list[int]
    raw_writer: list[int]  # the one op that wrote an op's source, or _NO_WRITER / _SEVERAL_WRITERS
    local_preds: dict[int, list[int]]  # a local op's conflicting earlier ops (it takes a channel of theirs)
    hazards: list[array]
    entries: list[array]  # per rank, its ops as ``2 * seq + half``: half 0 sends (or runs a local op), half 1 receives
    forwarding: defaultdict[int, Counter[tuple[_Conn, _Conn]]]  # per rank, how often chunks received on one connection leave on another


def _analyse(ops: list[OpRecord], locations: ChunkLocations) -> _Analysis:
    """Depth of every op, the conflicts between ops, and the op each one's source comes from."""
    for k, op in enumerate(ops):
        if op.seq != k:
            raise ProgramError(f"lowering: operation {k} has seq {op.seq}; operations must be numbered in order")
    n = len(ops)
    nranks = len(locations.bases)
    out = _Analysis([0] * n, [_NO_WRITER] * n, {}, [array("q") for _ in range(nranks)], [array("q") for _ in range(nranks)], defaultdict(Counter))
    depth, raw_writer, hazards, local_preds, entries, forwarding = out.depth, out.raw_writer, out.hazards, out.local_preds, out.entries, out.forwarding
    last_writer = locations.table(2 * n)  # location -> the op that wrote it last
    readers = locations.table(2 * n)  # location -> the ops that read it since
    bases = locations.bases
    for op in ops:
        seq = op.seq
        src_rank, src_buffer, src_index, size = op.src
        dst_rank, dst_buffer, dst_index, _ = op.dst
        source = bases[src_rank][src_buffer] + src_index
        dest = bases[dst_rank][dst_buffer] + dst_index
        # The locations the op reads and writes (one of each for the usual one-chunk op).
        reads = (source,) if size == 1 else range(source, source + size)
        writes = (dest,) if size == 1 else range(dest, dest + size)
        on_src: list[int] = []  # earlier ops this one conflicts with on its source rank
        for loc in reads:
            writer = last_writer[loc]
            if writer is not None:
                on_src.append(writer)
        if on_src:
            first = on_src[0]
            if on_src.count(first) == len(on_src):
                raw_writer[seq] = first
                prev = ops[first]
                if src_rank != dst_rank and prev.dst == op.src and prev.src[0] != src_rank and prev.lane == op.lane:
                    forwarding[src_rank][(prev.src[0], prev.lane), (dst_rank, op.lane)] += 1  # received on one connection, leaves on another
            else:
                raw_writer[seq] = _SEVERAL_WRITERS
        on_dst: list[int] = []  # ... and on its destination rank
        if op.local is not None:
            local = bases[op.local[0]][op.local[1]] + op.local[2]
            local_reads = (local,) if size == 1 else range(local, local + size)
            for loc in local_reads:
                writer = last_writer[loc]
                if writer is not None:
                    on_dst.append(writer)
            reads = (*reads, *local_reads)
        for loc in writes:
            writer = last_writer[loc]
            if writer is not None:
                on_dst.append(writer)
            earlier_readers = readers[loc]
            if earlier_readers:
                on_dst.extend(earlier_readers)
        for loc in reads:
            known = readers[loc]
            if known is None:
                readers[loc] = [seq]
            else:
                known.append(seq)
        for loc in writes:
            last_writer[loc] = seq
            readers[loc] = None
        d = op.step  # the depth: past every conflicting op's, and no earlier than the requested step
        if on_src:
            note = hazards[src_rank].extend
            for p in on_src:
                note((p, seq))
                if depth[p] >= d:
                    d = depth[p] + 1
        if on_dst:
            note = hazards[dst_rank].extend
            for p in on_dst:
                note((p, seq))
                if depth[p] >= d:
                    d = depth[p] + 1
        depth[seq] = d
        entries[src_rank].append(2 * seq)
        if src_rank != dst_rank:
            entries[dst_rank].append(2 * seq + 1)
        elif on_src or on_dst:
            local_preds[seq] = on_src + on_dst
    return out


class _Slices(dict[tuple[Buffer, int, int], Slice]):
    """``table[buffer, index, count]`` is the one shared Slice of those chunks, made on first use.

    A dict subclass so that the lookup, made for every operand of millions of instructions,
    stays in C when the slice exists.
    """

    def __missing__(self, key: tuple[Buffer, int, int]) -> Slice:
        found = self[key] = Slice(*key)
        return found


def _instruction(op: OpRecord, half: int, depth: list[int], nops: int, slices: _Slices, conns: dict[_Conn, _Conn]) -> _Ins:
    """The op's instruction on one of its ranks: its send (``half`` 0) or receive (1), or the local copy or reduction.

    Keys order instructions by depth, then sends before receives, then op (``nops`` ops in
    all); connections are shared through ``conns``, as slices are through ``slices``. The
    arguments are positional (op, src, dst, key, record, send_conn, recv_conn, pinned): keywords
    cost a third more per call, and this runs once per instruction.
    """
    src_rank, dst_rank, seq = op.src[0], op.dst[0], op.seq
    receiving = (depth[seq] * 2 + 1) * nops + seq
    if src_rank == dst_rank:
        local_op = Op.COPY if op.kind == "copy" else Op.REDUCE
        return _Ins(local_op, slices[op.src[1:]], slices[op.dst[1:]], receiving, op, None, None, op.send_channel)
    if not half:
        to = (dst_rank, op.lane)
        return _Ins(Op.SEND, slices[op.src[1:]], None, receiving - nops, op, conns.setdefault(to, to), None, op.send_channel)
    by = (src_rank, op.lane)
    if op.kind == "copy":
        return _Ins(Op.RECV, None, slices[op.dst[1:]], receiving, op, None, conns.setdefault(by, by), op.recv_channel)
    return _Ins(Op.RECV_REDUCE_COPY, slices[op.local[1:]], slices[op.dst[1:]], receiving, op, None, conns.setdefault(by, by), op.recv_channel)


def _assign_channels(
    rank: int,
    items: list[_Ins],
    pairs: Counter[tuple[_Conn, _Conn]],
    local_preds: dict[int, list[int]],
    placed: dict[int, _Ins],
) -> list[_Chan]:
    """Give every instruction of ``rank`` a channel; return the channels in id order."""
    pinned: dict[int, _Chan] = {}
    by_send: dict[_Conn, _Chan] = {}
    by_recv: dict[_Conn, _Chan] = {}
    # Pinned channels first: they fix which connections they own.
    for ins in items:
        if ins.pinned is None or (ins.send_conn is None and ins.recv_conn is None):
            continue
        ch = pinned.setdefault(ins.pinned, _Chan(None, None, ins.pinned))
        for role, conn, table in (("sends to", ins.send_conn, by_send), ("receives from", ins.recv_conn, by_recv)):
            if conn is None:
                continue
            attr = "send_conn" if table is by_send else "recv_conn"
            current = getattr(ch, attr)
            if current is not None and current != conn:
                raise ProgramError(
                    f"{ins.record.describe()}: channel {ins.pinned} of rank {rank} already {role} rank {current[0]} on lane {current[1]}"
                )
            owner = table.get(conn)
            if owner is not None and owner is not ch:
                raise ProgramError(
                    f"{ins.record.describe()}: rank {rank} {role} rank {conn[0]} on lane {conn[1]} in channels {owner.pinned} and {ins.pinned}"
                )
            other = ch.recv_conn if table is by_send else ch.send_conn
            if other is not None and other[1] != conn[1]:
                raise ProgramError(f"{ins.record.describe()}: channel {ins.pinned} of rank {rank} would mix lanes {other[1]} and {conn[1]}")
            setattr(ch, attr, conn)
            table[conn] = ch
    # Automatic channels: pair forwarding connections, most frequent pattern first.
    auto: list[_Chan] = []
    for (recv_conn, send_conn), _ in sorted(pairs.items(), key=lambda kv: -kv[1]):
        if recv_conn in by_recv or send_conn in by_send:
            continue
        ch = _Chan(send_conn, recv_conn, None)
        by_send[send_conn] = by_recv[recv_conn] = ch
        auto.append(ch)
    for ins in items:
        if ins.send_conn is not None and ins.send_conn not in by_send:
            by_send[ins.send_conn] = ch = _Chan(ins.send_conn, None, None)
            auto.append(ch)
        if ins.recv_conn is not None and ins.recv_conn not in by_recv:
            by_recv[ins.recv_conn] = ch = _Chan(None, ins.recv_conn, None)
            auto.append(ch)
    # Place instructions (in key order, so a local op's predecessors are already placed).
    for ins in items:
        if ins.send_conn is not None:
            ins.channel = by_send[ins.send_conn]
        elif ins.recv_conn is not None:
            ins.channel = by_recv[ins.recv_conn]
        elif ins.pinned is not None:
            ins.channel = pinned.setdefault(ins.pinned, _Chan(None, None, ins.pinned))
        else:
            before = [placed[p] for p in local_preds.get(ins.record.seq, ())]
            if before:
                ins.channel = max(before, key=lambda i: i.key).channel
            elif pinned or auto:
                ins.channel = pinned[min(pinned)] if pinned else auto[0]
            else:
                ins.channel = _Chan(None, None, None)
                auto.append(ins.channel)
        ins.channel.items.append(ins)
    chans = [c for _, c in sorted(pinned.items())] + sorted((c for c in auto if c.items), key=lambda c: c.items[0].key)
    for k, ch in enumerate(chans):
        ch.id = k
    return chans


def _fuse(chans: list[_Chan], placed: dict[int, _Ins], raw_writer: list[int]) -> None:
    """Merge each receive with the send that immediately forwards exactly what it received."""
    for ch in chans:
        merged: list[_Ins] = []
        for ins in ch.items:
            prev = merged[-1] if merged else None
            if (
                prev is not None
                and prev.op in (Op.RECV, Op.RECV_REDUCE_COPY)
                and ins.op is Op.SEND
                and ins.src == prev.dst
                and raw_writer[ins.record.seq] == prev.record.seq
            ):
                prev.op = Op.RECV_COPY_SEND if prev.op is Op.RECV else Op.RECV_REDUCE_COPY_SEND
                prev.send_conn = ins.send_conn
                placed[ins.record.seq] = prev  # the send half is now the fused receive
                continue
            merged.append(ins)
        ch.items = merged


def _add_dependencies(hazards: array, placed: dict[int, _Ins], chans: list[_Chan]) -> None:
    """Turn a rank's conflicts (pairs of ops, see ``_Analysis.hazards``) between instructions on different channels into dependencies.

    ``placed`` maps each op to its instruction on the rank.
    """
    for ch in chans:
        for k, ins in enumerate(ch.items):
            ins.slot = k
    for k in range(0, len(hazards), 2):
        before, after = placed[hazards[k]], placed[hazards[k + 1]]
        if before is after or before.channel is after.channel:
            continue
        cid = before.channel.id
        if after.deps is None:
            after.deps = {cid: before.slot}
        elif after.deps.get(cid, -1) < before.slot:
            after.deps[cid] = before.slot


def _scratch_sizes(spec: CollectiveSpec, ops: list[OpRecord]) -> list[int]:
    size = [0] * spec.nranks
    scratch = Buffer.SCRATCH
    # Most ops touch no scratch; testing the three references in place is cheaper than looping.
    for op in ops:
        if op.src[1] is scratch or op.dst[1] is scratch or (op.local is not None and op.local[1] is scratch):
            for ref in (op.src, op.dst, op.local):
                if ref is not None and ref[1] is scratch:
                    size[ref[0]] = max(size[ref[0]], ref[2] + ref[3])
    return size


def _freeze(ch: _Chan, made: dict[tuple, Instruction]) -> Channel:
    send = ch.send_conn[0] if ch.send_conn else None
    recv = ch.recv_conn[0] if ch.recv_conn else None
    lanes = {c[1] for c in (ch.send_conn, ch.recv_conn) if c is not None}
    if len(lanes) > 1:
        raise ProgramError(f"channel {ch.id}: send and receive connections use different lanes {sorted(lanes)}")
    # Equal instructions are made once and shared through ``made`` (their slices are shared
    # already, so identities make the key); this runs once per instruction, millions of times.
    instructions = []
    append, lookup = instructions.append, made.get
    for ins in ch.items:
        waits = tuple(sorted(ins.deps.items())) if ins.deps else ()
        key = (ins.op, id(ins.src), id(ins.dst), waits)
        found = lookup(key)
        if found is None:
            found = made[key] = Instruction(ins.op, ins.src, ins.dst, tuple([Dependency(c, k) for c, k in waits]))
        append(found)
    return Channel(ch.id, send, recv, tuple(instructions), lanes.pop() if lanes else 0)
