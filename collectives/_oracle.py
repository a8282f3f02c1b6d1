"""What a collective must produce, computed directly with numpy -- the reference every result is checked against."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from synccl.collectives._spec import Collective, parse_collective
from synccl.exceptions import CollectiveError

__all__ = ["ReduceOp", "REDUCE_OPS", "BITWISE_OPS", "reduce_arrays", "expected_outputs"]

ReduceOp = Literal["sum", "prod", "min", "max", "avg", "band", "bor", "bxor"]
#: Elementwise combiners; ``avg`` combines as a sum and divides by the rank count at the end;
#: the bitwise ones apply to integers and bools.
REDUCE_OPS = {
    "sum": np.add,
    "prod": np.multiply,
    "min": np.minimum,
    "max": np.maximum,
    "avg": np.add,
    "band": np.bitwise_and,
    "bor": np.bitwise_or,
    "bxor": np.bitwise_xor,
}
BITWISE_OPS = frozenset({"band", "bor", "bxor"})


def reduce_arrays(arrays: Sequence[np.ndarray], op: ReduceOp = "sum") -> np.ndarray:
    """Reduce equally shaped arrays elementwise with ``op``, in rank order.

    >>> reduce_arrays([np.array([1, 5]), np.array([3, 2])], "max")
    array([3, 5])
    """
    if op not in REDUCE_OPS:
        raise CollectiveError(f"reduce: unknown op {op!r}; valid: {', '.join(REDUCE_OPS)}")
    acc = np.array(arrays[0], copy=True)
    for a in arrays[1:]:
        acc = REDUCE_OPS[op](acc, a)
    if op == "avg":
        acc = _divide(acc, len(arrays))
    return acc


def _divide(acc: np.ndarray, n: int) -> np.ndarray:
    return acc // n if np.issubdtype(acc.dtype, np.integer) else (acc / n).astype(acc.dtype)


def expected_outputs(
    collective: Collective | str,
    inputs: Sequence[np.ndarray],
    *,
    op: ReduceOp = "sum",
    root: int = 0,
) -> list[np.ndarray | None]:
    """Every rank's output for ``collective`` on 1-D ``inputs`` (``None`` where unconstrained).

    >>> [o.tolist() for o in expected_outputs("all_gather", [np.array([1]), np.array([2])])]
    [[1, 2], [1, 2]]
    >>> [o.tolist() for o in expected_outputs("reduce_scatter", [np.array([1, 2]), np.array([3, 4])])]
    [[4], [6]]
    """
    coll = parse_collective(collective)
    n = len(inputs)
    sizes = {len(a) for a in inputs}
    if len(sizes) != 1:
        raise CollectiveError(f"{coll.value}: every rank's input must have one size, got {sorted(sizes)}")
    size = sizes.pop()
    split = coll in (Collective.REDUCE_SCATTER, Collective.ALL_TO_ALL, Collective.SCATTER)
    if split and size % n:
        raise CollectiveError(f"{coll.value}: input size {size} is not divisible by {n} ranks")
    share = size // n if split else size

    def block(a: np.ndarray, r: int) -> np.ndarray:
        return a[r * share : (r + 1) * share]

    if coll is Collective.ALL_GATHER:
        return [np.concatenate(inputs) for _ in range(n)]
    if coll is Collective.ALL_REDUCE:
        total = reduce_arrays(inputs, op)
        return [total.copy() for _ in range(n)]
    if coll is Collective.REDUCE_SCATTER:
        total = reduce_arrays(inputs, op)
        return [block(total, r).copy() for r in range(n)]
    if coll is Collective.ALL_TO_ALL:
        return [np.concatenate([block(inputs[i], r) for i in range(n)]) for r in range(n)]
    if coll is Collective.BROADCAST:
        return [np.array(inputs[root], copy=True) for _ in range(n)]
    if coll is Collective.REDUCE:
        total = reduce_arrays(inputs, op)
        return [total if r == root else None for r in range(n)]
    if coll is Collective.GATHER:
        return [np.concatenate(inputs) if r == root else None for r in range(n)]
    return [block(inputs[root], r).copy() for r in range(n)]  # SCATTER
