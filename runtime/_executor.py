"""The executor: one event loop per rank runs every channel of a plan, slice by slice.

A single thread visits the channels in turn and runs each one's next slice as soon as its
dependencies are complete, its incoming message has arrived and its outgoing FIFO has a free
slot; with the GIL, this beats a thread per channel. When a whole pass makes no progress the
rank spins a little, then yields the CPU, then sleeps in growing steps (so 8 ranks on 2 cores
still progress), checking on the way that its peers are alive and that the timeout has not
passed.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections.abc import Callable
from typing import Protocol

import numpy as np

from synccl.collectives import OP_SEMANTICS, OpSemantics
from synccl.exceptions import CommError
from synccl.runtime._plan import RankPlan, Step
from synccl.runtime._shm import BY_REFERENCE

__all__ = ["Sender", "Receiver", "Transports", "Waiter", "execute", "prepare"]

# Reductions follow the hardware, as NCCL's do: integers wrap, floats overflow to inf or become
# NaN. That is the data's business, not a warning to print from inside a collective; a filter
# costs nothing per call, where an errstate block around every call would.
warnings.filterwarnings("ignore", message="(overflow|invalid value) encountered", category=RuntimeWarning, module=__name__)


#: What executes one step: ``(step, receiver, sender, transports, combine, signature, check, rank, label)``.
Handler = Callable[..., None]


class Sender(Protocol):
    slot_arrays: list[np.ndarray]

    def ready(self) -> bool: ...

    def index(self) -> int: ...

    def publish(self, nbytes: int, signature: int, kind: int = 0, region: int = 0, offset: int = 0) -> None: ...

    def drained(self) -> bool: ...


class Receiver(Protocol):
    slot_arrays: list[np.ndarray]

    def ready(self) -> bool: ...

    def index(self) -> int: ...

    def descriptor(self) -> tuple[int, int, int, int, int]: ...

    def release(self) -> None: ...


class Transports(Protocol):
    """What the executor needs from a communicator."""

    rank: int

    def sender(self, peer: int, lane: int) -> Sender: ...

    def receiver(self, peer: int, lane: int) -> Receiver: ...

    def borrowed(self, peer: int, region: int, offset: int, nbytes: int) -> np.ndarray: ...

    def check_peers(self, what: str, seq: int | None = None, peer: int | None = None) -> None: ...

    def explain_mismatch(self, peer: int) -> str: ...


class Waiter:
    """Wait for progress: spin, then yield the CPU; enforce the timeout and watch the peers.

    The timeout bounds the time *without progress*: every :meth:`progressed` restarts it, so a
    long call whose peers keep moving never times out. A rank stalled for longer than
    ``SLEEP_AFTER_S`` (a peer busy elsewhere, not a peer mid-transfer) sleeps in short naps
    instead of yielding, to leave the cores to ranks that have work.
    """

    SPINS = 64
    SLEEP_AFTER_S = 0.05
    NAP_S = 2e-4
    CHECK_EVERY_S = 0.05

    def __init__(self, transports: Transports, timeout_s: float, where: Callable[[], tuple[str, int | None]], *, seq: int | None = None, peer: int | None = None) -> None:
        self.transports = transports
        self.timeout_s = timeout_s
        self.where = where
        self.seq = seq
        self.peer = peer
        self.idle = 0
        self.stalled_since = 0.0
        self.next_check = 0.0

    def progressed(self) -> None:
        self.idle = 0

    def wait(self) -> None:
        self.idle += 1
        if self.idle < self.SPINS:
            return
        now = time.monotonic()
        if self.idle == self.SPINS:  # a new stall starts: its clock, and a first look at the peers soon
            self.stalled_since = now
            self.next_check = now + self.CHECK_EVERY_S
        if now - self.stalled_since < self.SLEEP_AFTER_S:
            os.sched_yield()
        else:
            time.sleep(self.NAP_S)
        if now >= self.next_check:
            self.next_check = now + self.CHECK_EVERY_S
            what, peer = self.where()
            self.transports.check_peers(what, self.seq, self.peer)
            if now - self.stalled_since >= self.timeout_s:
                me = self.transports.rank
                raise CommError(f"rank {me}: timed out after {self.timeout_s:g} s without progress {what}", rank=me, peer=peer)


def execute(
    plan: RankPlan,
    transports: Transports,
    combine: np.ufunc,
    signature: int,
    check_signature: bool,
    timeout_s: float,
    label: str,
    seq: int,
) -> None:
    """Run ``plan`` (call number ``seq``, ``label`` in messages) to completion on this rank, or raise :class:`CommError`.

    Positional arguments only: this is the hot path of every call.
    """
    channels = plan.channels
    position = [0] * len(channels)  # steps completed per channel (dependencies count these)
    active = [k for k, ch in enumerate(channels) if ch]
    me = transports.rank
    check = signature if check_signature else None
    waiter: Waiter | None = None  # made at the first pass without progress

    while active:
        progressed = False
        for k in active:
            steps = channels[k]
            pos = position[k]
            while pos < len(steps):
                step = steps[pos]
                if step.deps and any(position[c] < need for c, need in step.deps):
                    break
                recv = step.receiver
                if recv is not None and not recv.ready():
                    break
                send = step.sender
                if send is not None and not send.ready():
                    break
                step.handler(step, recv, send, transports, combine, signature, check, me, label)
                pos += 1
                position[k] = pos
                progressed = True
        if progressed:
            active = [k for k in active if position[k] < len(channels[k])]
            if waiter is not None:
                waiter.progressed()
        else:
            if waiter is None:
                waiter = Waiter(transports, timeout_s, _where(channels, position, label), seq=seq)
            waiter.wait()


def _where(channels: list[list[Step]], position: list[int], label: str) -> Callable[[], tuple[str, int | None]]:
    """Where a stalled rank waits and for which peer, for messages (computed only when needed)."""

    def where() -> tuple[str, int | None]:
        waiting = [steps[position[k]] for k, steps in enumerate(channels) if position[k] < len(steps)]
        if not waiting:
            return f"in {label}", None
        s = waiting[0]
        recv, send = s.receiver, s.sender
        if recv is not None and not recv.ready():
            waits, peer = f"a message from rank {s.recv_peer}", s.recv_peer
        elif send is not None and not send.ready():
            waits, peer = f"a free slot towards rank {s.send_peer}", s.send_peer
        else:
            waits, peer = "a dependency", None
        return f"in {label}: channel {s.channel} instruction {s.instruction} ({s.op.value}, tile {s.tile}) waits for {waits} on lane {s.lane}", peer

    return where


def _incoming(step: Step, recv: Receiver, transports: Transports, check: int | None, me: int, label: str) -> np.ndarray | None:
    """The waiting message as a typed array, or ``None`` when it is inline (then use ``step.inbox``)."""
    nbytes, signature, kind, region, offset = recv.descriptor()
    if check is not None and signature != check:
        raise CommError(f"{label}: rank {me} and rank {step.recv_peer} are not in the same collective call: {transports.explain_mismatch(step.recv_peer)}", rank=me, op=label, peer=step.recv_peer)
    if nbytes != step.nbytes:
        raise CommError(f"{label}: rank {me} expected {step.nbytes} bytes from rank {step.recv_peer} but got {nbytes} (counts differ between ranks)", rank=me, op=label, peer=step.recv_peer)
    if kind == BY_REFERENCE:
        return transports.borrowed(step.recv_peer, region, offset, nbytes).view(step.dtype)
    return None


def _copy(step: Step, recv, send, transports, combine, signature, check, me, label) -> None:
    if step.dst_bytes is not None and step.src_bytes is not None:
        step.dst_bytes[:] = step.src_bytes
    else:
        np.copyto(step.dst, step.src)


def _reduce(step: Step, recv, send, transports, combine, signature, check, me, label) -> None:
    combine(step.dst, step.src, out=step.dst)


def _send(step: Step, recv, send, transports, combine, signature, check, me, label) -> None:
    if step.lent_at is not None:
        send.publish(step.nbytes, signature, BY_REFERENCE, *step.lent_at)
        return
    if step.src_bytes is not None:
        step.outbox_bytes[send.index()][:] = step.src_bytes
    else:
        np.copyto(step.outbox[send.index()], step.src)
    send.publish(step.nbytes, signature)


def _nop(step: Step, recv, send, transports, combine, signature, check, me, label) -> None:
    return None


def _receiving(semantics: OpSemantics) -> Handler:
    """The handler of a receiving opcode, built from its row of :data:`OP_SEMANTICS`.

    The value is ``src (+) received`` for a reduction, else the received data; it goes to
    ``dst`` and/or on to the send peer as the row says.
    """
    reduces, writes, sends = semantics.reduces, semantics.writes_dst, semantics.sends
    plain = writes and not reduces and not sends  # a plain receive: a memmove when it can be

    def receive(step: Step, recv, send, transports, combine, signature, check, me, label) -> None:
        data = _incoming(step, recv, transports, check, me, label)
        if data is None:
            if plain and step.dst_bytes is not None:
                step.dst_bytes[:] = step.inbox_bytes[recv.index()]
                recv.release()
                return
            data = step.inbox[recv.index()]
        value: np.ndarray | None = data
        if reduces:
            # Reduce straight into its destination: dst if it has one, else the outgoing slot.
            combine(step.src, data, out=step.dst if writes else step.outbox[send.index()])
            value = step.dst if writes else None
        elif writes:
            np.copyto(step.dst, data)
        if sends and value is not None:
            np.copyto(step.outbox[send.index()], value)
        recv.release()
        if sends:
            send.publish(step.nbytes, signature)

    return receive


def _local(semantics: OpSemantics) -> Handler:
    """The handler of an opcode that does not receive."""
    if semantics.sends:
        return _send
    if not semantics.writes_dst:
        return _nop
    return _reduce if semantics.reduces else _copy


def _compute(step: Step, recv, send, transports, combine, signature, check, me, label) -> None:
    raise CommError(f"{label}: rank {me}: compute steps run beside the native engine (synccl.overlap), not in the Python executor", rank=me, op=label)


@functools.cache
def _handler(semantics: OpSemantics) -> Handler:
    if semantics.computes:
        return _compute
    return _receiving(semantics) if semantics.receives else _local(semantics)


def prepare(plan: RankPlan) -> None:
    """Give every step of ``plan`` its handler, once, so the loop does no opcode dispatch."""
    for steps in plan.channels:
        for step in steps:
            step.handler = _handler(OP_SEMANTICS[step.op])
