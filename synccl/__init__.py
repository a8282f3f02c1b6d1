"""synccl: topology-aware collective communication.

Data flows one way: topology -> (synthesizer | DSL | imported XML) -> Program -> verify ->
simulate or run.
"""

__version__ = "0.1.0"
