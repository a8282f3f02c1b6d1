"""A job's ranks wired together: node grouping, mailboxes, registered regions and connections.

Ranks on one node talk through shared memory; ranks on different nodes through MPI. A job can
declare several nodes on one machine (``local_size``), which exercises the multi-node path here.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import weakref
from types import TracebackType
from typing import Any

import numpy as np

from synccl.exceptions import CommError
from synccl.runtime._board import ABSENT, FAILED, SAME, Failure, FailureKind, now_ns
from synccl.runtime._config import RuntimeConfig
from synccl.runtime._fingerprint import Fingerprint, describe_mismatch
from synccl.runtime._mpi import MpiReceiver, MpiSender
from synccl.runtime._rendezvous import MpiRendezvous, Rendezvous
from synccl.runtime._shm import Mailbox, MailboxLayout, Segment, ShmReceiver, ShmSender, _alive, remove_stale_segments

__all__ = ["World"]

log = logging.getLogger(__name__)

_FAILURE_TAG = 0x5EC0  # MPI tag of failure reports (collectives use tags 0..lanes-1)


class World:
    """Connections and shared memory of one rank in a job."""

    def __init__(self, rendezvous: Rendezvous, config: RuntimeConfig) -> None:
        self.rendezvous = rendezvous
        self.config = config
        self.rank = rendezvous.rank
        self.size = rendezvous.size
        remove_stale_segments()
        hosts = rendezvous.allgather((socket.gethostname(), os.getpid()))
        self.pids = [pid for _, pid in hosts]
        self.node_of = self._group(hosts)
        self.nnodes = len(set(self.node_of))
        if self.nnodes > 1 and not isinstance(rendezvous, MpiRendezvous):
            raise CommError(f"init: the job spans {self.nnodes} nodes; between nodes synccl uses MPI, so launch it with mpiexec")
        self.local_ranks = [r for r in range(self.size) if self.node_of[r] == self.node_of[self.rank]]
        sizes = {sum(1 for n in self.node_of if n == node) for node in set(self.node_of)}
        self.local_size = sizes.pop() if len(sizes) == 1 else len(self.local_ranks)
        self.local_index = {r: k for k, r in enumerate(self.local_ranks)}  # only ranks sharing memory with this one
        self.remote_ranks = [r for r in range(self.size) if r not in self.local_index]  # told of failures over MPI
        self._reports: list[Any] = []  # MPI requests of failure reports to remote ranks
        self.layout = MailboxLayout(len(self.local_ranks), config.max_lanes, config.slots, config.slice_bytes)
        self.mailboxes = self._map_collectively(self.layout.size, kind="mailbox")
        self.mine = self.mailboxes[self.rank]
        self.board = self.mine.board
        self.board.start(os.getpid())
        self.peer_boards = [(r, self.mailboxes[r].board) for r in self.local_ranks if r != self.rank]
        _watch_process_end(self)
        self.senders: dict[tuple[int, int], Any] = {}
        self.receivers: dict[tuple[int, int], Any] = {}
        self.regions: list[Segment] = []  # registered buffers of this rank
        self.region_bases: list[int] = []
        self.peer_regions: dict[tuple[int, int], np.ndarray] = {}
        # The same bases for the native engine: [local index of the peer][region] -> address.
        self.region_table = np.zeros((len(self.local_ranks), 8), dtype=np.int64)
        self.broken: str | None = None
        self.current_seq = 0  # the call in progress, or the last one
        self.current_fingerprint: Fingerprint | None = None
        self.refused_seq = 0  # the last call whose arguments this rank refused

    def _group(self, hosts: list[tuple[str, int]]) -> list[int]:
        """Node index of every rank: declared (``local_size``), MPI's shared-memory split, or host name."""
        if self.config.local_size is not None:
            if self.size % self.config.local_size:
                raise CommError(f"init: {self.size} ranks cannot be split into nodes of local_size={self.config.local_size}")
            return [r // self.config.local_size for r in range(self.size)]
        if isinstance(self.rendezvous, MpiRendezvous):
            from mpi4py import MPI

            local = self.rendezvous.comm.Split_type(MPI.COMM_TYPE_SHARED)
            leader = local.allreduce(self.rank, op=MPI.MIN)  # the node's lowest rank names it
            local.Free()
            leaders = self.rendezvous.allgather(leader)
            order: dict[int, int] = {}
            return [order.setdefault(x, len(order)) for x in leaders]
        names: dict[str, int] = {}
        return [names.setdefault(host, len(names)) for host, _ in hosts]

    def _map_collectively(self, nbytes: int, *, kind: str) -> dict[int, Any]:
        """Create a segment per rank, map the local peers' ones, then unlink (nothing outlives the job)."""
        own = Segment.create(nbytes)
        try:
            names = self.rendezvous.allgather(own.name)
            mapped: dict[int, Segment] = {}
            for r in self.local_ranks:
                mapped[r] = own if r == self.rank else Segment.attach(names[r], nbytes)
            self.rendezvous.barrier()
        finally:
            own.unlink()
        if kind == "mailbox":
            return {r: Mailbox(seg, self.layout) for r, seg in mapped.items()}
        return mapped

    # -- registered buffers ---------------------------------------------------------------
    def register(self, nbytes: int) -> np.ndarray:
        """Collectively allocate ``nbytes`` of shared memory per rank; return this rank's bytes."""
        sizes = self.rendezvous.allgather(int(nbytes))
        region = len(self.regions)
        mapped = self._map_collectively(max(sizes), kind="region")
        for r, seg in mapped.items():
            view = seg.array(np.uint8, 0, sizes[r]) if sizes[r] else np.empty(0, np.uint8)
            if r == self.rank:
                self.regions.append(seg)
                self.region_bases.append(view.__array_interface__["data"][0] if sizes[r] else 0)
            else:
                self.peer_regions[r, region] = view
                self._table_region(self.local_index[r], region, view)
        return mapped[self.rank].array(np.uint8, 0, int(nbytes)) if nbytes else np.empty(0, np.uint8)

    def _table_region(self, peer_index: int, region: int, view: np.ndarray) -> None:
        if region >= self.region_table.shape[1]:  # grow; launches read the table's address each time
            grown = np.zeros((self.region_table.shape[0], 2 * region), dtype=np.int64)
            grown[:, : self.region_table.shape[1]] = self.region_table
            self.region_table = grown
        self.region_table[peer_index, region] = view.__array_interface__["data"][0] if view.size else 0

    def locate(self, array: np.ndarray) -> tuple[int, int] | None:
        """``(region, offset)`` when ``array`` lies in one of this rank's registered regions."""
        if array.size == 0:
            return None
        start = array.__array_interface__["data"][0]
        end = start + array.nbytes
        for region, (seg, base) in enumerate(zip(self.regions, self.region_bases, strict=True)):
            if base <= start and end <= base + seg.size:
                return region, start - base
        return None

    def borrowed(self, peer: int, region: int, offset: int, nbytes: int) -> np.ndarray:
        """Bytes a local peer lent from its registered region."""
        return self.peer_regions[peer, region][offset : offset + nbytes]

    # -- connections -------------------------------------------------------------------------
    @property
    def p2p_lane(self) -> int:
        """The lane of point-to-point messages (the last one; collectives use the others)."""
        return self.config.max_lanes - 1

    def _check_lane(self, peer: int, lane: int) -> None:
        if not 0 <= lane < self.config.max_lanes:
            raise CommError(f"rank {self.rank}: lane {lane} towards rank {peer} exceeds SYNCCL_MAX_LANES={self.config.max_lanes}")

    def sender(self, peer: int, lane: int) -> Any:
        """The sending end of ``(rank -> peer, lane)``."""
        key = (peer, lane)
        if key not in self.senders:
            self._check_lane(peer, lane)
            if peer in self.local_index:
                self.senders[key] = ShmSender(self.mailboxes[peer], self.local_index[self.rank], lane)
            else:
                self.senders[key] = MpiSender(self.rendezvous.comm, peer, lane, self.config.slots, self.config.slice_bytes)
        return self.senders[key]

    def receiver(self, peer: int, lane: int) -> Any:
        """The receiving end of ``(peer -> rank, lane)``."""
        key = (peer, lane)
        if key not in self.receivers:
            self._check_lane(peer, lane)
            if peer in self.local_index:
                self.receivers[key] = ShmReceiver(self.mine, self.local_index[peer], lane)
            else:
                self.receivers[key] = MpiReceiver(self.rendezvous.comm, peer, lane, self.config.slots, self.config.slice_bytes)
        return self.receivers[key]

    # -- calls and failures ---------------------------------------------------------------------
    def begin_call(self, seq: int, fingerprint: Fingerprint | None, label: str, *, compare: bool) -> list[tuple[int, Any]]:
        """Publish call ``seq``'s fingerprint; raise if a peer failed (or, with ``compare``, disagrees).

        Reading a peer's fingerprint costs a cache miss per peer and call (the peer just wrote
        it), about a microsecond here: calls whose messages carry signatures from every kind of
        disagreement skip it (see ``_Call.compares``), and read the boards only to explain one.
        Returns the peers that had not posted the call yet, for :meth:`end_call` to check.
        ``fingerprint=None`` (calls not checked) still watches for failed peers.
        """
        self.current_seq = seq
        self.current_fingerprint = fingerprint
        if fingerprint is not None:
            self.board.post(seq, fingerprint)
            if compare:
                return self._compare(self.peer_boards, seq, fingerprint, label)
        for _, board in self.peer_boards:
            if board.failed():
                self._raise_first_failure(seq, f"in {label}")
        return []

    def end_call(self, seq: int, fingerprint: Fingerprint | None, label: str, pending: list[tuple[int, Any]]) -> None:
        """Compare with the peers that joined during the call, then record the call as done.

        (A peer that fails after this rank got all it needed does not make the result wrong.)
        """
        if pending:
            self._compare(pending, seq, fingerprint, label)
        self.board.complete(seq)

    def _compare(self, boards: list[tuple[int, Any]], seq: int, fingerprint: Fingerprint, label: str) -> list[tuple[int, Any]]:
        """Raise on a failed or disagreeing peer among ``boards``; return those that have not posted ``seq``."""
        absent = []
        for r, board in boards:
            state = board.compare(seq, fingerprint)
            if state == SAME:
                continue
            if state == ABSENT:
                absent.append((r, board))
            elif state == FAILED:
                self._raise_first_failure(seq, f"in {label}")
            else:
                refused = board.refusal(seq)
                if refused is not None:
                    if seq != self.refused_seq:  # a refusal this rank shares is no news
                        raise CommError(f"{label}: rank {r} refused this call: {refused}", rank=self.rank, op=label, peer=r)
                    continue
                theirs = board.fingerprint(seq)
                mismatch = describe_mismatch(fingerprint, theirs, self.rank, r) if theirs is not None else None
                if mismatch is not None:
                    raise CommError(f"{label}: {mismatch}", rank=self.rank, op=label, peer=r)
        return absent

    def explain_mismatch(self, peer: int) -> str:
        """Why ``peer``'s message does not belong to this rank's current call, as far as can be told."""
        seq, mine = self.current_seq, self.current_fingerprint
        if peer not in self.local_index or mine is None:
            return "the call fingerprint in its message differs (collective, count, dtype, op, root, in-place mode, Program, or the number of calls made)"
        theirs = self.mailboxes[peer].board.fingerprint(seq)
        if theirs is None:
            return f"rank {peer} is not in call #{seq} (the ranks made different numbers of calls)"
        return describe_mismatch(mine, theirs, self.rank, peer) or f"its message belongs to another call than #{seq} (the ranks made different numbers of calls)"

    def check_peers(self, what: str, seq: int | None = None, peer: int | None = None) -> None:
        """Raise if a local peer failed, died, or left with call ``seq`` unfinished (while stalled).

        ``seq=None`` (point-to-point) watches only ``peer``'s process and board.
        """
        self._raise_first_failure(seq, what)
        if self.remote_ranks:
            self._poll_remote(what)
        for r, board in self.peer_boards:
            if peer is not None and r != peer:
                continue
            if seq is not None and board.completed >= seq:
                continue  # it finished this call: whatever this rank waits for is not owed by it
            owed = board.completed + 1
            refused = board.refusal(owed) if owed != self.refused_seq else None
            if refused is not None:
                raise CommError(f"rank {self.rank}: rank {r} refused its call #{owed}: {refused}; noticed {what}", rank=self.rank, peer=r)
            how = board.left
            gone = how is not None or not _alive(self.pids[r])
            if gone:
                # A rank that fails records the first failure it knows of before it leaves, and it
                # may have done both since the check above: blame that failure, not its leaving.
                self._raise_first_failure(seq, what)
            if how is not None:
                raise CommError(f"rank {self.rank}: rank {r} left ({how}) after {board.completed} calls; noticed {what}", rank=self.rank, peer=r)
            if gone:
                raise CommError(f"rank {self.rank}: rank {r} (pid {self.pids[r]}) died {what}", rank=self.rank, peer=r)

    def _raise_first_failure(self, seq: int | None, what: str) -> None:
        failures = [(f, r) for r, board in self.peer_boards if board.failed() and (f := board.failure()) is not None and (seq is None or f.seq <= seq)]
        if not failures:
            return
        first, reporter = min(failures, key=lambda item: item[0].time_ns)
        raise CommError(f"rank {self.rank}: {describe_failure(first, reporter)}; noticed {what}", rank=self.rank, peer=first.culprit)

    def abort(self, reason: str, *, seq: int, culprit: int | None = None, kind: FailureKind = FailureKind.ERROR) -> None:
        """Record a failure for the local peers to see (the first one wins), and refuse further calls."""
        self.broken = self.broken or reason
        reason = reason.removeprefix(f"rank {self.rank}: ")
        self._record(Failure(self.rank if culprit is None else culprit, seq, now_ns(), kind, reason))

    def refuse(self, seq: int, reason: str) -> None:
        """Tell the local peers this rank rejected the arguments of call ``seq`` (it stays usable)."""
        self.refused_seq = seq
        self.board.refuse(seq, reason.removeprefix(f"rank {self.rank}: "))

    def _record(self, failure: Failure) -> None:
        """Put ``failure`` on this rank's board and, the first time, report it to the remote ranks."""
        first = not self.board.failed()
        self.board.record_failure(failure)
        if first and self.remote_ranks:
            comm = self.rendezvous.comm
            self._reports += [comm.isend(failure, dest=r, tag=_FAILURE_TAG) for r in self.remote_ranks]

    def _poll_remote(self, what: str) -> None:
        """Raise if a remote rank reported a failure (messages on their own tag, checked while stalled)."""
        from mpi4py import MPI

        comm = self.rendezvous.comm
        status = MPI.Status()
        if comm.Iprobe(source=MPI.ANY_SOURCE, tag=_FAILURE_TAG, status=status):
            reporter = status.Get_source()
            failure = comm.recv(source=reporter, tag=_FAILURE_TAG)
            self._record(failure)  # local peers learn it from this rank's board
            raise CommError(f"rank {self.rank}: {describe_failure(failure, reporter)}; noticed {what}", rank=self.rank, peer=failure.culprit)

    def fail_from(self, err: CommError, seq: int) -> None:
        """Record ``err``; when it reports a peer's recorded failure, pass on that first failure instead."""
        log.warning("rank %d: %s", self.rank, err)
        if self.board.failed():  # recorded already (e.g. a remote rank's report): keep the first
            self.broken = self.broken or str(err)
            return
        for _, board in self.peer_boards:
            recorded = board.failure()
            if recorded is not None and err.peer == recorded.culprit:
                self.broken = self.broken or str(err)
                self._record(recorded)
                return
        died = err.peer is not None and err.peer in self.local_index and not _alive(self.pids[err.peer])
        if died:
            self.broken = self.broken or str(err)
            self.abort(f"its process {self.pids[err.peer]} vanished", seq=seq, culprit=err.peer, kind=FailureKind.DIED)
        else:
            self.abort(str(err), seq=seq)

    def close(self) -> None:
        """Finish outstanding MPI requests and tell the local peers this rank has left."""
        self.board.leave(exited=False)
        _OPEN.discard(self)
        for request in self._reports:
            request.Test()  # small messages: sent eagerly; never wait on a rank that may be gone
        self._reports.clear()
        for end in (*self.senders.values(), *self.receivers.values()):
            close = getattr(end, "close", None)
            if close is not None:
                close()
        self.senders.clear()
        self.receivers.clear()


_PHRASES = {
    FailureKind.ERROR: "failed",
    FailureKind.DIED: "died",
    FailureKind.RAISED: "raised an exception outside synccl",
}


def describe_failure(failure: Failure, reporter: int) -> str:
    """``rank 1 died in its call #4 (reported by rank 0): reason``, for messages."""
    by = f" (reported by rank {reporter})" if reporter != failure.culprit else ""
    return f"rank {failure.culprit} {_PHRASES[failure.kind]} in its call #{failure.seq}{by}: {failure.reason}"


# -- the end of the process ----------------------------------------------------------------------
# A rank whose program raises, or ends with calls still owed, must not leave its peers waiting
# for the timeout (under mpiexec the process may linger in MPI's teardown): an uncaught exception
# is recorded as a failure, and every exit marks the board, before MPI finalizes.
_OPEN: weakref.WeakSet[World] = weakref.WeakSet()
_HOOKS: list[bool] = []


def _watch_process_end(world: World) -> None:
    _OPEN.add(world)
    # Marks the board when the World is collected without close(), or at exit at the latest.
    weakref.finalize(world, world.board.leave, exited=True)
    if _HOOKS:
        return
    _HOOKS.append(True)
    previous = sys.excepthook

    def excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if not hasattr(sys, "ps1"):  # at an interactive prompt the process goes on
            _record_raise(kind, value)
        previous(kind, value, tb)

    sys.excepthook = excepthook


def _record_raise(kind: type[BaseException], value: BaseException | None) -> None:
    reason = f"{kind.__name__}: {value}" if value is not None and str(value) else kind.__name__
    for world in list(_OPEN):
        if world.broken is None:
            world.abort(reason, seq=world.board.completed + 1, kind=FailureKind.RAISED)
