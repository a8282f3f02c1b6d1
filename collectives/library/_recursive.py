"""Recursive doubling allgather and recursive halving-doubling (Rabenseifner) allreduce.

Both exchange with partner ``r XOR 2^k``. Allgather needs a power-of-two rank count. The
allreduce takes any count the way MPICH does: with ``p`` the largest power of two not above
``n`` and ``rem = n - p``, ranks ``0 .. 2*rem-1`` first fold in pairs (each even rank hands its
data to the odd rank after it), the remaining ``p`` ranks run halving-doubling, and the folded
ranks get the result back at the end.
"""

from __future__ import annotations

from synccl.collectives._dsl import chunk, program
from synccl.collectives._program import Program
from synccl.collectives._spec import Buffer, CollectiveSpec
from synccl.collectives.library._registry import power_of_two, register

__all__ = ["recursive_doubling_all_gather", "halving_doubling_all_reduce"]


@register("recursive_doubling", "all_gather", "log2 n steps exchanging doubling blocks; power-of-two n", support=power_of_two)
def recursive_doubling_all_gather(nranks: int, *, inplace: bool = False) -> Program:
    """Recursive-doubling allgather: at step k, exchange the 2^k blocks gathered so far with ``r ^ 2^k``.

    >>> recursive_doubling_all_gather(8).num_instructions()  # 8 local copies + 3 exchanges of 2 x 8 instructions
    56
    """
    n = nranks
    spec = CollectiveSpec("all_gather", n, inplace=inplace)
    with program(f"recursive_doubling_all_gather_n{n}", spec) as p:
        if not inplace:
            for r in range(n):
                chunk(r, Buffer.INPUT, 0).copy(r, Buffer.OUTPUT, r)
        dist = 1
        while dist < n:
            for r in range(n):
                base = r & ~(dist - 1)
                chunk(r, Buffer.OUTPUT, base, dist).copy(r ^ dist, Buffer.OUTPUT, base)
            dist *= 2
    return p.program


def _fold_layout(n: int) -> tuple[int, int, list[int]]:
    """``(p, rem, actives)``: the power of two, the folded pairs, and the ranks that stay active."""
    p = 1 << (n.bit_length() - 1)
    rem = n - p
    actives = [r for r in range(n) if r >= 2 * rem or r % 2 == 1]
    return p, rem, actives


@register("halving_doubling", "all_reduce", "Rabenseifner: recursive-halving reduce-scatter + recursive-doubling allgather; any n")
def halving_doubling_all_reduce(nranks: int, *, inplace: bool = False) -> Program:
    """Recursive halving-doubling allreduce (Rabenseifner), any rank count.

    Sends ``2(p-1)/p`` of the buffer per active rank in ``2 log2 p`` steps.

    >>> halving_doubling_all_reduce(6).spec.chunk_factor
    4
    """
    n = nranks
    pw, rem, actives = _fold_layout(n)
    spec = CollectiveSpec("all_reduce", n, chunk_factor=pw, inplace=inplace)
    with program(f"halving_doubling_all_reduce_n{n}", spec) as p:
        out = {r: False for r in range(n)}  # whether rank r's partial already lives in its output

        # Fold: even ranks below 2*rem hand everything to the next rank.
        for r in range(0, 2 * rem, 2):
            chunk(r + 1, Buffer.INPUT, 0, pw).reduce(chunk(r, Buffer.INPUT, 0, pw), into=chunk(r + 1, Buffer.OUTPUT, 0, pw))
            out[r + 1] = True
        # Recursive halving among the active ranks (virtual ranks 0..p-1).
        lo = {v: 0 for v in range(pw)}
        size = pw
        dist = pw // 2
        while dist >= 1:
            size //= 2
            # Where each partner's partial lives is decided by the state at the start of the step.
            moves = []
            for v in range(pw):
                partner = v ^ dist
                keep_low = v < partner
                mine_lo = lo[v] if keep_low else lo[v] + size
                moves.append((v, partner, mine_lo))
            snapshot = dict(out)
            for v, partner, mine_lo in moves:
                rank, peer = actives[v], actives[partner]
                src = p.ref(peer, Buffer.OUTPUT if snapshot[peer] else Buffer.INPUT, mine_lo, size)
                mine = p.ref(rank, Buffer.OUTPUT if snapshot[rank] else Buffer.INPUT, mine_lo, size)
                mine.reduce(src, into=p.ref(rank, Buffer.OUTPUT, mine_lo, size))
            for v, _, mine_lo in moves:
                lo[v] = mine_lo
                out[actives[v]] = True
            dist //= 2
        # Recursive doubling: exchange the reduced blocks back out.
        dist = 1
        while dist < pw:
            sends = [(v, v ^ dist, lo[v], size) for v in range(pw)]
            for v, partner, block, sz in sends:
                p.ref(actives[v], Buffer.OUTPUT, block, sz).copy(actives[partner], Buffer.OUTPUT, block)
            for v in range(pw):
                lo[v] = min(lo[v], lo[v ^ dist])
            size *= 2
            dist *= 2
        # Unfold: the folded ranks get the result.
        for r in range(0, 2 * rem, 2):
            p.ref(r + 1, Buffer.OUTPUT, 0, pw).copy(r, Buffer.OUTPUT, 0)
        if n == 1 and not inplace:
            chunk(0, Buffer.INPUT, 0, pw).copy(0, Buffer.OUTPUT, 0)
    return p.program
