"""Proof that a dispatch and its combine bring every token to its experts and back: symbolic, over all ranks' plans.

The transport is the all-to-all-v Program, verified like every Program (each pair's block
arrives whole, in order). What remains is the routing: this module replays a dispatch and its
combine over *symbolic* rows -- a row is the token it copies, ``(rank, token)``; an expert's
output for slot ``s`` of a row is the term ``(rank, token, s)``, standing for
``w[token, s] * expert(x[token])`` with the weight as part of the contribution -- and checks
the postcondition of an MoE layer: every token's combined output is exactly the sum of the terms
of its kept slots, each once, computed by the expert the slot names, on the rank that holds it.

It reads only the plans (:class:`~synccl.moe._routing.Routing`) and the packing order
:func:`~synccl.moe.dispatch` uses (sources in rank order, each source's rows as sent), so a
change to either that breaks the layer fails here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from synccl.exceptions import Violation
from synccl.moe._routing import Routing

__all__ = ["check_dispatch"]

Term = tuple[int, int, int]  # (source rank, token, slot)


def check_dispatch(topk_idx: Sequence[np.ndarray], routings: Sequence[Routing]) -> list[Violation]:
    """Every way in which dispatching with ``routings`` and combining back misroutes a token (empty: proven).

    ``topk_idx[r]`` and ``routings[r]`` are rank ``r``'s global expert choices and plan.

    Examples
    --------
    >>> from synccl.moe import plan_routing
    >>> idx = [np.array([[0, 3], [1, 2]]), np.array([[2, -1]])]
    >>> check_dispatch(idx, [plan_routing(i, 4, 2) for i in idx])
    []
    """
    p = len(routings)
    out: list[Violation] = []
    per_rank = routings[0].num_experts // p
    # Dispatch: each destination receives its rows source by source, in the order sent.
    received: list[list[tuple[tuple[int, int], np.ndarray]]] = [[] for _ in range(p)]
    for src, plan in enumerate(routings):
        at = 0
        for dst, count in enumerate(plan.send_counts.tolist()):
            for row in range(at, at + count):
                received[dst].append(((src, int(plan.send_token[row])), plan.send_local_idx[row]))
            at += count
    # Experts: a row's output is the sum of the terms of its local slots.
    outputs: list[list[Counter[Term]]] = []
    for dst in range(p):
        rows = []
        for (src, token), slots in received[dst]:
            terms: Counter[Term] = Counter()
            for slot, local in enumerate(slots.tolist()):
                if local < 0:
                    continue
                expert = dst * per_rank + local
                if topk_idx[src][token, slot] != expert:
                    out.append(Violation("moe", f"slot {slot} of token {token} computes expert {expert}, but it chose {int(topk_idx[src][token, slot])}", rank=dst, chunk=token))
                terms[(src, token, slot)] += 1
            rows.append(terms)
        outputs.append(rows)
    # Combine: rows go back to their sources, source block by source block, and add up in the token's slot.
    for src, plan in enumerate(routings):
        combined: dict[int, Counter[Term]] = {}
        at = 0
        for dst, count in enumerate(plan.send_counts.tolist()):
            # dst returns its rows from src in the order it received them: src's block of its received rows.
            start = sum(1 for (s, _), _ in received[dst] if s < src)
            for k in range(count):
                token = int(plan.send_token[at + k])
                combined.setdefault(token, Counter()).update(outputs[dst][start + k])
            at += count
        tokens = len(topk_idx[src])
        for token in range(tokens):
            want = Counter({(src, token, s): 1 for s in range(topk_idx[src].shape[1]) if plan.kept[token, s]})
            got = combined.get(token, Counter())
            if got != want:
                missing = sorted(want - got)
                extra = sorted(got - want)
                out.append(Violation("moe", f"token {token} combines {dict(got)} instead of its kept slots: missing {missing}, extra {extra}", rank=src, chunk=token))
    return out
