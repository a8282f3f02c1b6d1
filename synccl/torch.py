"""Use synccl as a ``torch.distributed`` backend: ``import synccl.torch`` registers "synccl".

>>> import synccl.torch  # doctest: +SKIP
>>> import torch.distributed as dist  # doctest: +SKIP
>>> dist.init_process_group("synccl")  # doctest: +SKIP

Works under ``torchrun`` and under ``mpiexec`` (set ``MASTER_ADDR``/``MASTER_PORT``, or let
``init_process_group`` use its env:// rendezvous); ``dist.new_group(ranks)`` builds sub-groups
with their own communicators.
"""

from synccl.runtime._torch_backend import SynccclProcessGroup, create_process_group, register

__all__ = ["SynccclProcessGroup", "create_process_group", "register"]

register()
