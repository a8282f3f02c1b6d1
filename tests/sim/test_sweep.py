"""Sweeps over sizes and comparisons of Programs."""

from __future__ import annotations

import pytest

from synccl.collectives import library
from synccl.exceptions import CollectiveError, ProgramError
from synccl.sim import busbw_factor, compare, simulate, size_range, sweep
from synccl.topologies import TopologyBuilder


def star(n: int):
    b = TopologyBuilder()
    for _ in range(n):
        b.add_rank()
    b.add_switch("sw")
    for i in range(n):
        b.add_link(i, "sw", bandwidth=20.0, latency=1.0, kind="nvswitch")
    return b.build(f"star:{n}")


def test_size_range_matches_nccl_tests():
    assert size_range(8, 128) == [8, 16, 32, 64, 128]
    assert size_range(1, 100, factor=10) == [1, 10, 100]
    assert size_range(5, 9) == [5]
    for bad in [(0, 8), (16, 8), (1.0, 8)]:
        with pytest.raises(CollectiveError, match="size_range"):
            size_range(*bad)
    with pytest.raises(CollectiveError, match="factor"):
        size_range(1, 8, factor=1)


def test_sweep_equals_simulate_per_size():
    prog = library.build("ring", "all_reduce", nranks=4)
    topo = star(4)
    sizes = size_range(1 << 10, 1 << 20, factor=4)
    results = sweep(prog, topo, sizes)
    assert [r.size_bytes for r in results] == sizes
    assert results == [simulate(prog, topo, s) for s in sizes]
    times = [r.time_us for r in results]
    assert times == sorted(times)
    busbw = [r.busbw_gbps for r in results]
    assert busbw == sorted(busbw)  # latency matters less as messages grow


def test_compare_labels_and_order():
    topo = star(8)
    progs = [library.build(name, "all_reduce", nranks=8) for name in ("ring", "two_shot", "one_shot")]
    out = compare(progs, topo, [1 << 12, 1 << 24])
    assert list(out) == [p.name for p in progs]
    # one-shot wins at small sizes on a switch, loses at large ones
    small = {name: res[0].time_us for name, res in out.items()}
    large = {name: res[1].time_us for name, res in out.items()}
    assert min(small, key=small.get) == progs[2].name
    assert max(large, key=large.get) == progs[2].name
    labelled = compare({"a": progs[0]}, topo, [1024])
    assert list(labelled) == ["a"]
    with pytest.raises(ProgramError, match="two programs are named"):
        compare([progs[0], progs[0]], topo, [1024])


def test_busbw_factors():
    assert busbw_factor("all_reduce", 8) == pytest.approx(1.75)
    for name in ("all_gather", "reduce_scatter", "all_to_all", "gather", "scatter"):
        assert busbw_factor(name, 8) == pytest.approx(0.875)
    assert busbw_factor("reduce", 8) == 1.0
    with pytest.raises(CollectiveError, match="nranks"):
        busbw_factor("all_reduce", 0)
