"""Every library algorithm verifies and computes the numpy oracle's result for every supported rank count."""

import pytest

from synccl.collectives import Collective, library
from synccl.exceptions import CollectiveError

RANKS = range(1, 17)


def _cases():
    for info in library.algorithms():
        if info.needs_local_size:
            continue  # node-aware algorithms are covered with explicit machine shapes
        for n in RANKS:
            if info.unsupported_reason(n) is None:
                yield pytest.param(info.name, info.collective.value, n, id=f"{info.collective.value}-{info.name}-{n}")


@pytest.mark.parametrize(("name", "collective", "n"), list(_cases()))
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "in"])
def test_algorithm_is_correct(name, collective, n, inplace, check_program):
    ops = ("sum", "max") if Collective(collective).is_combining else ("sum",)
    check_program(library.build(name, collective, n, inplace=inplace), ops=ops)


def test_every_collective_has_an_algorithm():
    assert {info.collective for info in library.algorithms()} == set(Collective)


def test_non_power_of_two_counts_are_covered():
    for name, coll in [("ring", "all_reduce"), ("halving_doubling", "all_reduce"), ("double_binary_tree", "all_reduce"), ("binomial", "broadcast")]:
        assert library.get(name, coll).unsupported_reason(11) is None


@pytest.mark.parametrize("channels", [2, 3, 4])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("collective", ["all_gather", "reduce_scatter", "all_reduce"])
def test_multi_channel_rings(channels, bidirectional, collective, check_program):
    prog = library.build("ring", collective, 5, channels=channels, bidirectional=bidirectional)
    assert {ch.lane for ch in prog.ranks[0].channels} == set(range(channels))
    check_program(prog)


@pytest.mark.parametrize("n", [2, 5, 8])
@pytest.mark.parametrize("collective", ["broadcast", "reduce", "gather", "scatter"])
def test_every_root(n, collective, check_program):
    for info in library.algorithms(collective):
        for root in range(n):
            check_program(library.build(info.name, collective, n, root=root))


@pytest.mark.parametrize("chunks", [2, 4])
def test_pipelined_trees(chunks, check_program):
    check_program(library.build("binomial", "broadcast", 7, chunks=chunks, root=2))
    check_program(library.build("binomial", "reduce", 7, chunks=chunks, root=5))
    check_program(library.build("double_binary_tree", "all_reduce", 7, chunks=chunks))


def test_double_binary_tree_is_complementary():
    n = 8
    t1, t2 = library.nccl_binary_tree(n), library.nccl_binary_tree(n, mirrored=True)
    inner1 = {p for p in t1.values() if p is not None}
    inner2 = {p for p in t2.values() if p is not None}
    assert not ({r for r in range(n) if r not in inner1} & {r for r in range(n) if r not in inner2})


def test_ring_allreduce_moves_two_n_minus_one_over_n_of_the_buffer():
    n = 6
    prog = library.build("ring", "all_reduce", n)
    sends = sum(1 for rank, _, _, ins in prog.instructions() if rank == 0 and ins.op.sends)
    assert sends == 2 * (n - 1)
    assert prog.spec.chunk_factor == n


def test_unknown_algorithm_lists_valid_names():
    with pytest.raises(CollectiveError, match="no algorithm 'spiral' for all_reduce; valid: double_binary_tree"):
        library.build("spiral", "all_reduce", 4)


def test_unsupported_rank_count_is_explained():
    with pytest.raises(CollectiveError, match="needs a power-of-two rank count, got 6"):
        library.build("recursive_doubling", "all_gather", 6)


def test_unknown_option_is_named():
    with pytest.raises(CollectiveError, match="unknown option 'channel'"):
        library.build("ring", "all_gather", 4, channel=2)


def test_bidirectional_ring_needs_two_channels():
    with pytest.raises(CollectiveError, match="bidirectional=True turns every odd ring around, so it needs channels >= 2, got 1"):
        library.build("ring", "all_reduce", 4, bidirectional=True)
