"""The symbolic proof of dispatch + combine: it passes on every routing and catches broken plans."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from synccl.moe import check_dispatch, plan_routing


def routings(seed: int, ranks: int, experts: int, kind: str, capacity: float | None):
    rng = np.random.default_rng(seed)
    idx = []
    for r in range(ranks):
        tokens = 0 if r == 1 else int(rng.integers(1, 40))  # rank 1 has no tokens
        scores = rng.random((tokens, experts))
        if kind == "zipf":
            scores /= (1 + np.arange(experts)) ** 1.2
        elif kind == "degenerate":
            scores[:, 0] = 2.0
        choice = np.argsort(-scores, axis=1)[:, :2].astype(np.int64)
        if tokens:
            choice[rng.random(tokens) < 0.1, 1] = -1
        idx.append(choice)
    return idx, [plan_routing(i, experts, ranks, capacity) for i in idx]


@pytest.mark.parametrize("kind", ["uniform", "zipf", "degenerate"])
@pytest.mark.parametrize("ranks, experts", [(2, 4), (3, 3), (4, 8)])
@pytest.mark.parametrize("capacity", [None, 1.0, 0.5])
def test_every_routing_is_proven(kind, ranks, experts, capacity):
    idx, plans = routings(ranks * 7 + experts, ranks, experts, kind, capacity)
    assert check_dispatch(idx, plans) == []
    if capacity is not None and kind == "degenerate":
        assert any(not p.kept.all() for p in plans if len(p.kept))  # the check covered dropped slots too


def test_a_row_sent_for_the_wrong_token_is_caught():
    idx, plans = routings(1, 2, 4, "uniform", None)
    plan = plans[0]
    swapped = plan.send_token.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    violations = check_dispatch(idx, [replace(plan, send_token=swapped), *plans[1:]])
    assert violations and all(v.kind == "moe" for v in violations)


def test_a_slot_sent_to_the_wrong_expert_is_caught():
    idx, plans = routings(2, 2, 4, "uniform", None)
    plan = plans[0]
    local = plan.send_local_idx.copy()
    row, slot = np.argwhere(local >= 0)[0]
    local[row, slot] = (local[row, slot] + 1) % 2
    violations = check_dispatch(idx, [replace(plan, send_local_idx=local), *plans[1:]])
    assert any("computes expert" in v.message for v in violations)


def test_a_dropped_slot_that_still_arrives_is_caught():
    idx, plans = routings(3, 2, 4, "uniform", None)
    plan = plans[0]
    kept = plan.kept.copy()
    kept[0, 0] = False  # the plan says dropped, but the row still carries it
    violations = check_dispatch(idx, [replace(plan, kept=kept), *plans[1:]])
    assert any("extra" in v.message and v.rank == 0 for v in violations)
