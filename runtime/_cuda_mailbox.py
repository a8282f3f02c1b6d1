"""Every local rank's mailbox in GPU memory: this rank's own allocation, its peers' through CUDA IPC.

A GPU rank's FIFOs live in device memory laid out exactly like its host mailbox
(:class:`synccl.runtime._shm.MailboxLayout`), so the kernel tables :func:`~synccl.runtime._native.encode`
writes for the host mailboxes move to the device by re-basing (:mod:`synccl.runtime._cuda_plan`).
Each rank allocates and zeroes its own (the FIFO counters start at 0 and only grow, across calls),
exports it with ``cudaIpcGetMemHandle``, the ranks exchange the handles through the job's
rendezvous, and each opens its local peers' ones. :meth:`DeviceMailboxes.close` closes the peers'
mappings and frees its own, so nothing outlives the communicator.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from synccl.exceptions import CommError
from synccl.runtime._cuda_plan import Region

if TYPE_CHECKING:
    from synccl.runtime._world import World

__all__ = ["DeviceMailboxes"]

log = logging.getLogger(__name__)


class DeviceMailboxes:
    """The device mailboxes of a job's local ranks, as mapped in this process (collective: every rank creates them).

    Parameters
    ----------
    world : World
        The rank's connections: its host mailboxes give the layout and the addresses to re-base.
    cupy : module
        CuPy, already imported; the current device is the one the mailbox is allocated on.

    Raises
    ------
    CommError
        If a peer's handle cannot be opened (another process on a GPU without peer access) or
        the rendezvous fails.
    """

    def __init__(self, world: World, cupy: Any) -> None:
        runtime = cupy.cuda.runtime
        self._runtime = runtime
        self.nbytes = world.layout.size
        self.rank = world.rank
        # Its own cudaMalloc: an IPC handle names a whole allocation, never a pool's sub-block.
        self.own = runtime.malloc(self.nbytes)
        self.opened: dict[int, int] = {}
        try:
            runtime.memset(self.own, 0, self.nbytes)
            # cudaMemset may return before it ran: peers must not see the mailbox before it is zero.
            runtime.deviceSynchronize()
            handle = bytes(runtime.ipcGetMemHandle(self.own))
            try:
                handles = world.rendezvous.allgather((os.getpid(), handle))
            except RuntimeError as err:  # torch's store and mpi4py raise RuntimeError subclasses
                raise CommError(f"rank {world.rank}: exchanging GPU mailbox handles failed: {err}", rank=world.rank) from None
            self.base = {world.rank: self.own}
            for r in world.local_ranks:
                if r == world.rank:
                    continue
                pid, peer_handle = handles[r]
                if pid == os.getpid():
                    raise CommError(f"rank {world.rank}: rank {r} runs in the same process; GPU ranks need a process each", rank=world.rank, peer=r)
                try:
                    self.opened[r] = self.base[r] = runtime.ipcOpenMemHandle(peer_handle, runtime.cudaIpcMemLazyEnablePeerAccess)
                except runtime.CUDARuntimeError as err:
                    raise CommError(f"rank {world.rank}: cannot map rank {r}'s GPU mailbox: {err}", rank=world.rank, peer=r) from None
        except BaseException:
            self.close()
            raise
        self.regions = tuple(Region(world.mailboxes[r].address, self.nbytes, base) for r, base in self.base.items())

    def close(self) -> None:
        """Close the peers' mappings and free this rank's mailbox (idempotent)."""
        for r, pointer in self.opened.items():
            try:
                self._runtime.ipcCloseMemHandle(pointer)
            except self._runtime.CUDARuntimeError as err:
                log.warning("rank %d: closing rank %d's GPU mailbox: %s", self.rank, r, err)
        self.opened.clear()
        if self.own:
            self._runtime.free(self.own)
            self.own = 0
