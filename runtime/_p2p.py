"""Point-to-point send and receive, on a lane of their own beside the collectives' lanes.

A message is cut into FIFO slots exactly like a collective's messages; the receiver checks that
the sender's total size matches its buffer.
"""

from __future__ import annotations

import numpy as np

from synccl.exceptions import CommError
from synccl.runtime._executor import Waiter
from synccl.runtime._world import World

__all__ = ["send", "recv"]


def _signature(nbytes: int) -> int:
    return (0x5EED_0000_0000_0000 | nbytes) & 0x7FFF_FFFF_FFFF_FFFF


def _pieces(nbytes: int, slot: int) -> list[tuple[int, int]]:
    return [(lo, min(nbytes, lo + slot)) for lo in range(0, nbytes, slot)] or [(0, 0)]


def send(world: World, data: np.ndarray, dst: int, *, timeout_s: float) -> None:
    """Send the bytes of contiguous ``data`` to rank ``dst``; returns once they are in the connection."""
    if not 0 <= dst < world.size or dst == world.rank:
        raise CommError(f"send: destination must be another rank in 0..{world.size - 1}, got {dst!r}", rank=world.rank, op="send")
    raw = memoryview(data.reshape(-1).view(np.uint8))
    sender = world.sender(dst, world.p2p_lane)
    signature = _signature(raw.nbytes)
    waiter = Waiter(world, timeout_s, lambda: (f"in send to rank {dst}: waiting for a free slot", dst), peer=dst)
    for lo, hi in _pieces(raw.nbytes, world.config.slice_bytes):
        while not sender.ready():
            waiter.wait()
        waiter.progressed()
        memoryview(sender.slot_arrays[sender.index()])[: hi - lo] = raw[lo:hi]
        sender.publish(hi - lo, signature)


def recv(world: World, data: np.ndarray, src: int, *, timeout_s: float) -> None:
    """Receive from rank ``src`` into contiguous ``data`` (the sizes must match)."""
    if not 0 <= src < world.size or src == world.rank:
        raise CommError(f"recv: source must be another rank in 0..{world.size - 1}, got {src!r}", rank=world.rank, op="recv")
    raw = memoryview(data.reshape(-1).view(np.uint8))
    receiver = world.receiver(src, world.p2p_lane)
    expected = _signature(raw.nbytes)
    waiter = Waiter(world, timeout_s, lambda: (f"in recv from rank {src}: waiting for its message", src), peer=src)
    for lo, hi in _pieces(raw.nbytes, world.config.slice_bytes):
        while not receiver.ready():
            waiter.wait()
        waiter.progressed()
        nbytes, signature, _, _, _ = receiver.descriptor()
        if signature != expected or nbytes != hi - lo:
            raise CommError(f"recv: rank {world.rank} expected {raw.nbytes} bytes from rank {src}, but the message differs in size", rank=world.rank, op="recv", peer=src)
        raw[lo:hi] = memoryview(receiver.slot_arrays[receiver.index()])[:nbytes]
        receiver.release()
