"""The MoE cost model: the exchange time, the pipeline, and the choice of its depth."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from synccl.exceptions import CollectiveError
from synccl.sim import MoeShape, choose_moe_degree, exchange_us, moe_layer_us
from synccl.sim._moe import _pipeline, uniform_traffic
from synccl.topologies import get_topology


def test_one_flow_takes_latency_plus_bytes_over_bandwidth():
    topo = get_topology("ring:2")
    link = topo.link(0, 1)
    traffic = np.array([[0.0, 1e6], [0.0, 0.0]])
    assert exchange_us(topo, traffic) == pytest.approx(link.latency + 1e6 / (link.bandwidth * 1e3))


def test_an_all_to_all_on_a_switch_is_bound_by_each_ranks_port():
    topo = get_topology("dgx-h100")
    traffic = uniform_traffic(MoeShape(4096, 7168, 2048, 8, 256), 8, 4096)
    per_rank = traffic[0].sum()
    out_bytes_per_us = sum(link.bandwidth for link in topo.out_links(0)) * 1e3
    nvlink = topo.link(0, "nvswitch").bandwidth * 1e3
    assert per_rank / out_bytes_per_us <= exchange_us(topo, traffic) <= 1.01 * per_rank / nvlink + 10


def test_the_pipeline_overlaps_exchanges_with_experts():
    assert _pipeline(1, 10.0, 30.0) == 50.0  # dispatch, experts, combine
    # Two parts: D1 | D2 while E1 | E2 while C1 | C2 -- 10 + 30 + 30 + 10.
    assert _pipeline(2, 5.0, 15.0) == pytest.approx(5 + 15 + 15 + 5)
    for parts, comm, compute in itertools.product((1, 2, 3, 8), (1.0, 7.0), (2.0, 9.0)):
        t = _pipeline(parts, comm, compute)
        assert t >= max(2 * parts * comm, parts * compute + 2 * comm) - 1e-9  # the network and device bounds
        assert t <= parts * (2 * comm + compute) + 1e-9  # never worse than running the parts one after another


@pytest.mark.parametrize("tokens, hidden, ffn, k, experts, topology", list(itertools.product((256, 4096), (1024, 4096), (2048, 14336), (1, 2), (8, 16), ("dgx-h100", "hgx-h800"))))
def test_the_chosen_depth_is_the_best_and_never_worse_than_one_part(tokens, hidden, ffn, k, experts, topology):
    topo = get_topology(topology)
    shape = MoeShape(tokens, hidden, ffn, k, experts)
    chosen = choose_moe_degree(shape, topo)
    brute = {d: moe_layer_us(shape, topo, d) for d in range(1, 17)}
    best = min(brute.values())
    assert abs(chosen - min(d for d, t in brute.items() if t == best)) <= 1
    assert brute[chosen] <= brute[1] + 1e-9


def test_a_large_per_part_overhead_keeps_one_part():
    shape = MoeShape(512, 1024, 2048, 2, 8)
    assert choose_moe_degree(shape, get_topology("dgx-h100"), overhead_us=10_000.0) == 1


def test_bad_input_is_one_line():
    with pytest.raises(CollectiveError, match="degree must be an integer >= 1"):
        moe_layer_us(MoeShape(8, 8, 8, 1, 8), get_topology("dgx-h100"), 0)
    with pytest.raises(CollectiveError, match="traffic must be a 8 x 8 matrix"):
        exchange_us(get_topology("dgx-h100"), np.ones((2, 2)))
    with pytest.raises(CollectiveError, match="names no device type"):
        moe_layer_us(MoeShape(8, 8, 8, 1, 4), get_topology("ring:4"), 1)
