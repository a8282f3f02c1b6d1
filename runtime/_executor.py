"""The executor: one event loop per rank runs every channel of a plan, slice by slice.

A single thread visits the channels in turn and runs each one's next slice as soon as its
dependencies are complete, its incoming message has arrived and its outgoing FIFO has a free
slot; with the GIL, this beats a thread per channel. When a whole pass makes no progress the
rank spins a little, then yields the CPU, then sleeps in growing steps (so 8 ranks on 2 cores
still progress), checking on the way that its peers are alive and that the timeout has not
passed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from synccl.collectives import Op
from synccl.exceptions import CommError
from synccl.runtime._plan import RankPlan, Step
from synccl.runtime._shm import BY_REFERENCE

__all__ = ["Sender", "Receiver", "Transports", "Waiter", "execute", "prepare"]


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

    def check_peers(self, what: str) -> None: ...


class Waiter:
    """Spin, then yield, then sleep with backoff; enforce the deadline and watch the peers."""

    SPINS = 200
    YIELDS = 2000
    CHECK_EVERY_S = 0.05

    def __init__(self, transports: Transports, timeout_s: float, what: Callable[[], str]) -> None:
        self.transports = transports
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.what = what
        self.idle = 0
        self.next_check = time.monotonic() + self.CHECK_EVERY_S

    def progressed(self) -> None:
        self.idle = 0

    def wait(self) -> None:
        self.idle += 1
        if self.idle < self.SPINS:
            return
        if self.idle < self.YIELDS:
            os.sched_yield()
        else:
            time.sleep(min(1e-3, 1e-5 * (self.idle - self.YIELDS + 1)))
        now = time.monotonic()
        if now >= self.next_check:
            self.next_check = now + self.CHECK_EVERY_S
            self.transports.check_peers(self.what())
            if now >= self.deadline:
                raise CommError(f"rank {self.transports.rank}: timed out after {self.timeout_s:g} s {self.what()}", rank=self.transports.rank)


def execute(
    plan: RankPlan,
    transports: Transports,
    combine: np.ufunc,
    signature: int,
    check_signature: bool,
    timeout_s: float,
    collective: str,
    seq: int,
) -> None:
    """Run ``plan`` (call number ``seq`` of ``collective``) to completion on this rank, or raise :class:`CommError`.

    Positional arguments only: this is the hot path of every call.
    """
    label = f"{collective} #{seq}"
    channels = plan.channels
    position = [0] * len(channels)  # steps completed per channel (dependencies count these)
    active = [k for k, ch in enumerate(channels) if ch]
    me = transports.rank
    check = signature if check_signature else None
    waiter: Waiter | None = None
    idle = 0  # passes without progress; the Waiter (and its clock) only after a short spin

    def what() -> str:
        waiting = [channels[k][position[k]] for k in active if position[k] < len(channels[k])]
        if not waiting:
            return f"in {label}"
        s = waiting[0]
        waits = f"a message from rank {s.recv_peer}" if s.recv_peer is not None else f"a free slot towards rank {s.send_peer}" if s.send_peer is not None else "a dependency"
        return f"in {label}: channel {s.channel} instruction {s.instruction} ({s.op.value}, tile {s.tile}) waits for {waits} on lane {s.lane}"

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
            idle = 0
            if waiter is not None:
                waiter.progressed()
        else:
            idle += 1
            if idle > Waiter.SPINS:
                if waiter is None:
                    waiter = Waiter(transports, timeout_s, what)
                waiter.wait()


def _incoming(step: Step, recv: Receiver, transports: Transports, check: int | None, me: int, label: str) -> np.ndarray | None:
    """The waiting message as a typed array, or ``None`` when it is inline (then use ``step.inbox``)."""
    nbytes, signature, kind, region, offset = recv.descriptor()
    if check is not None and signature != check:
        raise CommError(f"{label}: rank {me} and rank {step.recv_peer} are not in the same collective call (their arguments differ)", rank=me, op=label, peer=step.recv_peer)
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


def _receive(step: Step, recv, send, transports, combine, signature, check, me, label) -> None:
    op = step.op
    data = _incoming(step, recv, transports, check, me, label)
    if data is None:
        if op is Op.RECV and step.dst_bytes is not None:
            step.dst_bytes[:] = step.inbox_bytes[recv.index()]
            recv.release()
            return
        data = step.inbox[recv.index()]
    if op is Op.RECV:
        np.copyto(step.dst, data)
    elif op is Op.RECV_REDUCE_COPY:
        combine(step.src, data, out=step.dst)
    elif op is Op.RECV_COPY_SEND:
        np.copyto(step.dst, data)
        np.copyto(step.outbox[send.index()], data)
    elif op is Op.RECV_REDUCE_SEND:
        combine(step.src, data, out=step.outbox[send.index()])
    else:  # RECV_REDUCE_COPY_SEND
        combine(step.src, data, out=step.dst)
        np.copyto(step.outbox[send.index()], step.dst)
    recv.release()
    if send is not None:
        send.publish(step.nbytes, signature)


#: What each opcode does; the plan stores the handler in each step (see :func:`prepare`).
_HANDLERS = {Op.COPY: _copy, Op.REDUCE: _reduce, Op.SEND: _send, Op.NOP: _nop}


def prepare(plan: RankPlan) -> None:
    """Give every step of ``plan`` its handler, once, so the loop does no opcode dispatch."""
    for steps in plan.channels:
        for step in steps:
            step.handler = _HANDLERS.get(step.op, _receive)
