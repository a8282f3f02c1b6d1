"""Sets of contributions as bitmasks: the symbolic values the verifier computes with.

Contribution ``(rank, index)`` gets the id ``index * nranks + rank``, so the set a reduction
builds -- the same input index from a run of ranks -- is a run of consecutive ids. A set is the
pair ``(low, mask)``: the smallest id, and a mask whose bit ``j`` says whether id ``low + j``
is in the set (bit 0 always is, which makes the form canonical: equal sets are equal pairs).
All 1,024 contributions of a 1,024-rank reduction take 128 bytes, where a frozenset of tuples
took 70 KB; union and intersection are a shift and one big-integer operation.
"""

from __future__ import annotations

from synccl.collectives._spec import Contribution

__all__ = ["Bits", "single", "of_ranks", "union", "common", "members"]

#: ``(lowest id, mask)``: a non-empty set of contributions (module docstring).
Bits = tuple[int, int]


def single(rank: int, index: int, nranks: int) -> Bits:
    """The set holding only contribution ``(rank, index)``.

    >>> single(2, 1, nranks=4)
    (6, 1)
    """
    return index * nranks + rank, 1


def of_ranks(ranks: range, index: int, nranks: int) -> Bits:
    """The contributions ``(r, index)`` of every rank ``r`` in ``ranks`` (a non-empty range of step 1).

    >>> members(of_ranks(range(4), 1, nranks=4), nranks=4)
    [(0, 1), (1, 1), (2, 1), (3, 1)]
    """
    return index * nranks + ranks.start, (1 << len(ranks)) - 1


def union(a: Bits, b: Bits) -> Bits:
    """``a | b``.

    >>> union(single(0, 0, 2), single(1, 0, 2)) == of_ranks(range(2), 0, 2)
    True
    """
    low_a, mask_a = a
    low_b, mask_b = b
    if low_a <= low_b:
        return low_a, mask_a | (mask_b << (low_b - low_a))
    return low_b, mask_b | (mask_a << (low_a - low_b))


def common(a: Bits, b: Bits) -> Bits | None:
    """``a & b``, or ``None`` when they share nothing.

    >>> common(of_ranks(range(3), 0, 4), of_ranks(range(2, 4), 0, 4))
    (2, 1)
    """
    low_a, mask_a = a
    low_b, mask_b = b
    if low_a <= low_b:
        low, mask = low_b, (mask_a >> (low_b - low_a)) & mask_b
    else:
        low, mask = low_a, (mask_b >> (low_a - low_b)) & mask_a
    if not mask:
        return None
    shift = (mask & -mask).bit_length() - 1
    return low + shift, mask >> shift


def members(value: Bits, nranks: int) -> list[Contribution]:
    """The contributions of ``value`` as ``(rank, index)`` pairs, sorted.

    >>> members(union(single(1, 0, 3), single(0, 2, 3)), nranks=3)
    [(0, 2), (1, 0)]
    """
    low, mask = value
    out = []
    for j, bit in enumerate(reversed(bin(mask)[2:])):
        if bit == "1":
            index, rank = divmod(low + j, nranks)
            out.append((rank, index))
    return sorted(out)
