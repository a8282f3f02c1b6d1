"""The simulator against closed forms, hand-built Programs and its error contract."""

from __future__ import annotations

import time

import pytest

from synccl.collectives import (
    Buffer,
    Channel,
    Collective,
    CollectiveSpec,
    Dependency,
    Instruction,
    Op,
    Program,
    RankProgram,
    Slice,
    library,
    verify,
)
from synccl.exceptions import CollectiveError, ProgramError, TopologyError
from synccl.sim import simulate
from synccl.topologies import TopologyBuilder

ALPHA = 2.0  # us
BW = 10.0  # GB/s
B = BW * 1e3  # bytes/us
IN = Buffer.INPUT
OUT = Buffer.OUTPUT


def ring_topology(n: int, *, bidirectional: bool = False, memory_bandwidth: float = 100.0, bandwidth: float = BW, latency: float = ALPHA):
    b = TopologyBuilder()
    for _ in range(n):
        b.add_rank(memory_bandwidth=memory_bandwidth)
    for i in range(n):
        b.add_link(i, (i + 1) % n, bandwidth=bandwidth, latency=latency, kind="nvlink", bidirectional=bidirectional)
    return b.build(f"ring:{n}")


def star_topology(n: int, *, bandwidth: float = BW, latency: float = ALPHA):
    b = TopologyBuilder()
    for _ in range(n):
        b.add_rank()
    b.add_switch("sw")
    for i in range(n):
        b.add_link(i, "sw", bandwidth=bandwidth, latency=latency, kind="nvswitch")
    return b.build(f"star:{n}")


def pair_topology():
    b = TopologyBuilder()
    b.add_rank()
    b.add_rank()
    b.add_link(0, 1, bandwidth=BW, latency=ALPHA, kind="nvlink")
    return b.build("pair")


def ring_all_reduce(n: int) -> Program:
    """Hand-built single-channel in-place ring allreduce, chunk_factor n."""
    ranks = []
    for r in range(n):
        ins = [Instruction(Op.SEND, src=Slice(IN, r))]
        ins += [Instruction(Op.RECV_REDUCE_SEND, src=Slice(IN, (r - s) % n)) for s in range(1, n - 1)]
        last = Slice(IN, (r + 1) % n)
        ins.append(Instruction(Op.RECV_REDUCE_COPY_SEND, src=last, dst=last))
        ins += [Instruction(Op.RECV_COPY_SEND, dst=Slice(IN, (r - t + 1) % n)) for t in range(1, n - 1)]
        ins.append(Instruction(Op.RECV, dst=Slice(IN, (r + 2) % n)))
        ranks.append(RankProgram(r, (Channel(0, (r + 1) % n, (r - 1) % n, tuple(ins)),)))
    return Program(f"hand_ring_ar_{n}", CollectiveSpec(Collective.ALL_REDUCE, n, chunk_factor=n, inplace=True), tuple(ranks))


def ring_all_gather(n: int) -> Program:
    """Hand-built single-channel in-place ring allgather."""
    ranks = []
    for r in range(n):
        ins = [Instruction(Op.SEND, src=Slice(IN, 0))]
        ins += [Instruction(Op.RECV_COPY_SEND, dst=Slice(OUT, (r - t) % n)) for t in range(1, n - 1)]
        ins.append(Instruction(Op.RECV, dst=Slice(OUT, (r + 1) % n)))
        ranks.append(RankProgram(r, (Channel(0, (r + 1) % n, (r - 1) % n, tuple(ins)),)))
    return Program(f"hand_ring_ag_{n}", CollectiveSpec(Collective.ALL_GATHER, n, inplace=True), tuple(ranks))


def broadcast_pair(chunks: int, *, channels: int) -> Program:
    """Rank 0 sends ``chunks`` chunks to rank 1, spread round-robin over ``channels`` lanes."""
    spec = CollectiveSpec(Collective.BROADCAST, 2, chunk_factor=chunks, inplace=True)
    send = [[] for _ in range(channels)]
    recv = [[] for _ in range(channels)]
    for c in range(chunks):
        send[c % channels].append(Instruction(Op.SEND, src=Slice(IN, c)))
        recv[c % channels].append(Instruction(Op.RECV, dst=Slice(IN, c)))
    r0 = RankProgram(0, tuple(Channel(k, 1, None, tuple(send[k]), lane=k) for k in range(channels)))
    r1 = RankProgram(1, tuple(Channel(k, None, 0, tuple(recv[k]), lane=k) for k in range(channels)))
    return Program(f"bcast_{chunks}x{channels}", spec, (r0, r1))


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# -- closed forms ---------------------------------------------------------------------------------


def test_single_send_is_alpha_plus_m_over_b():
    prog = broadcast_pair(1, channels=1)
    verify(prog)
    m = 3_000_000
    res = simulate(prog, pair_topology(), m)
    assert rel(res.time_us, ALPHA + m / B) < 1e-12
    assert res.messages == 1
    assert res.algbw_gbps == pytest.approx(m / res.time_us / 1e3)
    assert res.busbw_gbps == pytest.approx(res.algbw_gbps)  # broadcast factor 1


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_hand_ring_all_reduce_closed_form(n):
    prog = ring_all_reduce(n)
    verify(prog)
    m = 1 << 24
    res = simulate(prog, ring_topology(n), m, local_cost=False)
    expected = 2 * (n - 1) * ALPHA + 2 * (n - 1) / n * m / B
    assert rel(res.time_us, expected) < 1e-9
    assert res.busbw_gbps == pytest.approx(2 * (n - 1) / n * m / expected / 1e3, rel=1e-9)
    assert res.busbw_gbps < BW


@pytest.mark.parametrize("n", [3, 4, 8])
def test_ring_all_reduce_pays_its_reductions(n):
    """With local costs the n-1 reductions of the reduce-scatter lie on the critical path."""
    membw = 50.0
    m = 1 << 24
    res = simulate(ring_all_reduce(n), ring_topology(n, memory_bandwidth=membw), m)
    expected = 2 * (n - 1) * ALPHA + 2 * (n - 1) / n * m / B + (n - 1) / n * m / (membw * 1e3)
    assert rel(res.time_us, expected) < 1e-9


@pytest.mark.parametrize("n", [2, 4, 5, 8])
@pytest.mark.parametrize("channels", [1, 2])
def test_library_ring_all_reduce_closed_form(n, channels):
    prog = library.build("ring", "all_reduce", nranks=n, channels=channels)
    m = 3 << 22
    res = simulate(prog, ring_topology(n, memory_bandwidth=1e9), m)
    expected = 2 * (n - 1) * ALPHA + 2 * (n - 1) / n * m / B
    assert rel(res.time_us, expected) < 0.01
    assert rel(res.time_us, expected) < 1e-5  # memory is nearly free here


def test_library_bidirectional_ring_all_reduce_uses_both_directions():
    n, m = 6, 1 << 24
    prog = library.build("ring", "all_reduce", nranks=n, channels=2, bidirectional=True)
    res = simulate(prog, ring_topology(n, bidirectional=True), m, local_cost=False)
    assert rel(res.time_us, 2 * (n - 1) * ALPHA + 2 * (n - 1) / n * m / (2 * B)) < 1e-9


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_ring_all_gather_closed_form(n):
    prog = ring_all_gather(n)
    verify(prog)
    m = 5_000_000
    res = simulate(prog, ring_topology(n), m)
    assert rel(res.time_us, (n - 1) * (ALPHA + m / (n * B))) < 1e-9
    lib = simulate(library.build("ring", "all_gather", nranks=n, inplace=True), ring_topology(n), m)
    assert rel(lib.time_us, (n - 1) * (ALPHA + m / (n * B))) < 0.01


def test_two_flows_sharing_a_link_take_twice_as_long():
    m = 1_000_000
    alone = simulate(broadcast_pair(1, channels=1), pair_topology(), m)
    shared = simulate(broadcast_pair(2, channels=2), pair_topology(), 2 * m)
    assert rel(alone.time_us - ALPHA, m / B) < 1e-12
    assert rel(shared.time_us - ALPHA, 2 * (alone.time_us - ALPHA)) < 1e-12
    usage = {(u.src, u.dst): u for u in shared.link_usage}
    assert usage[0, 1].bytes == 2 * m
    assert usage[1, 0].bytes == 0
    assert rel(usage[0, 1].utilisation, (2 * m / B) / shared.time_us) < 1e-12


def test_max_min_fairness_three_flows_on_a_line():
    """A: 0->2 (1 chunk), B: 0->1 (1 chunk), C: 1->2 (4 chunks); links 0-1 at 10 GB/s, 1-2 at 20 GB/s.

    A and B split 0->1 (5 GB/s each), C takes the rest of 1->2 (15 GB/s). When A and B drain at
    m/5000 us, C has 1 chunk left and speeds up to 20 GB/s.
    """
    b = TopologyBuilder()
    for _ in range(3):
        b.add_rank()
    b.add_link(0, 1, bandwidth=10.0, latency=1.0, kind="nvlink")
    b.add_link(1, 2, bandwidth=20.0, latency=2.0, kind="nvlink")
    line = b.build("line:3")
    one, four = Slice(IN, 0), Slice(IN, 0, 4)
    prog = Program(
        "three_flows",
        CollectiveSpec(Collective.ALL_TO_ALL, 3, chunk_factor=2),
        (
            RankProgram(0, (Channel(0, 2, None, (Instruction(Op.SEND, src=one),)), Channel(1, 1, None, (Instruction(Op.SEND, src=one),)))),
            RankProgram(1, (Channel(0, None, 0, (Instruction(Op.RECV, dst=one),)), Channel(1, 2, None, (Instruction(Op.SEND, src=four),)))),
            RankProgram(2, (Channel(0, None, 0, (Instruction(Op.RECV, dst=one),)), Channel(1, None, 1, (Instruction(Op.RECV, dst=four),)))),
        ),
    )
    res = simulate(prog, line, 6_000_000)  # one chunk = 1e6 bytes
    assert res.rank_finish_us[0] == pytest.approx(200.0, rel=1e-12)  # A and B drain
    assert res.rank_finish_us[1] == pytest.approx(250.0, rel=1e-12)  # C drains at 200 + 1e6/2e4
    assert res.rank_finish_us[2] == pytest.approx(252.0, rel=1e-12)  # C arrives 2 us later
    assert res.time_us == pytest.approx(252.0, rel=1e-12)
    usage = {(u.src, u.dst): u.bytes for u in res.link_usage}
    assert usage[0, 1] == pytest.approx(2e6)
    assert usage[1, 2] == pytest.approx(5e6)


def test_route_through_a_switch_pays_both_links():
    n, m = 4, 4_000_000
    prog = library.build("direct", "broadcast", nranks=n)
    res = simulate(prog, star_topology(n), m, local_cost=False)
    # the root's uplink carries 3 copies of M
    assert rel(res.time_us, 2 * ALPHA + 3 * m / B) < 1e-9


def test_local_copies_share_memory_bandwidth():
    b = TopologyBuilder()
    b.add_rank(memory_bandwidth=10.0)
    solo = b.build("solo")
    spec = CollectiveSpec(Collective.ALL_TO_ALL, 1, chunk_factor=2)
    copy = [Instruction(Op.COPY, src=Slice(IN, k), dst=Slice(OUT, k)) for k in range(2)]
    parallel = Program("parallel", spec, (RankProgram(0, (Channel(0, None, None, (copy[0],)), Channel(1, None, None, (copy[1],)))),))
    serial = Program("serial", spec, (RankProgram(0, (Channel(0, None, None, tuple(copy)),)),))
    m = 1_000_000
    for prog in (parallel, serial):
        verify(prog)
        assert simulate(prog, solo, m).time_us == pytest.approx(m / 1e4, rel=1e-12)
        free = simulate(prog, solo, m, local_cost=False)
        assert free.time_us == 0.0
        assert free.algbw_gbps == float("inf")


def test_dependencies_order_channels():
    """Channel 1 waits for channel 0's copy, so the copy and the send do not overlap."""
    b = TopologyBuilder()
    b.add_rank(memory_bandwidth=10.0)
    b.add_rank()
    b.add_link(0, 1, bandwidth=BW, latency=ALPHA, kind="nvlink")
    spec = CollectiveSpec(Collective.BROADCAST, 2, inplace=True)
    x = Slice(IN, 0)
    scratch = Slice(Buffer.SCRATCH, 0)
    r0 = RankProgram(
        0,
        (
            Channel(0, None, None, (Instruction(Op.COPY, src=x, dst=scratch),)),
            Channel(1, 1, None, (Instruction(Op.SEND, src=scratch, deps=(Dependency(0, 0),)),)),
        ),
        scratch_chunks=1,
    )
    r1 = RankProgram(1, (Channel(0, None, 0, (Instruction(Op.RECV, dst=x),)),))
    prog = Program("dep", spec, (r0, r1))
    verify(prog)
    m = 1_000_000
    assert simulate(prog, b.build("pair"), m).time_us == pytest.approx(m / 1e4 + ALPHA + m / B, rel=1e-12)


def test_forwarding_through_another_rank():
    """Line 0-1-2: a message 0 -> 2 crosses rank 1's links and pays both latencies."""
    b = TopologyBuilder()
    for _ in range(3):
        b.add_rank()
    b.add_link(0, 1, bandwidth=BW, latency=1.0, kind="nvlink")
    b.add_link(1, 2, bandwidth=BW, latency=3.0, kind="nvlink")
    spec = CollectiveSpec(Collective.BROADCAST, 3, inplace=True)
    x = Slice(IN, 0)
    prog = Program(
        "far",
        spec,
        (
            RankProgram(0, (Channel(0, 2, None, (Instruction(Op.SEND, src=x),)),)),
            RankProgram(1, ()),
            RankProgram(2, (Channel(0, None, 0, (Instruction(Op.RECV, dst=x),)),)),
        ),
    )
    m = 1_000_000
    res = simulate(prog, b.build("line:3"), m)
    assert res.time_us == pytest.approx(4.0 + m / B, rel=1e-12)
    assert res.rank_finish_us[1] == 0.0


def test_link_usage_of_ring_all_reduce():
    n, m = 4, 1 << 20
    res = simulate(ring_all_reduce(n), ring_topology(n), m)
    assert len(res.link_usage) == n
    for usage in res.link_usage:
        assert usage.bytes == pytest.approx(2 * (n - 1) / n * m)
        assert 0 < usage.utilisation <= 1


def test_deterministic():
    prog = library.build("halving_doubling", "all_reduce", nranks=8)
    topo = star_topology(8)
    assert simulate(prog, topo, 12345678) == simulate(prog, topo, 12345678)


def test_large_program_is_fast():
    n = 32
    prog = library.build("ring", "all_reduce", nranks=n, channels=8)
    assert prog.num_instructions() > 15_000
    start = time.perf_counter()
    res = simulate(prog, ring_topology(n, memory_bandwidth=1e9), 1 << 28)
    assert time.perf_counter() - start < 5.0
    expected = 2 * (n - 1) * ALPHA + 2 * (n - 1) / n * (1 << 28) / B
    assert rel(res.time_us, expected) < 1e-3


# -- errors -------------------------------------------------------------------------------------


def test_rank_count_mismatch():
    with pytest.raises(TopologyError, match=r"4 ranks but topology 'ring:3' has 3"):
        simulate(ring_all_reduce(4), ring_topology(3), 1024)


def test_no_route_names_the_pair():
    b = TopologyBuilder()
    for _ in range(3):
        b.add_rank()
    b.add_link(0, 1, bandwidth=BW, latency=ALPHA, kind="nvlink")
    with pytest.raises(TopologyError, match=r"no route 1 -> 2 in topology 'broken'"):
        simulate(ring_all_gather(3), b.build("broken"), 1024)


@pytest.mark.parametrize("size", [0, -5, 1.5, True])
def test_bad_size(size):
    with pytest.raises(CollectiveError, match="size_bytes"):
        simulate(broadcast_pair(1, channels=1), pair_topology(), size)


def test_deadlock_is_reported():
    x = Slice(IN, 0)
    spec = CollectiveSpec(Collective.BROADCAST, 2, inplace=True)
    recv_first = (Instruction(Op.RECV, dst=x), Instruction(Op.SEND, src=x))
    prog = Program("deadlock", spec, tuple(RankProgram(r, (Channel(0, 1 - r, 1 - r, recv_first),)) for r in range(2)))
    with pytest.raises(ProgramError, match=r"stalls: rank 0 channel 0 instruction 0 waits for message #0 from rank 1"):
        simulate(prog, pair_topology(), 1024)


def test_unreceived_message_is_reported():
    x = Slice(IN, 0)
    spec = CollectiveSpec(Collective.BROADCAST, 2, inplace=True)
    prog = Program("lost", spec, (RankProgram(0, (Channel(0, 1, None, (Instruction(Op.SEND, src=x),)),)), RankProgram(1, ())))
    with pytest.raises(ProgramError, match="never received"):
        simulate(prog, pair_topology(), 1024)


def test_self_peer_is_rejected():
    x = Slice(IN, 0)
    spec = CollectiveSpec(Collective.BROADCAST, 2, inplace=True)
    prog = Program("self", spec, (RankProgram(0, (Channel(0, 0, None, (Instruction(Op.SEND, src=x),)),)), RankProgram(1, ())))
    with pytest.raises(ProgramError, match="peer 0"):
        simulate(prog, pair_topology(), 1024)


def test_two_channels_on_one_connection_are_rejected():
    x = Slice(IN, 0)
    spec = CollectiveSpec(Collective.BROADCAST, 2, inplace=True)
    send = (Instruction(Op.SEND, src=x),)
    prog = Program("twice", spec, (RankProgram(0, (Channel(0, 1, None, send), Channel(1, 1, None, send))), RankProgram(1, ())))
    with pytest.raises(ProgramError, match="a second channel to send with rank 1 on lane 0"):
        simulate(prog, pair_topology(), 1024)
