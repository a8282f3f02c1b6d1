"""The executor kernel's plan layout: defined here once, written by Python, read by the kernel.

A rank's part of a call reaches the kernel as flat ``int64`` tables (MSCCL's executor reads its
plan the same way): a *launch* record pointing at a *channel* table (one row per thread block:
its steps and its two connection ends), a *step* table (one row per instruction and tile), a
*dependency* table and a per-channel *state* table the kernel updates. :func:`header` turns the
enums below into the C header ``synccl_abi.h`` that the kernel source includes, so the two sides
cannot drift: the kernel never spells a number that is defined here.

The FIFO descriptors of :mod:`synccl.runtime._shm` use :class:`Desc` too, so the Python executor
and the kernel read each other's messages.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

import ml_dtypes
import numpy as np

from synccl.collectives import OpSemantics

__all__ = ["Launch", "Channel", "State", "Step", "StepFlag", "Desc", "MessageKind", "BufferId", "KernelDtype", "KernelOp", "Status", "Report", "header", "step_flags", "kernel_dtype"]


class Launch(IntEnum):
    """Words of the launch record (addresses are in the executing process or device)."""

    STEPS = 0  # step table: rows of Step.COUNT words
    DEPS = 1  # dependency table: (channel, steps it must have completed) pairs
    CHANNELS = 2  # channel table: rows of Channel.COUNT words
    NCHANNELS = 3
    STATE = 4  # channel state table: rows of State.COUNT words, zero at the start of a call
    INPUT = 5  # base addresses of the buffers a step names by BufferId
    OUTPUT = 6
    SCRATCH = 7
    PEER_REGIONS = 8  # table [local peer][REGION_CAP] of the peers' registered-region bases
    REGION_CAP = 9
    DTYPE = 10  # a KernelDtype
    OP = 11  # a KernelOp
    SIGNATURE = 12  # this call's message signature
    CHECK = 13  # nonzero: compare every received signature with SIGNATURE
    NSLOTS = 14  # slots per FIFO
    SLOT_STRIDE = 15  # bytes from one slot to the next
    CHECK_NS = 16  # host: return to the caller after this long without progress
    TIMEOUT_NS = 17  # device: give up after this long without progress
    ABORT = 18  # address of a word that, once nonzero, stops every block
    REPORT = 19  # address of the Report record the kernel fills
    NAP_AFTER_NS = 20  # host: an idle thread yields the CPU this long, then sleeps in naps
    COUNT = 21


class Channel(IntEnum):
    """Words of a channel row: its steps and its connection ends (0 where it has none)."""

    FIRST_STEP = 0
    NSTEPS = 1
    RECV_HEAD = 2  # receiving end: counters, descriptors and slots in this rank's mailbox
    RECV_TAIL = 3
    RECV_DESC = 4
    RECV_SLOTS = 5
    RECV_PEER = 6  # local index of the receive peer (row of PEER_REGIONS)
    SEND_HEAD = 7  # sending end: the same words in the peer's mailbox
    SEND_TAIL = 8
    SEND_DESC = 9
    SEND_SLOTS = 10
    COUNT = 11


class State(IntEnum):
    """Words a block updates while it runs (a row per channel, one cache line)."""

    POSITION = 0  # steps completed (dependencies count these)
    RECEIVED = 1  # messages taken from the receiving end (its tail)
    SENT = 2  # messages handed to the sending end (its head)
    LENT = 3  # nonzero once the channel lent data that a peer reads in place
    COUNT = 8


class Step(IntEnum):
    """Words of a step row: one instruction of one tile."""

    FLAGS = 0  # StepFlag bits
    SRC_BUFFER = 1  # BufferId
    SRC_OFFSET = 2  # bytes from the buffer's base
    SRC_STRIDE = 3  # bytes between rows
    DST_BUFFER = 4
    DST_OFFSET = 5
    DST_STRIDE = 6
    ROWS = 7  # a step moves ROWS rows of ROW_BYTES bytes (one row when contiguous)
    ROW_BYTES = 8
    DEP_FIRST = 9  # row of the dependency table
    DEP_COUNT = 10
    LEND_REGION = 11  # for StepFlag.LENDS: where the peer finds src in place
    LEND_OFFSET = 12
    COUNT = 13


class StepFlag(IntFlag):
    """What a step does: the columns of :data:`synccl.collectives.OP_SEMANTICS`, plus lending."""

    RECEIVES = 1
    SENDS = 2
    READS_SRC = 4
    READS_DST = 8
    WRITES_DST = 16
    REDUCES = 32
    LENDS = 64  # the send describes src in registered memory instead of copying it


class Desc(IntEnum):
    """Words of a FIFO slot's descriptor."""

    NBYTES = 0
    SIGNATURE = 1
    KIND = 2  # MessageKind
    REGION = 3  # BY_REFERENCE: the sender's registered region and offset
    OFFSET = 4
    COUNT = 8


class MessageKind(IntEnum):
    INLINE = 0  # the data is in the slot
    BY_REFERENCE = 1  # the data is in the sender's registered region


class BufferId(IntEnum):
    INPUT = 0
    OUTPUT = 1
    SCRATCH = 2


class KernelDtype(IntEnum):
    FLOAT16 = 0
    BFLOAT16 = 1
    FLOAT32 = 2
    FLOAT64 = 3
    INT8 = 4
    INT32 = 5
    INT64 = 6
    UINT8 = 7
    BOOL = 8


class KernelOp(IntEnum):
    """Reduction operators (``avg`` runs as SUM; the caller divides)."""

    SUM = 0
    PROD = 1
    MIN = 2
    MAX = 3
    BAND = 4
    BOR = 5
    BXOR = 6


class Status(IntEnum):
    """What a kernel run returns (and leaves in ``Report.STATUS``)."""

    DONE = 0
    STALLED = 1  # host build: no progress for CHECK_NS; call again to continue
    MISMATCH = 2  # a message's signature differs from this call's
    SIZE = 3  # a message's size differs from the step's
    ABORTED = 4  # the abort word was set
    TIMEOUT = 5  # device: no progress for TIMEOUT_NS


class Report(IntEnum):
    """Words of the report record: why a run returned, and where it waits."""

    STATUS = 0
    CHANNEL = 1  # the channel concerned (first waiting one when stalled)
    STEP = 2  # its position (steps completed)
    WAITS_FOR = 3  # 0 a dependency, 1 a message, 2 a free slot
    GOT = 4  # MISMATCH / SIZE: the value received
    EXPECTED = 5
    STALL_START_NS = 6  # monotonic time the current stall began (0 while progressing)
    IDLE_PASSES = 7
    COUNT = 8


_ENUMS: tuple[tuple[str, type[IntEnum] | type[IntFlag]], ...] = (
    ("LAUNCH", Launch),
    ("CHANNEL", Channel),
    ("STATE", State),
    ("STEP", Step),
    ("FLAG", StepFlag),
    ("DESC", Desc),
    ("MESSAGE", MessageKind),
    ("BUFFER", BufferId),
    ("DTYPE", KernelDtype),
    ("OP", KernelOp),
    ("STATUS", Status),
    ("REPORT", Report),
)


def header() -> str:
    """The C header ``synccl_abi.h``: every enum above as ``PREFIX_NAME`` constants.

    >>> "LAUNCH_STEPS = 0," in header() and "FLAG_LENDS = 64," in header()
    True
    """
    lines = ["// Generated by synccl.runtime._kernel_abi.header(): the plan layout. Do not edit.", "#pragma once", ""]
    for prefix, enum in _ENUMS:
        lines.append(f"enum {enum.__name__}Abi {{")
        lines.extend(f"  {prefix}_{member.name} = {int(member.value)}," for member in enum)
        lines.append("};")
    return "\n".join(lines) + "\n"


def step_flags(semantics: OpSemantics, *, lends: bool) -> StepFlag:
    """The flags of a step executing an op with these semantics.

    >>> from synccl.collectives import Op
    >>> step_flags(Op.RECV_REDUCE_SEND.semantics, lends=False) == StepFlag.RECEIVES | StepFlag.SENDS | StepFlag.READS_SRC | StepFlag.REDUCES
    True
    """
    flags = StepFlag(0)
    for flag, on in (
        (StepFlag.RECEIVES, semantics.receives),
        (StepFlag.SENDS, semantics.sends),
        (StepFlag.READS_SRC, semantics.reads_src),
        (StepFlag.READS_DST, semantics.reads_dst),
        (StepFlag.WRITES_DST, semantics.writes_dst),
        (StepFlag.REDUCES, semantics.reduces),
        (StepFlag.LENDS, lends),
    ):
        if on:
            flags |= flag
    return flags


_DTYPES = {
    np.dtype(np.float16): KernelDtype.FLOAT16,
    np.dtype(ml_dtypes.bfloat16): KernelDtype.BFLOAT16,
    np.dtype(np.float32): KernelDtype.FLOAT32,
    np.dtype(np.float64): KernelDtype.FLOAT64,
    np.dtype(np.int8): KernelDtype.INT8,
    np.dtype(np.int32): KernelDtype.INT32,
    np.dtype(np.int64): KernelDtype.INT64,
    np.dtype(np.uint8): KernelDtype.UINT8,
    np.dtype(np.bool_): KernelDtype.BOOL,
}


def kernel_dtype(dtype: np.dtype) -> KernelDtype:
    """The kernel's code for a numpy dtype.

    >>> kernel_dtype(np.dtype("float32")).name
    'FLOAT32'
    """
    return _DTYPES[np.dtype(dtype)]
