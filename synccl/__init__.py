"""synccl: topology-aware collective communication.

Data flows one way: topology -> (synthesizer | DSL | imported XML) -> Program -> verify ->
simulate or run.

>>> import numpy as np, synccl
>>> with synccl.init() as comm:
...     comm.allreduce(np.ones(2)).tolist()
[1.0, 1.0]
"""

from synccl.runtime import IN_PLACE, Communicator, init, load_xml

__version__ = "0.1.0"

__all__ = ["IN_PLACE", "Communicator", "init", "load_xml", "__version__"]
