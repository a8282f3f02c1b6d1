"""Max-min fairness by progressive filling."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synccl.exceptions import TopologyError
from synccl.sim import max_min_rates


def test_single_link_splits_evenly():
    assert max_min_rates([[0], [0], [0], [0]], [8.0]) == [2.0, 2.0, 2.0, 2.0]


def test_classic_three_flow_example():
    # link 0 (10) carries flows 0 and 1; link 1 (20) carries flows 1 and 2.
    assert max_min_rates([[0], [0, 1], [1]], [10.0, 20.0]) == [5.0, 5.0, 15.0]


def test_parking_lot():
    # one long flow over three links of capacity 1, one short flow on each link.
    rates = max_min_rates([[0, 1, 2], [0], [1], [2]], {0: 1.0, 1: 1.0, 2: 1.0})
    assert rates == [0.5, 0.5, 0.5, 0.5]


def test_unshared_links_are_independent():
    assert max_min_rates([[0], [1]], [3.0, 7.0]) == [3.0, 7.0]


def test_empty_route_and_unknown_link():
    with pytest.raises(TopologyError, match="flow 1 crosses no link"):
        max_min_rates([[0], []], [1.0])
    with pytest.raises(TopologyError, match="no capacity for link 5"):
        max_min_rates([[5]], {0: 1.0})


@st.composite
def problems(draw):
    nlinks = draw(st.integers(1, 6))
    caps = draw(st.lists(st.floats(0.5, 100.0), min_size=nlinks, max_size=nlinks))
    routes = draw(st.lists(st.lists(st.integers(0, nlinks - 1), min_size=1, max_size=nlinks, unique=True), min_size=1, max_size=10))
    return routes, caps


@given(problems())
def test_allocation_is_feasible_and_max_min_fair(problem):
    routes, caps = problem
    rates = max_min_rates(routes, caps)
    load = [0.0] * len(caps)
    for route, rate in zip(routes, rates, strict=True):
        assert rate > 0
        for link in route:
            load[link] += rate
    for link, cap in enumerate(caps):
        assert load[link] <= cap * (1 + 1e-9)
    # every flow has a bottleneck: a saturated link on which no flow is faster
    for route, rate in zip(routes, rates, strict=True):
        assert any(
            load[link] >= caps[link] * (1 - 1e-9) and all(r <= rate * (1 + 1e-9) for rt, r in zip(routes, rates, strict=True) if link in rt)
            for link in route
        )
