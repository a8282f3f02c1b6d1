"""The classic algorithm library, written in the DSL; every builder returns a verified Program.

>>> from synccl.collectives import library
>>> prog = library.build("ring", "all_reduce", 8, channels=2)
>>> [a.name for a in library.algorithms("all_reduce")][:2]
['double_binary_tree', 'halving_doubling']
"""

from synccl.collectives.library._alltoall import bruck_all_to_all, hierarchical_2d_all_to_all, pairwise_all_to_all
from synccl.collectives.library._direct import direct_all_gather, direct_broadcast, direct_reduce, one_shot_all_reduce, two_shot_all_reduce
from synccl.collectives.library._hierarchical import hierarchical_all_reduce
from synccl.collectives.library._recursive import halving_doubling_all_reduce, recursive_doubling_all_gather
from synccl.collectives.library._registry import AlgorithmInfo, algorithms, applicable, build, get, register
from synccl.collectives.library._ring import ring_all_gather, ring_all_reduce, ring_reduce_scatter
from synccl.collectives.library._rooted import binomial_gather, binomial_scatter, direct_gather, direct_scatter
from synccl.collectives.library._trees import (
    binomial_broadcast,
    binomial_reduce,
    binomial_tree,
    double_binary_tree_all_reduce,
    nccl_binary_tree,
)

__all__ = [
    "AlgorithmInfo",
    "algorithms",
    "applicable",
    "binomial_broadcast",
    "binomial_gather",
    "binomial_reduce",
    "binomial_scatter",
    "binomial_tree",
    "bruck_all_to_all",
    "build",
    "direct_all_gather",
    "direct_broadcast",
    "direct_gather",
    "direct_reduce",
    "direct_scatter",
    "double_binary_tree_all_reduce",
    "get",
    "halving_doubling_all_reduce",
    "hierarchical_2d_all_to_all",
    "hierarchical_all_reduce",
    "nccl_binary_tree",
    "one_shot_all_reduce",
    "pairwise_all_to_all",
    "recursive_doubling_all_gather",
    "register",
    "ring_all_gather",
    "ring_all_reduce",
    "ring_reduce_scatter",
    "two_shot_all_reduce",
]
