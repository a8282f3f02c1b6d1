"""A job's ranks wired together: node grouping, mailboxes, registered regions and connections.

Ranks on one node talk through shared memory; ranks on different nodes through MPI. A job can
declare several nodes on one machine (``local_size``), which exercises the multi-node path here.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import numpy as np

from synccl.exceptions import CommError
from synccl.runtime._config import RuntimeConfig
from synccl.runtime._mpi import MpiReceiver, MpiSender
from synccl.runtime._rendezvous import MpiRendezvous, Rendezvous
from synccl.runtime._shm import ABORT, PID, Mailbox, MailboxLayout, Segment, ShmReceiver, ShmSender, _alive, remove_stale_segments

__all__ = ["World"]


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
        self.layout = MailboxLayout(len(self.local_ranks), config.max_lanes, config.slots, config.slice_bytes)
        self.mailboxes = self._map_collectively(self.layout.size, kind="mailbox")
        self.mine = self.mailboxes[self.rank]
        self.mine.header[PID] = os.getpid()
        self.senders: dict[tuple[int, int], Any] = {}
        self.receivers: dict[tuple[int, int], Any] = {}
        self.regions: list[Segment] = []  # registered buffers of this rank
        self.region_bases: list[int] = []
        self.peer_regions: dict[tuple[int, int], np.ndarray] = {}
        self.broken: str | None = None

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
        return mapped[self.rank].array(np.uint8, 0, int(nbytes)) if nbytes else np.empty(0, np.uint8)

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

    # -- failures --------------------------------------------------------------------------------
    def check_peers(self, what: str) -> None:
        """Raise if a local peer died or reported a failure."""
        for r in self.local_ranks:
            if r == self.rank:
                continue
            if not _alive(self.pids[r]):
                raise CommError(f"rank {self.rank}: rank {r} (pid {self.pids[r]}) died {what}", rank=self.rank, peer=r)
            if self.mailboxes[r].header[ABORT]:
                raise CommError(f"rank {self.rank}: rank {r} failed {what}", rank=self.rank, peer=r)

    def abort(self, reason: str) -> None:
        """Tell the local peers this rank failed, and refuse further calls."""
        self.broken = reason
        self.mine.header[ABORT] = 1

    def close(self) -> None:
        """Finish outstanding MPI requests."""
        for end in (*self.senders.values(), *self.receivers.values()):
            close = getattr(end, "close", None)
            if close is not None:
                close()
        self.senders.clear()
        self.receivers.clear()
