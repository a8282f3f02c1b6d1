"""The verifier: proves that a Program implements its collective, or says exactly where it fails.

Four checks, each of which stops the later ones when it fails:

1. Structure: ranks, channels, peers, lanes, buffer slices and dependencies are well formed.
2. Matching and progress: on every connection the k-th send meets a k-th receive of the same
   size, and every channel runs to its end (no deadlock, no message left unreceived).
3. Races: any two accesses to the same chunk of a rank, one of them a write, are ordered by
   happens-before (channel order, dependencies, send -> receive). A race-free Program computes
   the same result in every interleaving, so one symbolic execution proves them all.
4. Postcondition: a symbolic execution over sets of contributions gives every constrained
   output chunk exactly the contributions the collective asks for -- none missing, none twice.

Compute steps (PRODUCE, CONSUME) join the same checks. A rank that produces its input starts
with an uninitialized input, so a transfer that reads a chunk before it is computed reads
uninitialized data; every CONSUME must read final data (a write it is not ordered after is a
race), and a rank that consumes must consume every constrained output chunk exactly once, with
one kernel, so its result is ``kernel(output)`` block by block -- the unfused computation.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter

from synccl._beside import WORTH_FORKING_FROM, Beside, can_fork
from synccl._gcpause import gc_paused
from synccl.collectives._contributions import Bits, common, members, of_ranks, single, union
from synccl.collectives._execution import Event, Schedule, replay, schedule
from synccl.collectives._program import OP_SEMANTICS, Instruction, Op, OpSemantics, Program, Slice
from synccl.collectives._spec import Buffer, ChunkLocations
from synccl.exceptions import VerificationError, Violation

__all__ = ["verify", "check", "VerificationReport"]

Value = Bits | None
_MAX_VIOLATIONS = 50
_COMPUTE_OPS = frozenset(op for op, sem in OP_SEMANTICS.items() if sem.computes)
_op_of = attrgetter("op")  # mapped over a channel's instructions in C rather than looped over in Python
#: Ops a channel runs with no questions asked, by (it has no send peer, no receive peer): no compute step, peers present.
_PLAIN_OPS = {
    (no_send, no_recv): frozenset(op for op, sem in OP_SEMANTICS.items() if not sem.computes and not (no_send and sem.sends) and not (no_recv and sem.receives))
    for no_send in (False, True)
    for no_recv in (False, True)
}
#: Programs proven in this process, by id: (a weak reference to the Program, its report).
_PROVEN: dict[int, tuple[weakref.ref, VerificationReport]] = {}


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """What the verifier established about a Program that passed."""

    program: str
    collective: str
    nranks: int
    channels: int
    instructions: int
    messages: int


def verify(program: Program) -> VerificationReport:
    """Prove ``program`` correct or raise :class:`~synccl.exceptions.VerificationError`.

    The error's ``violations`` name rank, channel, instruction index and chunk, and say what
    was expected and what was found. Programs are immutable, so verifying the same object again
    returns its first report at once (lowering verifies, and so does export, and the runtime).

    Examples
    --------
    >>> from synccl.collectives import library
    >>> verify(library.build("ring", "all_reduce", nranks=4)).messages
    24
    """
    known = _PROVEN.get(id(program))
    if known is not None and known[0]() is program:
        return known[1]
    violations, sched = _run_checks(program)
    if violations:
        raise VerificationError(program.name, violations)
    report = VerificationReport(
        program=program.name,
        collective=program.collective.value,
        nranks=program.nranks,
        channels=sum(len(rp.channels) for rp in program.ranks),
        instructions=len(sched.events),
        messages=sum(1 for ev in sched.events if ev.send_on is not None),
    )
    key = id(program)
    _PROVEN[key] = (weakref.ref(program, lambda _: _PROVEN.pop(key, None)), report)
    return report


def check(program: Program) -> list[Violation]:
    """Every violation found (empty when the Program is correct); never raises on bad Programs.

    >>> from synccl.collectives import library
    >>> check(library.build("ring", "all_gather", 3))
    []
    """
    return _run_checks(program)[0]


@gc_paused()
def _run_checks(program: Program) -> tuple[list[Violation], Schedule | None]:
    if program.num_instructions() >= WORTH_FORKING_FROM and can_fork():
        return _run_checks_on_two_cores(program)
    violations = _check_structure(program)
    if violations:
        return violations, None
    sched = schedule(program)
    for stage in (_check_progress, _check_races_then_postcondition):
        violations = stage(program, sched)
        if violations:
            return violations, sched
    return [], sched


def _run_checks_on_two_cores(program: Program) -> tuple[list[Violation], Schedule | None]:
    """:func:`_run_checks` with the structure check beside the schedule, and the race pass beside the symbolic execution.

    Same checks, same verdicts: each stage's result is what it is alone, and they are
    reported in the same order. At 1,024 ranks this takes a third off verification.
    """
    with Beside(lambda: _check_structure(program)) as structure:
        try:
            sched = schedule(program)
        except Exception:  # noqa: BLE001 - a malformed Program can break the schedule; the structure check says how
            sched = None
        violations = structure.result()
    if violations:
        return violations, None
    if sched is None:
        sched = schedule(program)  # well formed, so this cannot fail: if it does, the error is real
    violations = _check_progress(program, sched)
    if violations:
        return violations, sched
    with Beside(lambda: _check_races(program, sched)) as races:
        postcondition = _check_postcondition(program, sched)
        violations = races.result() or postcondition
    return violations, sched


# -- 1. structure ------------------------------------------------------------------------------


def _check_structure(program: Program) -> list[Violation]:
    out: list[Violation] = []
    n = program.nranks
    # Dependency-free instructions found valid (their identities), by (channel has no send
    # peer, no receive peer, scratch size): lowering shares equal instructions between ranks,
    # so most are checked once, not once per rank.
    passed: dict[tuple[bool, bool, int], set[int]] = {}
    if len(program.ranks) != n:
        out.append(Violation("structure", f"expected {n} rank programs, found {len(program.ranks)}"))
        return out
    for pos, rp in enumerate(program.ranks):
        if rp.rank != pos:
            out.append(Violation("structure", f"rank programs must be in rank order: position {pos} holds rank {rp.rank}", rank=pos))
            return out
        if rp.scratch_chunks < 0:
            out.append(Violation("structure", f"scratch_chunks must be >= 0, got {rp.scratch_chunks}", rank=rp.rank))
        out.extend(_check_rank_channels(program, rp.rank, passed))
        if len(out) >= _MAX_VIOLATIONS:
            break
    return out


def _check_rank_channels(program: Program, rank: int, passed: dict[tuple[bool, bool, int], set[int]]) -> Iterable[Violation]:
    rp = program.ranks[rank]
    n = program.nranks
    senders: dict[tuple[int, int], int] = {}
    receivers: dict[tuple[int, int], int] = {}
    sizes = {buffer: program.buffer_chunks(rank, buffer) for buffer in Buffer}
    inplace = program.spec.inplace
    lengths = [len(c.instructions) for c in rp.channels]
    for pos, ch in enumerate(rp.channels):
        if (ch.send_peer is not None or ch.recv_peer is not None) and not _COMPUTE_OPS.isdisjoint(map(_op_of, ch.instructions)):
            yield Violation("structure", "compute steps (produce, consume) run on a channel with no peers (the rank's compute stream)", rank=rank, channel=ch.id)
        if ch.id != pos:
            yield Violation("structure", f"channel ids must be 0..{len(rp.channels) - 1} in order; position {pos} has id {ch.id}", rank=rank, channel=ch.id)
            return
        if ch.lane < 0:
            yield Violation("structure", f"lane must be >= 0, got {ch.lane}", rank=rank, channel=ch.id)
        for role, peer, seen in (("send", ch.send_peer, senders), ("recv", ch.recv_peer, receivers)):
            if peer is None:
                continue
            if not isinstance(peer, int) or not 0 <= peer < n:
                yield Violation("structure", f"{role} peer {peer!r} is not a rank (0..{n - 1})", rank=rank, channel=ch.id)
            elif peer == rank:
                yield Violation("structure", f"{role} peer is the rank itself", rank=rank, channel=ch.id)
            elif (peer, ch.lane) in seen:
                yield Violation(
                    "structure",
                    f"channels {seen[peer, ch.lane]} and {ch.id} both {role} {'to' if role == 'send' else 'from'} rank {peer} on lane {ch.lane}; a connection has one channel per end",
                    rank=rank,
                    channel=ch.id,
                )
            else:
                seen[peer, ch.lane] = ch.id
        no_send, no_recv = ch.send_peer is None, ch.recv_peer is None
        plain = _PLAIN_OPS[no_send, no_recv]
        passed_here = passed.setdefault((no_send, no_recv, rp.scratch_chunks), set())
        for index, ins in enumerate(ch.instructions):
            if id(ins) in passed_here:
                continue
            if ins.op in plain and _plainly_valid(ins, OP_SEMANTICS[ins.op], sizes, inplace, lengths, ch.id, index):
                if not ins.deps:
                    passed_here.add(id(ins))
                continue
            for message in _instruction_problems(program, rank, ch.id, index, ins, ch.send_peer, ch.recv_peer):
                yield Violation("structure", message, rank=rank, channel=ch.id, instruction=index)


def _plainly_valid(ins: Instruction, sem: OpSemantics, sizes: dict[Buffer, int], inplace: bool, lengths: list[int], channel: int, index: int) -> bool:
    """A quick sufficient test that :func:`_instruction_problems` has nothing to say (it is the exact one).

    True for the usual instruction: exactly the slices its op needs, in bounds, of equal size,
    not writing an out-of-place input, depending on earlier instructions that exist.
    """
    src, dst = ins.src, ins.dst
    if (src is not None) is not sem.reads_src or (dst is not None) is not sem.writes_dst or ins.kernel is not None:
        return False
    for sl in (src, dst):
        if sl is not None and not (type(sl.buffer) is Buffer and sl.count >= 1 and sl.index >= 0 and sl.index + sl.count <= sizes[sl.buffer]):
            return False
    if dst is not None and (dst.buffer is Buffer.INPUT and not inplace or (src is not None and src.count != dst.count)):
        return False
    for dep in ins.deps:
        if not (0 <= dep.channel < len(lengths) and 0 <= dep.instruction < lengths[dep.channel] and (dep.channel != channel or dep.instruction < index)):
            return False
    return True


def _instruction_problems(program: Program, rank: int, channel: int, index: int, ins: Instruction, send_peer: int | None, recv_peer: int | None) -> Iterable[str]:
    op = ins.op
    sem = op.semantics
    if sem.sends and send_peer is None:
        yield f"{op.value} sends but the channel has no send peer"
    if sem.receives and recv_peer is None:
        yield f"{op.value} receives but the channel has no receive peer"
    if sem.reads_src and ins.src is None:
        yield f"{op.value} needs a src slice"
    if sem.writes_dst and ins.dst is None:
        yield f"{op.value} needs a dst slice"
    if not sem.accepts_src and ins.src is not None:
        yield f"{op.value} takes no src slice, got {ins.src}"
    if not sem.writes_dst and ins.dst is not None:
        yield f"{op.value} takes no dst slice, got {ins.dst}"
    if sem.computes != (ins.kernel is not None):
        yield f"{op.value} needs a kernel name" if sem.computes else f"{op.value} moves data and takes no kernel, got {ins.kernel!r}"
    if op is Op.PRODUCE and ins.dst is not None and ins.dst.buffer is not Buffer.INPUT:
        yield f"produce computes input chunks, got dst {ins.dst}"
    if op is Op.CONSUME and ins.src is not None and ins.src.buffer is not Buffer.OUTPUT:
        yield f"consume computes from output chunks, got src {ins.src}"
    for name, sl in (("src", ins.src), ("dst", ins.dst)):
        if sl is None:
            continue
        size = program.buffer_chunks(rank, sl.buffer)
        if not isinstance(sl.buffer, Buffer):
            yield f"{name} buffer {sl.buffer!r} is not input, output or scratch"
        elif sl.count < 1:
            yield f"{name} count must be >= 1, got {sl.count}"
        elif sl.index < 0 or sl.index + sl.count > size:
            yield f"{name} {sl} is out of bounds: {sl.buffer.value} has {size} chunks"
    if ins.dst is not None and ins.dst.buffer is Buffer.INPUT and not program.spec.inplace and sem.writes_dst and not sem.computes:
        yield f"{op.value} writes {ins.dst} but an out-of-place collective must leave its input buffer unchanged"
    if ins.src is not None and ins.dst is not None and ins.src.count != ins.dst.count:
        yield f"src {ins.src} and dst {ins.dst} differ in size"
    rp = program.ranks[rank]
    for dep in ins.deps:
        if not 0 <= dep.channel < len(rp.channels):
            yield f"depends on channel {dep.channel}, which does not exist"
        elif not 0 <= dep.instruction < len(rp.channels[dep.channel].instructions):
            yield f"depends on channel {dep.channel} instruction {dep.instruction}, which does not exist"
        elif dep.channel == channel and dep.instruction >= index:
            yield f"depends on instruction {dep.instruction} of its own channel, which comes later"


# -- 2. matching and progress --------------------------------------------------------------


def _check_progress(program: Program, sched: Schedule) -> list[Violation]:
    out = [Violation("deadlock", s.reason, rank=s.rank, channel=s.channel, instruction=s.index) for s in sched.stalls]
    for conn, left in sched.unreceived:
        out.append(Violation("unmatched send", f"{left} message(s) on connection {conn} are never received", rank=conn.src))
    events = sched.events
    for ev in events:
        if ev.matched is None:
            continue
        sender = events[ev.matched]
        sent_count = sender.instruction.count
        got = ev.instruction.count
        if sent_count != got:
            out.append(
                Violation(
                    "size mismatch",
                    f"message #{ev.message} on connection {ev.recv_on} carries {sent_count} chunk(s) "
                    f"(rank {sender.rank} channel {sender.channel} instruction {sender.index}) but the receive expects {got}",
                    rank=ev.rank,
                    channel=ev.channel,
                    instruction=ev.index,
                )
            )
    return out[:_MAX_VIOLATIONS]


# -- 3. races ----------------------------------------------------------------------------------


class _RaceDetector:
    """Happens-before between the accesses to each chunk location -- which all belong to one rank.

    Most pairs are ordered by what a channel has itself waited for: each channel keeps, for
    every channel of its rank, the furthest instruction it has passed (its own) or waited for
    through a dependency of one of its instructions so far (others') -- a clock with no
    transitive merging. Lowering gives every conflict across channels its own dependency, so
    these direct clocks order nearly everything; a pair they leave unordered is decided exactly,
    by a search of the execution graph (messages included) from the earlier event towards the
    later one. The cost is O(events + dependencies) plus those searches. Vector clocks over a
    rank's channels, merged at every dependency, cost O(dependencies x channels) -- a root that
    reduces 127 partials on 127 channels merged clocks of 127 entries at each step -- and over
    every channel of every rank O(events x all channels): out of reach at a thousand ranks.
    """

    def __init__(self, program: Program, sched: Schedule, locations: ChunkLocations) -> None:
        self.locations = locations
        self.bases = locations.bases
        self.events = sched.events
        self.clock: list[list[dict[int, int]]] = [[{} for _ in rp.channels] for rp in program.ranks]  # channel -> instructions passed or waited for
        self.last_write = locations.table(2 * len(self.events))  # location -> (channel, seq, event pos) of its last write
        self.reads = locations.table(2 * len(self.events))  # location -> {channel: (seq, event pos)} of the reads since
        self.successors: list[list[int]] | None = None  # the execution graph, built at the first search
        self.violations: list[Violation] = []

    def on_event(self, pos: int, ev: Event) -> None:
        rank, me, index, ins = ev[0], ev[1], ev[2], ev[3]  # Event's fields by position: faster, and this runs per instruction
        vc = self.clock[rank][me]
        for dep in ins.deps:
            if vc.get(dep.channel, 0) <= dep.instruction:
                vc[dep.channel] = dep.instruction + 1
        vc[me] = index + 1
        sem = OP_SEMANTICS[ins.op]
        bases = self.bases[rank]
        if sem.reads_src:
            src = ins.src
            self._access(pos, ev, vc, bases[src.buffer] + src.index, src.count, False)
        if sem.reads_dst or sem.writes_dst:
            dst = ins.dst
            start = bases[dst.buffer] + dst.index
            if sem.reads_dst:
                self._access(pos, ev, vc, start, dst.count, False)
            if sem.writes_dst:
                self._access(pos, ev, vc, start, dst.count, True)

    def _access(self, pos: int, ev: Event, vc: dict[int, int], start: int, count: int, write: bool) -> None:
        """Check and record ``ev``'s access to the ``count`` locations from ``start``."""
        me = ev[1]
        seq = ev[2] + 1
        last_write, reads = self.last_write, self.reads
        for loc in (start,) if count == 1 else range(start, start + count):
            prior = last_write[loc]
            if prior is not None and prior[0] != me and vc.get(prior[0], 0) < prior[1] and not self._reaches(prior[2], pos):
                self._race(ev, loc, self.events[prior[2]], "writes", write)
            if write:
                readers = reads[loc]
                if readers:
                    for other, (other_seq, opos) in readers.items():
                        if other != me and vc.get(other, 0) < other_seq and not self._reaches(opos, pos):
                            self._race(ev, loc, self.events[opos], "reads", write)
                last_write[loc] = (me, seq, pos)
                reads[loc] = None
            else:
                readers = reads[loc]
                if readers is None:
                    reads[loc] = {me: (seq, pos)}
                else:
                    readers[me] = (seq, pos)

    def _reaches(self, source: int, target: int) -> bool:
        """Whether the event at schedule position ``source`` happens before the one at ``target``.

        The schedule is a topological order of the execution graph, so a path from ``source``
        to ``target`` visits only positions between the two.
        """
        if self.successors is None:
            self.successors = _execution_graph(self.events)
        successors = self.successors
        seen = {source}
        stack = [source]
        while stack:
            for nxt in successors[stack.pop()]:
                if nxt == target:
                    return True
                if nxt < target and nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    def _race(self, ev: Event, loc: int, other: Event, other_does: str, write: bool) -> None:
        if len(self.violations) >= _MAX_VIOLATIONS:
            return
        _, buf, idx = self.locations.describe(loc)
        self.violations.append(
            Violation(
                "race",
                f"{'writes' if write else 'reads'} {buf.value}[{idx}] while channel {other.channel} instruction {other.index} "
                f"{other_does} it with no dependency ordering the two",
                rank=ev.rank,
                channel=ev.channel,
                instruction=ev.index,
                chunk=idx,
            )
        )


def _execution_graph(events: tuple[Event, ...]) -> list[list[int]]:
    """Successors of each event (by schedule position): the next event of its channel, its dependents, its receiver."""
    position = {(ev.rank, ev.channel, ev.index): pos for pos, ev in enumerate(events)}
    successors: list[list[int]] = [[] for _ in events]
    for pos, ev in enumerate(events):
        after = position.get((ev.rank, ev.channel, ev.index + 1))
        if after is not None:
            successors[pos].append(after)
        for dep in ev.instruction.deps:
            successors[position[ev.rank, dep.channel, dep.instruction]].append(pos)
        if ev.matched is not None:
            successors[ev.matched].append(pos)
    return successors


def _locations(program: Program) -> ChunkLocations:
    return ChunkLocations(program.spec, [rp.scratch_chunks for rp in program.ranks])


def _check_races(program: Program, sched: Schedule) -> list[Violation]:
    detector = _RaceDetector(program, sched, _locations(program))
    on_event = detector.on_event
    for pos, ev in enumerate(sched.events):  # no replay: the race pass needs the events, not their values
        on_event(pos, ev)
    return detector.violations


def _check_races_then_postcondition(program: Program, sched: Schedule) -> list[Violation]:
    """Checks 3 and 4 in one replay: races if any, else what the symbolic execution found."""
    locations = _locations(program)
    detector = _RaceDetector(program, sched, locations)
    machine = _SymbolicMachine(program, locations, len(sched.events))
    replay(sched, machine, on_event=detector.on_event)
    return detector.violations or _postcondition_violations(program, machine)


# -- 4. postcondition ------------------------------------------------------------------------


class _SymbolicMachine:
    """Chunk contents as sets of contributions (bitmasks, see :mod:`~synccl.collectives._contributions`); ``None`` is uninitialized memory."""

    def __init__(self, program: Program, locations: ChunkLocations, events: int) -> None:
        self.program = program
        self.locations = locations
        self.bases = locations.bases
        spec = program.spec
        n = spec.nranks
        self.memory = locations.table(2 * events)  # location -> its Value (None: uninitialized)
        self.writer = locations.table(2 * events)  # location -> the Event that wrote it last
        # A rank that computes its input (PRODUCE) starts with it uninitialized. Compute steps
        # run on channels with no peers (the structure check saw to it), so only those are read.
        producers = {
            rp.rank
            for rp in program.ranks
            for ch in rp.channels
            if ch.send_peer is None and ch.recv_peer is None and Op.PRODUCE in map(_op_of, ch.instructions)
        }
        for rank in range(n):
            if rank not in producers:
                base = locations.base(rank, Buffer.INPUT)
                for k, (r, index) in spec.precondition(rank).items():
                    self.memory[base + k] = single(r, index, n)
        self.produced: set[tuple[int, int]] = set()  # (rank, input chunk)
        self.consumed: dict[tuple[int, int], tuple[str, Value, Event]] = {}  # (rank, output chunk) -> (kernel, value, step)
        self.violations: list[Violation] = []

    def read(self, event: Event, rank: int, where: Slice) -> tuple[Value, ...]:
        start = self.bases[rank][where.buffer] + where.index
        if where.count == 1:
            return (self.memory[start],)
        memory = self.memory
        return tuple(memory[loc] for loc in range(start, start + where.count))

    def write(self, event: Event, rank: int, where: Slice, value: tuple[Value, ...]) -> None:
        start = self.bases[rank][where.buffer] + where.index
        memory, writer = self.memory, self.writer
        if len(value) == 1:
            memory[start] = value[0]
            writer[start] = event
            return
        for loc, v in enumerate(value, start):
            memory[loc] = v
            writer[loc] = event

    def combine(self, event: Event, local: tuple[Value, ...], received: tuple[Value, ...]) -> tuple[Value, ...]:
        out = []
        ins = event.instruction
        operand = ins.dst if ins.op.reads_dst else ins.src  # the local operand (see OpSemantics)
        for offset, (a, b) in enumerate(zip(local, received, strict=True)):
            chunk = operand.index + offset if operand is not None else None
            if a is None or b is None:
                self._flag(event, chunk, "reduces uninitialized data" + (" (local operand)" if a is None else " (received operand)"))
                out.append(None)
                continue
            twice = common(a, b)
            if twice is not None:
                self._flag(event, chunk, f"counts contributions twice: {_format(twice, self.program.nranks)}")
            out.append(union(a, b))
        return tuple(out)

    def produce(self, event: Event, rank: int, where: Slice) -> tuple[Value, ...]:
        precondition = self.program.spec.precondition(rank)
        n = self.program.nranks
        out = []
        for k in range(where.index, where.index + where.count):
            if (rank, k) in self.produced:
                self._flag(event, k, f"computes input[{k}] a second time", check="compute")
            self.produced.add((rank, k))
            out.append(single(*precondition[k], n) if k in precondition else None)
        return tuple(out)

    def consume(self, event: Event, rank: int, value: tuple[Value, ...]) -> None:
        kernel = event.instruction.kernel
        for offset, v in enumerate(value):
            k = event.instruction.src.index + offset
            if v is None:
                self._flag(event, k, f"computes from output[{k}] before it holds data", check="compute")
            elif (rank, k) in self.consumed:
                self._flag(event, k, f"computes from output[{k}] a second time", check="compute")
            self.consumed.setdefault((rank, k), (kernel, v, event))

    def _flag(self, event: Event, chunk: int | None, message: str, *, check: str = "reduction") -> None:
        if len(self.violations) < _MAX_VIOLATIONS:
            self.violations.append(Violation(check, message, rank=event.rank, channel=event.channel, instruction=event.index, chunk=chunk))


def _check_postcondition(program: Program, sched: Schedule) -> list[Violation]:
    machine = _SymbolicMachine(program, _locations(program), len(sched.events))
    replay(sched, machine)
    return _postcondition_violations(program, machine)


def _postcondition_violations(program: Program, machine: _SymbolicMachine) -> list[Violation]:
    """What the replay flagged, the compute checks, then every output chunk that ends wrong."""
    out = list(machine.violations)
    out.extend(_check_results(program, machine))
    spec = program.spec
    n = spec.nranks
    for rank in range(n):
        base = machine.locations.base(rank, Buffer.OUTPUT)
        for idx, (ranks, k) in spec.postcondition_ranges(rank).items():
            found = machine.memory[base + idx]
            expected = of_ranks(ranks, k, n)
            if found == expected:
                continue
            writer = machine.writer[base + idx]
            where = f" (last written by channel {writer.channel} instruction {writer.index})" if writer else " (never written)"
            out.append(
                Violation(
                    "postcondition",
                    f"output[{idx}] expected {_format(expected, n)}, found {_format(found, n)}{where}",
                    rank=rank,
                    channel=writer.channel if writer else None,
                    instruction=writer.index if writer else None,
                    chunk=idx,
                )
            )
            if len(out) >= _MAX_VIOLATIONS:
                return out
    return out


def _check_results(program: Program, machine: _SymbolicMachine) -> list[Violation]:
    """A rank that consumes computes ``kernel(output)``: every constrained chunk, once, final, one kernel."""
    out: list[Violation] = []
    spec = program.spec
    n = spec.nranks
    for rank in sorted({r for r, _ in machine.consumed}):
        kernels = sorted({kernel for (r, _), (kernel, _, _) in machine.consumed.items() if r == rank})
        if len(kernels) > 1:
            out.append(Violation("compute", f"computes its result with different kernels {kernels}; one kernel must compute every block", rank=rank))
        for idx, (ranks, k) in spec.postcondition_ranges(rank).items():
            expected = of_ranks(ranks, k, n)
            entry = machine.consumed.get((rank, idx))
            if entry is None:
                out.append(Violation("compute", f"never computes from output[{idx}]: its block of the result is missing", rank=rank, chunk=idx))
            elif entry[1] != expected:
                step = entry[2]
                out.append(
                    Violation(
                        "compute",
                        f"computes from output[{idx}] holding {_format(entry[1], n)}, expected the final {_format(expected, n)}",
                        rank=rank,
                        channel=step.channel,
                        instruction=step.index,
                        chunk=idx,
                    )
                )
    return out[:_MAX_VIOLATIONS]


def _format(value: Value, nranks: int) -> str:
    """``{r0[1], r2[1]}`` style rendering, shortened when long."""
    if value is None:
        return "uninitialized data"
    items = [f"r{r}[{k}]" for r, k in members(value, nranks)]
    if len(items) > 6:
        items = items[:3] + [f"... {len(items) - 5} more ..."] + items[-2:]
    return "{" + ", ".join(items) + "}"
