"""Runtimes that execute verified Programs.

Today: a single-process numpy interpreter used as a reference. The multi-process CPU runtime
(shared memory within a node, MPI between nodes) builds on the same Program semantics.
"""

from synccl.runtime._interpreter import run_reference

__all__ = ["run_reference"]
