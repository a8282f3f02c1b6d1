"""Use synccl as a ``torch.distributed`` backend: ``import synccl.torch`` registers "synccl".

>>> import synccl.torch  # doctest: +SKIP
>>> import torch.distributed as dist  # doctest: +SKIP
>>> dist.init_process_group("synccl")  # doctest: +SKIP

Works under ``torchrun`` and under ``mpiexec``: launched by MPI without torchrun's variables,
the import fills in ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` from MPI, so ``init_process_group``'s usual env:// rendezvous finds the job.
``dist.new_group(ranks)`` builds sub-groups with their own communicators.
"""

import os
import socket

from synccl.runtime._rendezvous import launched_by_mpi
from synccl.runtime._torch_backend import SynccclProcessGroup, create_process_group, register

__all__ = ["SynccclProcessGroup", "create_process_group", "register", "environment_from_mpi"]


def environment_from_mpi() -> None:
    """Set torch's rendezvous variables from MPI (rank 0 picks the store's address and port)."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    local = world.Split_type(MPI.COMM_TYPE_SHARED)
    address = None
    if world.Get_rank() == 0:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        single_host = local.Get_size() == world.Get_size()
        address = ("127.0.0.1" if single_host else socket.gethostname(), port)
    host, port = world.bcast(address, root=0)
    os.environ.setdefault("RANK", str(world.Get_rank()))
    os.environ.setdefault("WORLD_SIZE", str(world.Get_size()))
    os.environ.setdefault("LOCAL_RANK", str(local.Get_rank()))
    os.environ.setdefault("MASTER_ADDR", host)
    os.environ.setdefault("MASTER_PORT", str(port))
    local.Free()


register()
if launched_by_mpi() and "RANK" not in os.environ:
    environment_from_mpi()
