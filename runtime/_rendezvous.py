"""How ranks find each other: MPI under ``mpiexec``, torch's TCPStore under ``torchrun``.

synccl has no launcher of its own. :func:`detect` picks the engine from the environment:
MPI when a process manager set ``PMI_RANK``/``OMPI_COMM_WORLD_RANK``/``PMIX_RANK``; the
torchrun variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) otherwise; a
single rank when neither is present.
"""

from __future__ import annotations

import os
import pickle  # noqa: S403 - objects come from the job's own ranks, over its own store
from datetime import timedelta
from typing import Any, Protocol

from synccl.exceptions import CommError

__all__ = ["Rendezvous", "MpiRendezvous", "StoreRendezvous", "SingleRendezvous", "detect", "launched_by_mpi"]

_MPI_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


class Rendezvous(Protocol):
    """Out-of-band exchange among the ranks of a job."""

    rank: int
    size: int

    def allgather(self, obj: Any) -> list[Any]: ...

    def barrier(self) -> None: ...


def launched_by_mpi() -> bool:
    """Whether an MPI process manager started this process."""
    return any(v in os.environ for v in _MPI_VARS)


class MpiRendezvous:
    """Exchange over an MPI communicator (a duplicate of ``COMM_WORLD`` by default)."""

    def __init__(self, comm: Any = None) -> None:
        from mpi4py import MPI

        self.comm = (comm or MPI.COMM_WORLD).Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()

    def allgather(self, obj: Any) -> list[Any]:
        return self.comm.allgather(obj)

    def barrier(self) -> None:
        self.comm.Barrier()


class StoreRendezvous:
    """Exchange through a ``torch.distributed`` key-value store."""

    def __init__(self, store: Any, rank: int, size: int, *, prefix: str = "synccl") -> None:
        self.store = store
        self.rank = rank
        self.size = size
        self.prefix = prefix
        self._round = 0

    def allgather(self, obj: Any) -> list[Any]:
        self._round += 1
        key = f"{self.prefix}/{self._round}"
        self.store.set(f"{key}/{self.rank}", pickle.dumps(obj))
        return [pickle.loads(self.store.get(f"{key}/{r}")) for r in range(self.size)]  # noqa: S301

    def barrier(self) -> None:
        """Return once every rank has entered; the store's host (rank 0) only once every rank has left.

        Rank 0 runs the store (as torch does) and may end its process right after the barrier: the
        others must not be left mid-read of a store that is gone.
        """
        self.allgather(None)
        key = f"{self.prefix}/{self._round}/left"
        if self.rank != 0:
            self.store.set(f"{key}/{self.rank}", b"")
        else:
            self.store.wait([f"{key}/{r}" for r in range(1, self.size)])


class SingleRendezvous:
    """A job of one rank."""

    rank = 0
    size = 1

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        return None


def _torchrun_store(timeout_s: float) -> StoreRendezvous:
    from torch.distributed import TCPStore

    env = os.environ
    try:
        rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
        host, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
    except KeyError as err:
        raise CommError(f"init: torchrun-style launch needs {err.args[0]} in the environment") from None
    except ValueError as err:
        raise CommError(f"init: bad torchrun environment: {err}") from None
    # Under torchrun's agent the store already runs; otherwise rank 0 hosts it (as torch does).
    agent = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = TCPStore(host, port, size, is_master=(rank == 0 and not agent), timeout=timedelta(seconds=timeout_s))
    return StoreRendezvous(store, rank, size, prefix=f"synccl/{env.get('TORCHELASTIC_RUN_ID', 'job')}")


def detect(timeout_s: float) -> Rendezvous:
    """The rendezvous the environment describes (MPI, torchrun, or a single rank)."""
    if launched_by_mpi():
        return MpiRendezvous()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return _torchrun_store(timeout_s)
    return SingleRendezvous()
