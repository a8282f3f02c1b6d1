"""MPI point-to-point between nodes, behind the same FIFO interface as shared memory.

The receiving end keeps ``slots`` receives posted into staging buffers, so a sender always
finds a matching receive and never blocks the other channels; the sending end copies a slice
into one of ``slots`` staging buffers and sends it with ``Isend``. MPI orders messages with the
same source, tag and communicator, and the tag is the lane, so the k-th send on a connection
meets the k-th receive. Each message starts with ``[nbytes, signature]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MpiSender", "MpiReceiver"]

_HEADER = 2  # int64 words: nbytes, signature


class MpiSender:
    """Sending end of ``(me -> peer, lane)`` over MPI."""

    def __init__(self, comm: Any, peer: int, lane: int, slots: int, slot_bytes: int) -> None:
        self.comm, self.peer, self.lane = comm, peer, lane
        self.buffers = [np.empty(_HEADER * 8 + slot_bytes, dtype=np.uint8) for _ in range(slots)]
        self.slot_arrays = [buf[_HEADER * 8 :] for buf in self.buffers]
        self.requests: list[Any] = [None] * slots
        self.head = 0

    def _free(self, k: int) -> bool:
        req = self.requests[k]
        if req is None:
            return True
        if req.Test():
            self.requests[k] = None
            return True
        return False

    def ready(self) -> bool:
        return self._free(self.head % len(self.buffers))

    def index(self) -> int:
        return self.head % len(self.buffers)

    def publish(self, nbytes: int, signature: int, kind: int = 0, region: int = 0, offset: int = 0) -> None:
        k = self.head % len(self.buffers)
        buf = self.buffers[k]
        buf[: _HEADER * 8].view(np.int64)[:] = (nbytes, signature)
        self.requests[k] = self.comm.Isend(buf[: _HEADER * 8 + nbytes], dest=self.peer, tag=self.lane)
        self.head += 1

    def drained(self) -> bool:
        return all(self._free(k) for k in range(len(self.buffers)))

    def close(self) -> None:
        for req in self.requests:
            if req is not None:
                req.Wait()


class MpiReceiver:
    """Receiving end of ``(peer -> me, lane)`` over MPI, with ``slots`` receives always posted."""

    def __init__(self, comm: Any, peer: int, lane: int, slots: int, slot_bytes: int) -> None:
        self.comm, self.peer, self.lane = comm, peer, lane
        self.buffers = [np.empty(_HEADER * 8 + slot_bytes, dtype=np.uint8) for _ in range(slots)]
        self.slot_arrays = [buf[_HEADER * 8 :] for buf in self.buffers]
        self.requests = [self.comm.Irecv(buf, source=peer, tag=lane) for buf in self.buffers]
        self.tail = 0
        self.arrived = False

    def ready(self) -> bool:
        if not self.arrived:
            self.arrived = bool(self.requests[self.tail % len(self.buffers)].Test())
        return self.arrived

    def index(self) -> int:
        return self.tail % len(self.buffers)

    def descriptor(self) -> tuple[int, int, int, int, int]:
        header = self.buffers[self.tail % len(self.buffers)][: _HEADER * 8].view(np.int64)
        return int(header[0]), int(header[1]), 0, 0, 0

    def release(self) -> None:
        k = self.tail % len(self.buffers)
        self.requests[k] = self.comm.Irecv(self.buffers[k], source=self.peer, tag=self.lane)
        self.tail += 1
        self.arrived = False

    def close(self) -> None:
        for req in self.requests:
            req.Cancel()
            req.Wait()
