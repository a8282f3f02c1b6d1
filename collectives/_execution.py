"""One valid execution order of a Program, and a replay of it over any value domain.

The verifier replays a Program over symbolic values (sets of contributions) and the reference
interpreter replays it over numpy arrays; both walk the order :func:`schedule` finds, and
:func:`replay` derives what every opcode does from :data:`~synccl.collectives.OP_SEMANTICS`.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

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


@dataclass(frozen=True, slots=True)
class Event:
    """One executed instruction.

    ``send_on``/``recv_on`` name the connections it uses; ``matched`` is the position in the
    schedule of the send a receive consumed, and ``message`` its ordinal on the connection.
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
    position = [0] * len(channels)
    key_of = {(rank, ch.id): k for k, (rank, ch) in enumerate(channels)}
    done_upto: dict[tuple[int, int], int] = defaultdict(int)  # (rank, channel) -> instructions finished
    queues: dict[Connection, deque[tuple[int, int]]] = defaultdict(deque)  # pending (event position, ordinal)
    sent: dict[Connection, int] = defaultdict(int)
    waiting_dep: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    waiting_msg: dict[Connection, list[int]] = defaultdict(list)
    waiting_room: dict[Connection, list[int]] = defaultdict(list)
    events: list[Event] = []
    ready = deque(range(len(channels)))

    def blocker(k: int) -> tuple[str, object] | None:
        rank, ch = channels[k]
        ins = ch.instructions[position[k]]
        for dep in ins.deps:
            if done_upto[rank, dep.channel] <= dep.instruction:
                return "dep", (rank, dep.channel, dep.instruction)
        if ins.op.receives:
            conn = Connection(ch.recv_peer, rank, ch.lane)
            if not queues[conn]:
                return "msg", conn
        if capacity is not None and ins.op.sends:
            conn = Connection(rank, ch.send_peer, ch.lane)
            if len(queues[conn]) >= capacity:
                return "room", conn
        return None

    while ready:
        k = ready.popleft()
        rank, ch = channels[k]
        while position[k] < len(ch.instructions):
            why = blocker(k)
            if why is not None:
                kind, what = why
                {"dep": waiting_dep, "msg": waiting_msg, "room": waiting_room}[kind][what].append(k)
                break
            ins = ch.instructions[position[k]]
            recv_on = Connection(ch.recv_peer, rank, ch.lane) if ins.op.receives else None
            send_on = Connection(rank, ch.send_peer, ch.lane) if ins.op.sends else None
            matched = message = None
            if recv_on is not None:
                matched, message = queues[recv_on].popleft()
                ready.extend(waiting_room.pop(recv_on, ()))
            events.append(Event(rank, ch.id, position[k], ins, send_on, recv_on, matched, message))
            if send_on is not None:
                queues[send_on].append((len(events) - 1, sent[send_on]))
                sent[send_on] += 1
                ready.extend(waiting_msg.pop(send_on, ()))
            position[k] += 1
            done_upto[rank, ch.id] = position[k]
            ready.extend(waiting_dep.pop((rank, ch.id, position[k] - 1), ()))

    stalls = []
    for k, (rank, ch) in enumerate(channels):
        if position[k] < len(ch.instructions):
            why = blocker(k)
            if why is None:  # pragma: no cover - the loop above drains every runnable channel
                reason = "did not run"
            elif why[0] == "room":
                reason = f"waits for room on connection {why[1]}, which holds {capacity} unreceived message(s)"
            elif why[0] == "dep":
                _, dch, dindex = why[1]
                reason = f"waits for channel {dch} instruction {dindex}, which never completes"
                if (rank, dch) not in key_of:
                    reason = f"waits for channel {dch}, which does not exist"
            else:
                conn = why[1]
                reason = f"waits for message #{sent[conn]} on connection {conn}, which is never sent"
            stalls.append(Stall(rank, ch.id, position[k], reason))
    unreceived = tuple((conn, len(q)) for conn, q in queues.items() if q)
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
