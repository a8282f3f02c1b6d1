"""One valid execution order of a Program, and a replay of it over any value domain.

The verifier replays a Program over symbolic values (sets of contributions) and the reference
interpreter replays it over numpy arrays; both walk the order :func:`schedule` finds, and
:func:`replay` derives what every opcode does from :data:`~synccl.collectives.OP_SEMANTICS`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

from synccl.collectives._program import OP_SEMANTICS, Instruction, Program, Slice

__all__ = ["Connection", "Event", "Schedule", "Stall", "schedule", "replay", "Machine"]

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Connection:
    """The point-to-point connection ``src -> dst`` on ``lane``."""

    src: int
    dst: int
    lane: int

    def __str__(self) -> str:
        return f"{self.src}->{self.dst} lane {self.lane}"


class Event(NamedTuple):
    """One executed instruction.

    ``send_on``/``recv_on`` name the connections it uses; ``matched`` is the position in the
    schedule of the send a receive consumed, and ``message`` its ordinal on the connection.
    (A named tuple: a schedule has one per instruction, millions at a thousand ranks.)
    """

    rank: int
    channel: int
    index: int
    instruction: Instruction
    send_on: Connection | None
    recv_on: Connection | None
    matched: int | None = None
    message: int | None = None


@dataclass(frozen=True, slots=True)
class Stall:
    """A channel that could not finish: the instruction it is stuck at and why."""

    rank: int
    channel: int
    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class Schedule:
    """Events in a valid order, the channels that stalled, and sends nobody received."""

    events: tuple[Event, ...]
    stalls: tuple[Stall, ...]
    unreceived: tuple[tuple[Connection, int], ...]  # (connection, messages left in it)

    @property
    def complete(self) -> bool:
        """Whether every instruction ran and every message was received."""
        return not self.stalls and not self.unreceived


def schedule(program: Program, *, capacity: int | None = None) -> Schedule:
    """Run the Program's control flow (no data) and return one valid execution order.

    Channels run their instructions in order; an instruction waits for its dependencies and,
    if it receives, for a message on its connection. Sends never wait -- unless ``capacity``
    bounds the messages a connection holds, as a runtime's FIFO does; then a send waits for room.
    Assumes the structural checks of the verifier passed (peers and dependencies exist).

    >>> from synccl.collectives import library
    >>> s = schedule(library.build("ring", "all_gather", nranks=3))
    >>> s.complete, len(s.events)
    (True, 12)
    """
    channels = [(rp.rank, ch) for rp in program.ranks for ch in rp.channels]
    position = [0] * len(channels)  # instructions each channel has finished
    first = [0] * len(program.ranks)  # index in ``channels`` of each rank's channel 0
    for k in range(len(channels) - 1, -1, -1):
        first[channels[k][0]] = k
    width = [len(rp.channels) for rp in program.ranks]
    # Connections get small integer ids and their queues are made once: the loop below runs
    # once per instruction, millions of times at a thousand ranks, and hashes nothing it can avoid.
    ids: dict[Connection, int] = {}
    recv_conns = [Connection(ch.recv_peer, rank, ch.lane) if ch.recv_peer is not None else None for rank, ch in channels]
    send_conns = [Connection(rank, ch.send_peer, ch.lane) if ch.send_peer is not None else None for rank, ch in channels]
    recv_id = [ids.setdefault(c, len(ids)) if c is not None else -1 for c in recv_conns]
    send_id = [ids.setdefault(c, len(ids)) if c is not None else -1 for c in send_conns]
    connections = list(ids)
    queues: list[deque[tuple[int, int]]] = [deque() for _ in connections]  # pending (event position, ordinal)
    sent = [0] * len(connections)
    # Blocked channels, by what they wait for: an instruction of a channel, a message on a
    # connection, room on a connection.
    waiting_dep: list[dict[int, list[int]]] = [{} for _ in channels]  # channel -> {instruction: waiting channels}
    waiting_msg: list[list[int]] = [[] for _ in connections]  # connection id -> waiting channels
    waiting_room: list[list[int]] = [[] for _ in connections]
    events: list[Event] = []
    ready = deque(range(len(channels)))
    semantics = OP_SEMANTICS
    make_event = tuple.__new__  # Event(...) without the named tuple's Python-level __new__: one per instruction

    def blocker(k: int) -> tuple[str, object] | None:
        rank, ch = channels[k]
        ins = ch.instructions[position[k]]
        for dep in ins.deps:
            if not 0 <= dep.channel < width[rank] or position[first[rank] + dep.channel] <= dep.instruction:
                return "dep", (rank, dep.channel, dep.instruction)
        sem = semantics[ins.op]
        if sem.receives and (recv_id[k] < 0 or not queues[recv_id[k]]):
            return "msg", recv_id[k]
        if capacity is not None and sem.sends and send_id[k] >= 0 and len(queues[send_id[k]]) >= capacity:
            return "room", send_id[k]
        return None

    while ready:
        k = ready.popleft()
        rank, ch = channels[k]
        instructions, recv_on_channel, send_on_channel = ch.instructions, recv_conns[k], send_conns[k]
        inbox = queues[recv_id[k]] if recv_id[k] >= 0 else deque()
        outbox = queues[send_id[k]] if send_id[k] >= 0 else None
        waiting_here = waiting_dep[k]
        at = position[k]
        while at < len(instructions):
            ins = instructions[at]
            sem = semantics[ins.op]
            # The common case -- no dependencies, a message waiting, no bound on messages -- needs no blocker().
            if ins.deps or capacity is not None or (sem.receives and not inbox):
                why = blocker(k)
                if why is not None:
                    kind, what = why
                    if kind == "dep":
                        if 0 <= what[1] < width[rank]:  # else it stalls for good
                            waiting_dep[first[what[0]] + what[1]].setdefault(what[2], []).append(k)
                    elif what >= 0:  # a receive on a channel with no receive peer stalls for good
                        (waiting_msg if kind == "msg" else waiting_room)[what].append(k)
                    break
            matched = message = None
            if sem.receives:
                matched, message = inbox.popleft()
                if capacity is not None and waiting_room[recv_id[k]]:
                    ready.extend(waiting_room[recv_id[k]])
                    waiting_room[recv_id[k]].clear()
            events.append(
                make_event(Event, (rank, ch.id, at, ins, send_on_channel if sem.sends else None, recv_on_channel if sem.receives else None, matched, message))
            )
            if sem.sends:
                conn = send_id[k]
                outbox.append((len(events) - 1, sent[conn]))
                sent[conn] += 1
                if waiting_msg[conn]:
                    ready.extend(waiting_msg[conn])
                    waiting_msg[conn].clear()
            if waiting_here:
                woken = waiting_here.pop(at, None)
                if woken:
                    ready.extend(woken)
            at += 1
            position[k] = at

    stalls = []
    for k, (rank, ch) in enumerate(channels):
        if position[k] < len(ch.instructions):
            why = blocker(k)
            if why is None:  # pragma: no cover - the loop above drains every runnable channel
                reason = "did not run"
            elif why[0] == "room":
                reason = f"waits for room on connection {connections[why[1]]}, which holds {capacity} unreceived message(s)"
            elif why[0] == "dep":
                _, dch, dindex = why[1]
                reason = f"waits for channel {dch} instruction {dindex}, which never completes"
                if not 0 <= dch < width[rank]:
                    reason = f"waits for channel {dch}, which does not exist"
            elif why[1] < 0:
                reason = "receives on a channel with no receive peer"
            else:
                conn = why[1]
                reason = f"waits for message #{sent[conn]} on connection {connections[conn]}, which is never sent"
            stalls.append(Stall(rank, ch.id, position[k], reason))
    unreceived = tuple((connections[c], len(q)) for c, q in enumerate(queues) if q)
    return Schedule(tuple(events), tuple(stalls), unreceived)


class Machine(Protocol[V]):
    """Storage and arithmetic that :func:`replay` drives.

    ``produce`` gives the value a PRODUCE step computes into ``where``; ``consume`` takes the
    value a CONSUME step read (the block of the rank's result it computes from).
    """

    def read(self, event: Event, rank: int, where: Slice) -> V: ...

    def write(self, event: Event, rank: int, where: Slice, value: V) -> None: ...

    def combine(self, event: Event, local: V, received: V) -> V: ...

    def produce(self, event: Event, rank: int, where: Slice) -> V: ...

    def consume(self, event: Event, rank: int, value: V) -> None: ...


def replay(sched: Schedule, machine: Machine[V], *, on_event: Callable[[int, Event], None] | None = None) -> None:
    """Apply every event of ``sched`` to ``machine`` in order.

    ``on_event(position, event)`` is called before each event is applied (the verifier uses it
    to track happens-before).
    """
    in_flight: dict[int, V] = {}  # messages by the schedule position of their send
    semantics = OP_SEMANTICS
    for pos, ev in enumerate(sched.events):
        if on_event is not None:
            on_event(pos, ev)
        ins, rank = ev.instruction, ev.rank
        sem = semantics[ins.op]
        # The op's value, as OpSemantics defines it.
        if sem.computes:
            if ins.op.reads_src:
                machine.consume(ev, rank, machine.read(ev, rank, ins.src))
                continue
            value = machine.produce(ev, rank, ins.dst)
        elif sem.reduces:
            if sem.reads_dst:
                value = machine.combine(ev, machine.read(ev, rank, ins.dst), machine.read(ev, rank, ins.src))
            else:
                value = machine.combine(ev, machine.read(ev, rank, ins.src), in_flight.pop(ev.matched))
        elif sem.receives:
            value = in_flight.pop(ev.matched)
        elif sem.reads_src:
            value = machine.read(ev, rank, ins.src)
        else:
            continue  # NOP
        if sem.writes_dst:
            machine.write(ev, rank, ins.dst, value)
        if sem.sends:
            in_flight[pos] = value
