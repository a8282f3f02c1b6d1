"""The native engine: a rank's plan encoded into the kernel's tables and run by its host build.

:func:`encode` turns a compiled, bound :class:`~synccl.runtime._plan.RankPlan` into the flat
tables of :mod:`synccl.runtime._kernel_abi` (addresses of this process: the buffers, the
mailboxes' counters, descriptors and slots). :func:`run` calls the host build of the executor
kernel until the call completes; every ``CHECK_NS`` without progress the kernel returns, so this
side can watch the peers and the timeout exactly as the Python executor does, then continue.
The Python executor (:mod:`synccl.runtime._executor`) stays the reference for what the kernel does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from synccl.collectives import OP_SEMANTICS, Buffer
from synccl.exceptions import CommError
from synccl.runtime._host_build import host_library
from synccl.runtime._kernel_abi import BufferId, Channel, KernelOp, Launch, Report, State, Status, Step, kernel_dtype, step_flags
from synccl.runtime._plan import RankPlan
from synccl.runtime._plan import Step as PlanStep
from synccl.runtime._shm import ShmReceiver, ShmSender

if TYPE_CHECKING:
    from synccl.runtime._world import World

__all__ = ["NativePlan", "encode", "runs_natively", "run", "begin", "abort", "host_channel", "CHECK_S"]

#: The kernel hands control back after this long without progress (peers and timeout are checked).
CHECK_S = 0.05
#: An idle kernel yields the CPU this long before it naps: a longer stall means a peer is busy elsewhere.
NAP_AFTER_NS = 50_000_000

_OPS = {"sum": KernelOp.SUM, "avg": KernelOp.SUM, "prod": KernelOp.PROD, "min": KernelOp.MIN, "max": KernelOp.MAX, "band": KernelOp.BAND, "bor": KernelOp.BOR, "bxor": KernelOp.BXOR}
_WAITS = ("a dependency", "a message from rank {recv}", "a free slot towards rank {send}", "rank {send} to read lent data")


@dataclass(slots=True)
class NativePlan:
    """A plan in the kernel's layout, with the arrays its addresses point into kept alive."""

    plan: RankPlan
    launch: np.ndarray
    state: np.ndarray
    report: np.ndarray
    tables: tuple[np.ndarray, ...]  # steps, dependencies, channels, the abort word
    address: int  # of ``launch``
    region_table: np.ndarray | None = None  # the peers' registered regions, as last told to the kernel


def runs_natively(plan: RankPlan) -> bool:
    """Whether every connection of ``plan`` is in shared memory (MPI ones run in the Python executor)."""
    return all(
        isinstance(s.receiver, ShmReceiver | type(None)) and isinstance(s.sender, ShmSender | type(None)) for steps in plan.channels for s in steps
    )


def _address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def _operand(view: np.ndarray, bases: dict[BufferId, np.ndarray], rows: int, row_bytes: int) -> tuple[int, int, int]:
    """``(buffer id, byte offset, row stride)`` of a step's view."""
    stride = int(view.strides[0]) if view.ndim == 2 else row_bytes
    if rows * row_bytes == 0:
        return BufferId.INPUT, 0, stride
    start = _address(view)
    for buffer_id, base in bases.items():
        lo = _address(base)
        if lo <= start < lo + base.nbytes:
            return buffer_id, start - lo, stride
    raise CommError(f"native engine: a step's data at {start:#x} lies in none of the call's buffers")


def _step_row(step: PlanStep, bases: dict[BufferId, np.ndarray], dep_first: int) -> list[int]:
    shaped = step.dst if step.dst is not None else step.src
    rows, row_bytes = (1, step.nbytes) if shaped is None or shaped.ndim == 1 else (shaped.shape[0], shaped.shape[1] * shaped.itemsize)
    row = [0] * Step.COUNT
    row[Step.FLAGS] = step_flags(OP_SEMANTICS[step.op], lends=step.lent_at is not None)
    if step.src is not None:
        row[Step.SRC_BUFFER], row[Step.SRC_OFFSET], row[Step.SRC_STRIDE] = _operand(step.src, bases, rows, row_bytes)
    if step.dst is not None:
        row[Step.DST_BUFFER], row[Step.DST_OFFSET], row[Step.DST_STRIDE] = _operand(step.dst, bases, rows, row_bytes)
    row[Step.ROWS], row[Step.ROW_BYTES] = rows, row_bytes
    row[Step.DEP_FIRST], row[Step.DEP_COUNT] = dep_first, len(step.deps)
    if step.lent_at is not None:
        row[Step.LEND_REGION], row[Step.LEND_OFFSET] = step.lent_at
    return row


def _channel_row(steps: list[PlanStep], first: int, local_index: dict[int, int]) -> list[int]:
    row = [0] * Channel.COUNT
    row[Channel.FIRST_STEP], row[Channel.NSTEPS] = first, len(steps)
    receiver = next((s.receiver for s in steps if s.receiver is not None), None)
    sender = next((s.sender for s in steps if s.sender is not None), None)
    if receiver is not None:
        base = receiver.mailbox_address
        row[Channel.RECV_HEAD], row[Channel.RECV_TAIL], row[Channel.RECV_DESC] = base + 8 * receiver.head_at, base + 8 * receiver.tail_at, base + 8 * receiver.desc_at
        row[Channel.RECV_SLOTS] = _address(receiver.slot_arrays[0])
        row[Channel.RECV_PEER] = local_index[next(s.recv_peer for s in steps if s.receiver is not None)]
    if sender is not None:
        base = sender.mailbox_address
        row[Channel.SEND_HEAD], row[Channel.SEND_TAIL], row[Channel.SEND_DESC] = base + 8 * sender.head_at, base + 8 * sender.tail_at, base + 8 * sender.desc_at
        row[Channel.SEND_SLOTS] = _address(sender.slot_arrays[0])
    return row


def encode(plan: RankPlan, buffers: dict[Buffer, np.ndarray], *, op: str, check: bool, local_index: dict[int, int], slots: int, slot_stride: int) -> NativePlan:
    """The kernel's tables for a bound plan over ``buffers`` (input and output after aliasing).

    ``check`` compares every received message's signature with the call's; ``local_index``
    maps local peers to rows of the region table; ``slots`` and ``slot_stride`` describe every
    FIFO (one mailbox layout per job).
    """
    bases = {BufferId.INPUT: buffers[Buffer.INPUT], BufferId.OUTPUT: buffers[Buffer.OUTPUT], BufferId.SCRATCH: plan.scratch}
    step_rows: list[list[int]] = []
    dep_pairs: list[tuple[int, int]] = []
    channel_rows: list[list[int]] = []
    for steps in plan.channels:
        if host_channel(steps):  # the host runs it (runtime/_overlap.py); the kernel only reads its position
            channel_rows.append(_channel_row([], len(step_rows), local_index))
            continue
        channel_rows.append(_channel_row(steps, len(step_rows), local_index))
        for step in steps:
            step_rows.append(_step_row(step, bases, len(dep_pairs)))
            dep_pairs.extend(step.deps)
    step_table = np.array(step_rows or [[0] * Step.COUNT], dtype=np.int64)
    dep_table = np.array(dep_pairs or [(0, 0)], dtype=np.int64)
    channel_table = np.array(channel_rows or [[0] * Channel.COUNT], dtype=np.int64)
    state = np.zeros((max(1, len(plan.channels)), State.COUNT), dtype=np.int64)
    report = np.zeros(Report.COUNT, dtype=np.int64)
    abort_word = np.zeros(1, dtype=np.int64)  # set by abort(): a host compute step failed
    launch = np.zeros(Launch.COUNT, dtype=np.int64)
    launch[Launch.STEPS], launch[Launch.DEPS], launch[Launch.CHANNELS] = _address(step_table), _address(dep_table), _address(channel_table)
    launch[Launch.NCHANNELS] = len(plan.channels)
    launch[Launch.STATE] = _address(state)
    for word, buffer_id in ((Launch.INPUT, BufferId.INPUT), (Launch.OUTPUT, BufferId.OUTPUT), (Launch.SCRATCH, BufferId.SCRATCH)):
        launch[word] = _address(bases[buffer_id])
    launch[Launch.DTYPE] = kernel_dtype(buffers[Buffer.INPUT].dtype)
    launch[Launch.OP] = _OPS[op]
    launch[Launch.CHECK] = check
    launch[Launch.NSLOTS], launch[Launch.SLOT_STRIDE] = slots, slot_stride
    launch[Launch.CHECK_NS] = int(CHECK_S * 1e9)
    launch[Launch.NAP_AFTER_NS] = NAP_AFTER_NS
    launch[Launch.ABORT], launch[Launch.REPORT] = _address(abort_word), _address(report)
    return NativePlan(plan, launch, state, report, (step_table, dep_table, channel_table, abort_word), _address(launch))


def host_channel(steps: list[PlanStep]) -> bool:
    """Whether a channel's steps are compute steps, which the host runs beside the kernel."""
    return bool(steps) and OP_SEMANTICS[steps[0].op].computes


def begin(native: NativePlan, signature: int) -> None:
    """Start a call from the host, as a fresh kernel run would: zero the channel state and report.

    A host thread that runs compute steps beside the kernel (:mod:`synccl.runtime._overlap`)
    shares the state table, so the call must be started before either side moves; the kernel is
    then run with ``started=True``. While it waits, the kernel naps at once instead of yielding:
    the compute thread needs the core.
    """
    native.launch[Launch.SIGNATURE] = signature
    native.launch[Launch.NAP_AFTER_NS] = 0
    native.state[:] = 0
    native.report[:] = 0
    native.tables[3][0] = 0


def abort(native: NativePlan) -> None:
    """Make a running kernel stop at its next idle pass (it then returns ABORTED)."""
    native.tables[3][0] = 1


def run(native: NativePlan, world: World, signature: int, timeout_s: float, label: str, seq: int, *, started: bool = False) -> None:
    """Run call ``seq`` (``label`` in messages) to completion on this rank, or raise :class:`CommError`.

    ``world`` gives the peers' registered regions, watches them (``check_peers``) and explains
    mismatches, as for the Python executor. ``started``: :func:`begin` has started the call.
    """
    if world.region_table is not native.region_table:  # a region was registered since
        table = native.region_table = world.region_table
        native.launch[Launch.PEER_REGIONS], native.launch[Launch.REGION_CAP] = _address(table), table.shape[1]
    run_kernel = host_library().synccl_host_run
    fresh = 0 if started else 1
    while True:
        status = run_kernel(native.address, signature, fresh)
        if status == Status.DONE:
            return
        fresh = 0
        if status != Status.STALLED:
            raise _failure(native, world, Status(status), label)
        what, peer = _where(native, label)
        world.check_peers(what, seq)
        if time.monotonic_ns() - int(native.report[Report.STALL_START_NS]) >= timeout_s * 1e9:
            me = world.rank
            raise CommError(f"rank {me}: timed out after {timeout_s:g} s without progress {what}", rank=me, peer=peer)


def _step_at(native: NativePlan) -> PlanStep:
    steps = native.plan.channels[int(native.report[Report.CHANNEL])]
    return steps[min(int(native.report[Report.STEP]), len(steps) - 1)]


def _where(native: NativePlan, label: str) -> tuple[str, int | None]:
    """Where the stalled rank waits and for which peer (the Python executor's wording)."""
    s = _step_at(native)
    wait = int(native.report[Report.WAITS_FOR])
    peer = None if wait == 0 else s.recv_peer if wait == 1 else s.send_peer
    waits = _WAITS[wait].format(recv=s.recv_peer, send=s.send_peer)
    return f"in {label}: channel {s.channel} instruction {s.instruction} ({s.op.value}, tile {s.tile}) waits for {waits} on lane {s.lane}", peer


def _failure(native: NativePlan, world: World, status: Status, label: str) -> CommError:
    s = _step_at(native)
    me, peer = world.rank, s.recv_peer
    got, expected = int(native.report[Report.GOT]), int(native.report[Report.EXPECTED])
    if status == Status.MISMATCH:
        return CommError(f"{label}: rank {me} and rank {peer} are not in the same collective call: {world.explain_mismatch(peer)}", rank=me, op=label, peer=peer)
    if status == Status.SIZE:
        return CommError(f"{label}: rank {me} expected {expected} bytes from rank {peer} but got {got} (counts differ between ranks)", rank=me, op=label, peer=peer)
    return CommError(f"{label}: rank {me}: the executor kernel stopped ({status.name.lower()})", rank=me, op=label)

