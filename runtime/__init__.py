"""Runtimes that execute verified Programs.

The CPU runtime runs a Program on real processes: shared memory within a node (peers read
registered buffers in place), MPI between nodes, launched by ``mpiexec`` or ``torchrun``.
``run_reference`` interprets a Program in one process, as an oracle for tests.

>>> import numpy as np, synccl
>>> with synccl.init() as comm:
...     comm.allreduce(np.arange(3)).tolist()
[0, 1, 2]
"""

from synccl.runtime._comm import IN_PLACE, Communicator, init
from synccl.runtime._config import RuntimeConfig, from_environment
from synccl.runtime._interpreter import run_reference
from synccl.runtime._selection import load_xml, register_program, registered_programs, unregister_program
from synccl.runtime._shm import remove_stale_segments

__all__ = [
    "IN_PLACE",
    "Communicator",
    "RuntimeConfig",
    "from_environment",
    "init",
    "load_xml",
    "register_program",
    "registered_programs",
    "remove_stale_segments",
    "run_reference",
    "unregister_program",
]
