"""Use synccl as a ``torch.distributed`` backend: ``import synccl.torch`` registers "synccl".

>>> import synccl.torch  # doctest: +SKIP
>>> import torch.distributed as dist  # doctest: +SKIP
>>> dist.init_process_group("synccl")  # doctest: +SKIP

Works under ``torchrun`` and under ``mpiexec``. Launched by MPI without torchrun's variables,
the import fills in ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the variables the process
manager set (:func:`environment_from_launcher`; no communication), and the first ``env://``
rendezvous -- ``init_process_group``'s default -- that finds ``MASTER_ADDR`` or ``MASTER_PORT``
missing agrees on them over MPI first (:func:`environment_from_mpi`: rank 0 picks a free port and
broadcasts it), so the usual env:// rendezvous finds the job. Importing the module never
communicates: MPI is only initialized by ``init_process_group``.
``dist.new_group(ranks)`` builds sub-groups with their own communicators.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

from synccl.runtime._rendezvous import launched_by_mpi
from synccl.runtime._torch_backend import SynccclProcessGroup, create_process_group, register

__all__ = ["SynccclProcessGroup", "create_process_group", "register", "environment_from_launcher", "environment_from_mpi"]

logger = logging.getLogger(__name__)

# Per process manager: the variables holding (rank, size, local rank, local size). The first whose
# rank and size are both set wins; the local ones may be missing.
_LAUNCHER_VARS = (
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),  # MPICH / Intel MPI (hydra)
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),  # Open MPI
)
_TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
_RENDEZVOUS_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def environment_from_launcher(environ: dict[str, str] | None = None) -> bool:
    """Set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` from the MPI launcher's variables.

    Reads what the process manager put in the environment (hydra's ``PMI_RANK``, ``PMI_SIZE``,
    ``MPI_LOCALRANKID``, ``MPI_LOCALNRANKS``; Open MPI's ``OMPI_COMM_WORLD_RANK``, ``_SIZE``,
    ``_LOCAL_RANK``, ``_LOCAL_SIZE``) without communicating. Variables already set are kept.

    Parameters
    ----------
    environ : dict, optional
        The environment to read and update; ``os.environ`` by default.

    Returns
    -------
    bool
        Whether a launcher's rank and size were found (PMIx alone gives no size: then
        :func:`environment_from_mpi` fills them at the rendezvous).

    Examples
    --------
    >>> env = {"PMI_RANK": "1", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1"}
    >>> environment_from_launcher(env)
    True
    >>> env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], "LOCAL_WORLD_SIZE" in env
    ('1', '4', '1', False)
    """
    env = os.environ if environ is None else environ
    for names in _LAUNCHER_VARS:
        if names[0] in env and names[1] in env:
            for torch_name, name in zip(_TORCH_VARS, names, strict=True):
                if name in env:
                    env.setdefault(torch_name, env[name])
            return True
    return False


def environment_from_mpi() -> None:
    """Set torch's rendezvous variables over MPI: rank 0 picks the store's address and port and broadcasts them.

    Sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, keeping any
    already set. Collective over ``MPI.COMM_WORLD``: every rank must call it (the first env://
    rendezvous under ``mpiexec`` does, when ``MASTER_ADDR`` or ``MASTER_PORT`` is missing).
    """
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    local = world.Split_type(MPI.COMM_TYPE_SHARED)
    try:
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
    finally:
        local.Free()


def _env_rendezvous_over_mpi(original: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """torch's env:// handler, preceded under ``mpiexec`` by :func:`environment_from_mpi` when a variable is missing."""

    def handler(url: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        if launched_by_mpi() and not all(os.environ.get(name) for name in _RENDEZVOUS_VARS):
            environment_from_mpi()
        return original(url, *args, **kwargs)

    handler.synccl_original = original  # type: ignore[attr-defined]
    return handler


def _hook_env_rendezvous() -> None:
    """Put :func:`_env_rendezvous_over_mpi` in front of torch's env:// handler (once).

    torch offers no public way to wrap a registered rendezvous scheme, so this replaces the entry
    of its handler table; a torch without that table gets the variables from MPI right away.
    """
    handlers = getattr(importlib.import_module("torch.distributed.rendezvous"), "_rendezvous_handlers", None)
    if not isinstance(handlers, dict) or "env" not in handlers:
        logger.warning("synccl.torch: cannot hook torch's env:// rendezvous; agreeing on MASTER_ADDR/MASTER_PORT over MPI now")
        environment_from_mpi()
        return
    if not hasattr(handlers["env"], "synccl_original"):
        handlers["env"] = _env_rendezvous_over_mpi(handlers["env"])


register()
if launched_by_mpi():
    environment_from_launcher()
    _hook_env_rendezvous()
