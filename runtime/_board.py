"""Each rank's status board: two pages at the start of its mailbox that its local peers read.

A board says who the rank is (``pid``), how far it got (``calls completed``, whether it closed
or exited), why it failed if it did (the failure record names the rank that failed *first*,
with the call number, a ``CLOCK_MONOTONIC`` time stamp and a short reason), and what its recent
calls were: a ring of call fingerprints (collective, count, dtype, op, root, in place, Program),
so that ranks that disagree on any argument of call ``k`` find out which argument, and how.

Every word is written by the owner only and read by peers. A fingerprint entry is a small
seqlock: the owner marks the entry busy, writes its fields, then writes the call number; a reader
reads the number, the fields, and the number again, and trusts the fields only if both numbers
are the call it asks about. On x86-64 stores become visible in program order and loads are not
reordered with other loads, so that is enough without fences.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from enum import IntEnum

from synccl.runtime._fingerprint import REFUSAL, Fingerprint

__all__ = ["ABSENT", "BOARD_BYTES", "DIFFERENT", "FAILED", "SAME", "Board", "Failure", "FailureKind", "now_ns"]

BOARD_BYTES = 2 * 4096

# Word indices (int64) of the first page.
_PID, _DONE, _STATE = 0, 1, 2
_FAIL_CULPRIT, _FAIL_SEQ, _FAIL_NS, _FAIL_KIND, _FAIL_LEN = 8, 9, 10, 11, 12
_FAIL_TEXT_BYTE = 16 * 8  # the reason, UTF-8, up to _TEXT_BYTES
_TEXT_BYTES = 1024
_REFUSE_LEN = 13
_REFUSE_TEXT_BYTE = 2048  # why the rank refused a call (bad arguments), UTF-8
# The ring of fingerprints fills the second page.
_RING_WORD = 512
_RING = 64
_ENTRY_WORDS = 8
_FIELDS_BYTES = struct.calcsize("<7q")
_BUSY = -1

#: What :meth:`Board.compare` finds for a call.
SAME, ABSENT, DIFFERENT, FAILED = 0, 1, 2, 3



class FailureKind(IntEnum):
    """Why a rank stopped taking part."""

    ERROR = 1  # a synccl call failed on it (bad argument, mismatch, timeout, a peer's failure)
    DIED = 2  # its process vanished (seen by a peer)
    RAISED = 3  # an exception outside synccl ended the process


class _State(IntEnum):
    RUNNING = 0
    CLOSED = 1
    EXITED = 2


@dataclass(frozen=True, slots=True)
class Failure:
    """The first failure a board knows of: ``culprit`` failed in its call ``seq`` at ``time_ns``."""

    culprit: int
    seq: int
    time_ns: int
    kind: FailureKind
    reason: str


def _entry(seq: int) -> int:
    """Word index of the ring entry that holds call ``seq``'s fingerprint."""
    return _RING_WORD + (seq % _RING) * _ENTRY_WORDS


class Board:
    """One rank's board, over the word view ``words`` and byte view ``raw`` of its mailbox."""

    def __init__(self, words: memoryview, raw: memoryview) -> None:
        self.words = words
        self.raw = raw

    # -- written by the owner -------------------------------------------------------------------
    def start(self, pid: int) -> None:
        """Mark a fresh board for process ``pid``."""
        self.words[_PID] = pid
        self.words[_STATE] = _State.RUNNING

    def post(self, seq: int, fingerprint: Fingerprint) -> None:
        """Publish the fingerprint of call ``seq`` (before the call moves any data)."""
        at = _entry(seq)
        words = self.words
        words[at] = _BUSY
        self.raw[(at + 1) * 8 : (at + 1) * 8 + _FIELDS_BYTES] = fingerprint.packed
        words[at] = seq

    def refuse(self, seq: int, reason: str) -> None:
        """Post a refusal in place of call ``seq``'s fingerprint: this rank rejected its arguments.

        Unlike a failure this ends nothing: the rank may call ``seq`` again. Peers already in the
        call (which would wait for this rank forever) raise, naming it and ``reason``.
        """
        text = reason.encode("utf-8", "replace")[:_TEXT_BYTES]
        at = _entry(seq)
        words = self.words
        words[at] = _BUSY
        self.raw[_REFUSE_TEXT_BYTE : _REFUSE_TEXT_BYTE + len(text)] = text
        words[_REFUSE_LEN] = len(text)
        self.raw[(at + 1) * 8 : (at + 1) * 8 + _FIELDS_BYTES] = REFUSAL.packed
        words[at] = seq

    def complete(self, seq: int) -> None:
        """Record that calls up to ``seq`` finished on this rank."""
        self.words[_DONE] = seq

    def record_failure(self, failure: Failure) -> None:
        """Keep ``failure`` unless an earlier one is recorded already (the first failure wins)."""
        words = self.words
        if words[_FAIL_CULPRIT] and words[_FAIL_NS] <= failure.time_ns:
            return
        text = failure.reason.encode("utf-8", "replace")[:_TEXT_BYTES]
        self.raw[_FAIL_TEXT_BYTE : _FAIL_TEXT_BYTE + len(text)] = text
        words[_FAIL_LEN] = len(text)
        words[_FAIL_SEQ] = failure.seq
        words[_FAIL_NS] = failure.time_ns
        words[_FAIL_KIND] = failure.kind
        words[_FAIL_CULPRIT] = failure.culprit + 1  # last: readers key on it

    def leave(self, *, exited: bool) -> None:
        """Mark the board closed (``close()``) or exited (the process ends)."""
        self.words[_STATE] = _State.EXITED if exited else _State.CLOSED

    # -- read by peers --------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.words[_PID]

    @property
    def completed(self) -> int:
        """Calls this rank finished."""
        return self.words[_DONE]

    @property
    def left(self) -> str | None:
        """How the rank left (``"closed its communicator"``, ``"ended its process"``), or ``None``."""
        state = self.words[_STATE]
        if state == _State.RUNNING:
            return None
        return "closed its communicator" if state == _State.CLOSED else "ended its process"

    def compare(self, seq: int, fingerprint: Fingerprint) -> int:
        """:data:`SAME`, :data:`ABSENT` (not posted yet, or overwritten), :data:`DIFFERENT`, or
        :data:`FAILED` (a failure is recorded): the cheap check every call makes on every local peer.
        """
        words = self.words
        if words[_FAIL_CULPRIT]:
            return FAILED
        at = _entry(seq)
        if words[at] != seq:
            return ABSENT
        same = self.raw[(at + 1) * 8 : (at + 1) * 8 + _FIELDS_BYTES] == fingerprint.packed
        if words[at] != seq:  # rewritten while we read
            return ABSENT
        return SAME if same else DIFFERENT

    def failed(self) -> bool:
        """Whether a failure is recorded (one word: cheap enough for every call)."""
        return self.words[_FAIL_CULPRIT] != 0

    def failure(self) -> Failure | None:
        """The failure recorded on this board, if any."""
        words = self.words
        culprit = words[_FAIL_CULPRIT]
        if not culprit:
            return None
        length = min(max(words[_FAIL_LEN], 0), _TEXT_BYTES)
        reason = bytes(self.raw[_FAIL_TEXT_BYTE : _FAIL_TEXT_BYTE + length]).decode("utf-8", "replace")
        return Failure(culprit - 1, words[_FAIL_SEQ], words[_FAIL_NS], FailureKind(words[_FAIL_KIND]), reason)

    def refusal(self, seq: int) -> str | None:
        """Why the rank refused call ``seq``, if what it posted for ``seq`` is a refusal."""
        theirs = self.fingerprint(seq)
        if theirs is None or theirs.values != REFUSAL.values:
            return None
        length = min(max(self.words[_REFUSE_LEN], 0), _TEXT_BYTES)
        return bytes(self.raw[_REFUSE_TEXT_BYTE : _REFUSE_TEXT_BYTE + length]).decode("utf-8", "replace")

    def fingerprint(self, seq: int) -> Fingerprint | None:
        """The fingerprint of call ``seq``, or ``None`` if the rank has not posted it (or moved on)."""
        at = _entry(seq)
        words = self.words
        if words[at] != seq:
            return None
        values = struct.unpack_from("<7q", self.raw, (at + 1) * 8)
        if words[at] != seq:  # rewritten while we read
            return None
        return Fingerprint(values, "")  # type: ignore[arg-type]


def now_ns() -> int:
    """The system-wide monotonic clock that orders failures across processes of one machine."""
    return time.monotonic_ns()
