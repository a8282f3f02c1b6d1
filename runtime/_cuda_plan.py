"""A rank's plan for the GPU: the host encoding of :mod:`synccl.runtime._native`, re-based onto the device.

:func:`synccl.runtime._native.encode` writes the kernel's tables with this process's host
addresses: steps name their buffers by :class:`~synccl.runtime._kernel_abi.BufferId` and byte
offset (so they need nothing), channels hold the addresses of FIFO counters, descriptors and slots
in the host mailboxes. A GPU rank has a device mailbox laid out exactly like its host one, so a
channel address moves to the device by adding (device mailbox base - host mailbox base) of the
mailbox it lies in. :func:`device_tables` does that and lays every table out in one block of
device memory, ready to upload. Pure arithmetic: no CUDA here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from synccl.exceptions import CommError
from synccl.runtime._kernel_abi import BufferId, Channel, Launch, Step, StepFlag
from synccl.runtime._native import NativePlan

__all__ = ["DeviceTables", "Region", "device_tables", "table_bytes", "touched_buffers"]

#: Channel words that hold addresses in a mailbox (the others are counts and indices).
CHANNEL_ADDRESSES = (
    Channel.RECV_HEAD,
    Channel.RECV_TAIL,
    Channel.RECV_DESC,
    Channel.RECV_SLOTS,
    Channel.SEND_HEAD,
    Channel.SEND_TAIL,
    Channel.SEND_DESC,
    Channel.SEND_SLOTS,
)
_ALIGN_WORDS = 16  # each table starts on a 128-byte boundary (state rows are one cache line each)


@dataclass(frozen=True, slots=True)
class Region:
    """``nbytes`` of host memory at ``host`` that live at ``device`` on the GPU (one mailbox)."""

    host: int
    nbytes: int
    device: int


@dataclass(frozen=True, slots=True)
class DeviceTables:
    """The launch record and tables of one plan as uploaded to device address ``base``.

    ``words[:Launch.COUNT]`` is the launch record (its SIGNATURE and REPORT are set per launch);
    the state table, zeroed before every launch, is ``state_bytes`` at ``base + state_offset``.
    """

    words: np.ndarray
    base: int
    state_offset: int
    state_bytes: int
    nchannels: int


def _aligned(words: int) -> int:
    return -(-words // _ALIGN_WORDS) * _ALIGN_WORDS


def _sections(native: NativePlan) -> list[np.ndarray]:
    steps, deps, channels, _abort = native.tables
    return [native.launch, steps, deps, channels, native.state]


def table_bytes(native: NativePlan) -> int:
    """Bytes of device memory :func:`device_tables` lays ``native``'s tables out in."""
    return 8 * sum(_aligned(t.size) for t in _sections(native))


def rebase(address: int, regions: Sequence[Region], what: str) -> int:
    """``address`` (in one of the host ``regions``) as a device address.

    >>> rebase(0x1010, [Region(0x1000, 0x100, 0x9000)], "a counter") == 0x9010
    True
    """
    for region in regions:
        if region.host <= address < region.host + region.nbytes:
            return region.device + (address - region.host)
    raise CommError(f"GPU plan: {what} at {address:#x} lies in no mailbox mapped on the device")


def device_tables(
    native: NativePlan, *, base: int, buffers: dict[BufferId, int], mailboxes: Sequence[Region], abort: int, timeout_ns: int
) -> DeviceTables:
    """``native``'s tables for the GPU, laid out from device address ``base`` (see :func:`table_bytes`).

    Parameters
    ----------
    native : NativePlan
        The host encoding (:func:`synccl.runtime._native.encode`) of a plan over placeholders.
    base : int
        Device address of a block of at least :func:`table_bytes` bytes.
    buffers : dict
        Device address of the input, output and scratch buffer (0 for one no step touches).
    mailboxes : sequence of Region
        Every host mailbox the channels point into, with its device copy as mapped in this process.
    abort : int
        Device address of the abort word (host memory mapped for the device).
    timeout_ns : int
        How long a block may wait without progress before it gives up.

    Returns
    -------
    DeviceTables
        The words to upload to ``base``; REPORT and SIGNATURE of the launch record are left 0.
    """
    sections = _sections(native)
    offsets = []
    total = 0
    for table in sections:
        offsets.append(total)
        total += _aligned(table.size)
    words = np.zeros(total, dtype=np.int64)
    for table, at in zip(sections, offsets, strict=True):
        words[at : at + table.size] = table.reshape(-1)
    launch_at, steps_at, deps_at, channels_at, state_at = offsets
    channels = words[channels_at : channels_at + native.tables[2].size].reshape(-1, Channel.COUNT)
    for row, host_row in zip(channels, native.tables[2], strict=True):
        for word in CHANNEL_ADDRESSES:
            if host_row[word]:
                row[word] = rebase(int(host_row[word]), mailboxes, f"channel word {word.name}")
    launch = words[launch_at : launch_at + Launch.COUNT]
    launch[Launch.STEPS], launch[Launch.DEPS], launch[Launch.CHANNELS], launch[Launch.STATE] = (base + 8 * at for at in (steps_at, deps_at, channels_at, state_at))
    launch[Launch.INPUT], launch[Launch.OUTPUT], launch[Launch.SCRATCH] = buffers[BufferId.INPUT], buffers[BufferId.OUTPUT], buffers[BufferId.SCRATCH]
    # No message is lent to a GPU rank: its buffers are never in registered host memory.
    launch[Launch.PEER_REGIONS], launch[Launch.REGION_CAP] = 0, 0
    launch[Launch.TIMEOUT_NS] = timeout_ns
    launch[Launch.ABORT] = abort
    launch[Launch.SIGNATURE], launch[Launch.REPORT] = 0, 0
    return DeviceTables(words, base, 8 * state_at, 8 * native.state.size, int(native.launch[Launch.NCHANNELS]))


def touched_buffers(native: NativePlan) -> set[BufferId]:
    """The buffers some step of ``native`` reads or writes (an untouched one may stay on the host).

    Examples
    --------
    >>> import numpy as np
    >>> from synccl.runtime._kernel_abi import State
    >>> steps = np.zeros((1, Step.COUNT), np.int64)
    >>> steps[0, [Step.FLAGS, Step.SRC_BUFFER, Step.DST_BUFFER, Step.ROWS, Step.ROW_BYTES]] = [StepFlag.READS_SRC | StepFlag.WRITES_DST, BufferId.INPUT, BufferId.SCRATCH, 1, 8]
    >>> plan = NativePlan(None, np.zeros(Launch.COUNT, np.int64), np.zeros((1, State.COUNT), np.int64), None, (steps, None, None, None), 0)
    >>> sorted(b.name for b in touched_buffers(plan))
    ['INPUT', 'SCRATCH']
    """
    touched = set()
    for row in native.tables[0]:
        if row[Step.ROWS] * row[Step.ROW_BYTES] == 0:
            continue
        if row[Step.FLAGS] & StepFlag.READS_SRC:
            touched.add(BufferId(int(row[Step.SRC_BUFFER])))
        if row[Step.FLAGS] & (StepFlag.READS_DST | StepFlag.WRITES_DST):
            touched.add(BufferId(int(row[Step.DST_BUFFER])))
    return touched

