"""synccl: topology-aware collective communication.

Data flows one way: topology -> (synthesizer | DSL | imported XML) -> Program -> verify ->
simulate or run.

>>> import numpy as np, synccl
>>> with synccl.init() as comm:
...     comm.allreduce(np.ones(2)).tolist()
[1.0, 1.0]

Importing ``synccl`` loads nothing else: the entry points and the stage subpackages
(``synccl.topologies``, ``synccl.collectives``, ``synccl.synth``, ``synccl.sim``,
``synccl.runtime``, ``synccl.bench``) are imported on first use (PEP 562), so a script that only
draws a topology never loads the runtime, and one that only runs collectives never loads a solver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synccl.runtime import IN_PLACE, Communicator, init, load_xml

__version__ = "0.1.0"

__all__ = ["IN_PLACE", "Communicator", "init", "load_xml", "__version__"]

# Entry point -> the module that defines it; each is imported when first asked for.
_ENTRY_POINTS = {"IN_PLACE": "synccl.runtime", "Communicator": "synccl.runtime", "init": "synccl.runtime", "load_xml": "synccl.runtime"}
# Submodules reachable as attributes of the package without an explicit import.
_SUBMODULES = ("bench", "collectives", "exceptions", "runtime", "sim", "synth", "topologies", "units")


def __getattr__(name: str) -> Any:
    module = _ENTRY_POINTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"synccl.{name}")
    else:
        raise AttributeError(f"module 'synccl' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    dunders = {name for name in globals() if name.startswith("__")}
    return sorted(dunders | set(__all__) | set(_SUBMODULES))
