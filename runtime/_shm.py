"""Shared memory within a node: segments, mailboxes and FIFO connections.

Every segment is a file in ``/dev/shm`` created with mode 0600 and an unguessable name
(``synccl-<pid>-<random>``). Segments are unlinked as soon as every local peer has mapped them,
so nothing outlives the job even after ``kill -9``; a segment whose creator died before that
moment is removed by :func:`remove_stale_segments` at the next ``init``.

Each rank owns one *mailbox*: its status board (:mod:`synccl.runtime._board`), then for every local peer and lane, a FIFO of ``slots`` slots written by
that peer and read by the owner. The sender fills a slot (or, for a registered buffer, describes
where the receiver can read the data in place), then advances ``head``; the receiver consumes and
advances ``tail``. Counters only grow, across calls. On x86-64 stores are seen in program order,
so data written before ``head`` is visible to a reader that saw ``head``.
"""

from __future__ import annotations

import mmap
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synccl.runtime._board import BOARD_BYTES, Board
from synccl.runtime._kernel_abi import Desc, MessageKind

__all__ = ["Segment", "remove_stale_segments", "Mailbox", "ShmSender", "ShmReceiver", "INLINE", "BY_REFERENCE"]

SHM_DIR = Path("/dev/shm")  # noqa: S108 - POSIX shared memory; files are O_EXCL, mode 0600, random names
PREFIX = "synccl-"
_LINE = 64  # bytes per cache line: head and tail live on separate lines
INLINE, BY_REFERENCE = int(MessageKind.INLINE), int(MessageKind.BY_REFERENCE)
# Descriptor words as plain ints (the hot path of the Python executor indexes with them).
_DESC_WORDS, _NBYTES, _SIGNATURE, _KIND, _REGION, _OFFSET = (int(d) for d in (Desc.COUNT, Desc.NBYTES, Desc.SIGNATURE, Desc.KIND, Desc.REGION, Desc.OFFSET))


class Segment:
    """A shared-memory file mapped into this process."""

    def __init__(self, name: str, size: int, buf: mmap.mmap, *, owner: bool) -> None:
        self.name = name
        self.size = size
        self.buf = buf
        self.owner = owner

    @classmethod
    def create(cls, size: int) -> Segment:
        """Create a new segment of ``size`` bytes (mode 0600, exclusive, random name)."""
        size = max(int(size), mmap.PAGESIZE)
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(12)}"
        fd = os.open(SHM_DIR / name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            buf = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(name, size, buf, owner=True)

    @classmethod
    def attach(cls, name: str, size: int) -> Segment:
        """Map a peer's segment ``name``."""
        if not name.startswith(PREFIX) or "/" in name:
            raise ValueError(f"shared memory: refusing segment name {name!r}")
        fd = os.open(SHM_DIR / name, os.O_RDWR)
        try:
            buf = mmap.mmap(fd, max(int(size), mmap.PAGESIZE))
        finally:
            os.close(fd)
        return cls(name, size, buf, owner=False)

    def unlink(self) -> None:
        """Remove the file; the mapping stays valid until every process unmaps it."""
        try:
            os.unlink(SHM_DIR / self.name)
        except FileNotFoundError:
            pass

    def array(self, dtype: np.dtype | type, offset: int = 0, count: int = -1) -> np.ndarray:
        """A numpy view of the segment."""
        return np.frombuffer(self.buf, dtype=dtype, count=count, offset=offset)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def remove_stale_segments() -> int:
    """Unlink every synccl segment whose creating process is gone; return how many.

    >>> remove_stale_segments() >= 0
    True
    """
    removed = 0
    for path in SHM_DIR.glob(f"{PREFIX}*"):
        try:
            pid = int(path.name[len(PREFIX) :].split("-", 1)[0])
        except ValueError:
            continue
        if not _alive(pid):
            try:
                path.unlink()
                removed += 1
            except (FileNotFoundError, PermissionError):
                pass
    return removed


@dataclass(frozen=True, slots=True)
class MailboxLayout:
    """Where each connection's counters, descriptors and slots sit in a mailbox."""

    npeers: int  # local ranks of the node (the owner included; its own entries stay unused)
    max_lanes: int
    slots: int
    slot_bytes: int

    @property
    def header_bytes(self) -> int:
        return _round_up(BOARD_BYTES, mmap.PAGESIZE)

    @property
    def control_bytes(self) -> int:
        return _round_up(2 * _LINE + self.slots * _DESC_WORDS * 8, mmap.PAGESIZE)

    @property
    def slot_stride(self) -> int:
        """Bytes from one slot of a connection to the next (slots start on page boundaries)."""
        return _round_up(self.slot_bytes, mmap.PAGESIZE)

    @property
    def connection_bytes(self) -> int:
        return self.control_bytes + self.slots * self.slot_stride

    @property
    def size(self) -> int:
        return self.header_bytes + self.npeers * self.max_lanes * self.connection_bytes

    def offset(self, peer: int, lane: int) -> int:
        return self.header_bytes + (peer * self.max_lanes + lane) * self.connection_bytes


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class Mailbox:
    """One rank's receiving FIFOs, mapped by the owner and by every local peer."""

    def __init__(self, segment: Segment, layout: MailboxLayout) -> None:
        self.segment = segment
        self.layout = layout
        # Control words through a memoryview: item access is several times cheaper than numpy's.
        self.words = memoryview(segment.buf).cast("q")
        self.board = Board(self.words, memoryview(segment.buf))
        self.address = segment.array(np.uint8, 0, 1).__array_interface__["data"][0]  # for the native engine

    def connection(self, peer: int, lane: int) -> tuple[int, int, int, list[np.ndarray]]:
        """Word indices of ``head``, ``tail`` and the first descriptor, and the slots' bytes."""
        lay = self.layout
        base = lay.offset(peer, lane)
        slots = [self.segment.array(np.uint8, base + lay.control_bytes + k * lay.slot_stride, lay.slot_bytes) for k in range(lay.slots)]
        return base // 8, (base + _LINE) // 8, (base + 2 * _LINE) // 8, slots


class ShmSender:
    """This rank's sending end of connection ``(me -> peer, lane)``: it writes the peer's mailbox."""

    def __init__(self, mailbox: Mailbox, my_local_index: int, lane: int) -> None:
        self.words = mailbox.words
        self.head_at, self.tail_at, self.desc_at, self.slot_arrays = mailbox.connection(my_local_index, lane)
        self.mailbox_address = mailbox.address
        self.slots = mailbox.layout.slots
        self.head = self.words[self.head_at]

    def ready(self) -> bool:
        """Whether a slot is free."""
        return self.head - self.words[self.tail_at] < self.slots

    def index(self) -> int:
        """Which slot the next message goes to."""
        return self.head % self.slots

    def publish(self, nbytes: int, signature: int, kind: int = INLINE, region: int = 0, offset: int = 0) -> None:
        """Make the current slot visible to the receiver (data first, then ``head``)."""
        words = self.words
        at = self.desc_at + (self.head % self.slots) * _DESC_WORDS
        words[at + _NBYTES] = nbytes
        words[at + _SIGNATURE] = signature
        words[at + _KIND] = kind
        if kind != INLINE:
            words[at + _REGION] = region
            words[at + _OFFSET] = offset
        self.head += 1
        words[self.head_at] = self.head

    def drained(self) -> bool:
        """Whether the receiver has consumed everything sent so far."""
        return self.words[self.tail_at] >= self.head

    def resync(self) -> None:
        """Take up the counter from memory, where the native engine advanced it."""
        self.head = self.words[self.head_at]


class ShmReceiver:
    """This rank's receiving end of connection ``(peer -> me, lane)``: it reads its own mailbox."""

    def __init__(self, mailbox: Mailbox, peer_local_index: int, lane: int) -> None:
        self.words = mailbox.words
        self.head_at, self.tail_at, self.desc_at, self.slot_arrays = mailbox.connection(peer_local_index, lane)
        self.mailbox_address = mailbox.address
        self.slots = mailbox.layout.slots
        self.tail = self.words[self.tail_at]

    def ready(self) -> bool:
        """Whether a message is waiting."""
        return self.words[self.head_at] > self.tail

    def index(self) -> int:
        """Which slot holds the waiting message."""
        return self.tail % self.slots

    def descriptor(self) -> tuple[int, int, int, int, int]:
        """``(nbytes, signature, kind, region, offset)`` of the waiting message."""
        at = self.desc_at + (self.tail % self.slots) * _DESC_WORDS
        w = self.words
        return w[at + _NBYTES], w[at + _SIGNATURE], w[at + _KIND], w[at + _REGION], w[at + _OFFSET]

    def release(self) -> None:
        """Hand the slot back to the sender."""
        self.tail += 1
        self.words[self.tail_at] = self.tail

    def resync(self) -> None:
        """Take up the counter from memory, where the native engine advanced it."""
        self.tail = self.words[self.tail_at]
