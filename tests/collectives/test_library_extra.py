"""All-to-all, node-aware and rooted library algorithms: verified and numerically checked everywhere they apply."""

import pytest

from synccl.collectives import Collective, Program, library, verify
from synccl.exceptions import CollectiveError

RANKS = range(1, 17)
ROOT_RANKS = (3, 6, 7, 8, 13)
ALL_TO_ALL = ("pairwise", "bruck")
NODE_AWARE = (("hierarchical_2d", "all_to_all"), ("hierarchical", "all_reduce"))
ROOTED = (("direct", "gather"), ("direct", "scatter"), ("binomial", "gather"), ("binomial", "scatter"))
PLACES = pytest.mark.parametrize("inplace", [False, True], ids=["out", "in"])


def check(prog: Program, check_program) -> None:
    """Verify (which also rejects out-of-place writes to the input), then compare with the numpy oracle."""
    verify(prog)
    ops = ("sum", "max") if prog.collective.is_combining else ("sum",)
    check_program(prog, ops=ops)


def shapes(limit: int = 16):
    """Every (nnodes, local_size) with at most ``limit`` ranks."""
    return [
        pytest.param(n // size, size, id=f"{n // size}x{size}") for n in range(1, limit + 1) for size in range(1, n + 1) if n % size == 0
    ]


def sends_to(prog: Program, rank: int) -> dict[int, int]:
    """How many messages ``rank`` sends to each peer."""
    out: dict[int, int] = {}
    for ch in prog.ranks[rank].channels:
        for ins in ch.instructions:
            if ins.op.sends:
                out[ch.send_peer] = out.get(ch.send_peer, 0) + 1
    return out


def test_registered_names():
    names = {(info.name, info.collective.value) for info in library.algorithms()}
    expected = {("pairwise", "all_to_all"), ("bruck", "all_to_all"), ("hierarchical_2d", "all_to_all"), ("hierarchical", "all_reduce")}
    assert expected | set(ROOTED) <= names
    assert library.get("hierarchical_2d", "all_to_all").needs_local_size
    assert library.get("hierarchical", "all_reduce").needs_local_size


@PLACES
@pytest.mark.parametrize("n", RANKS)
@pytest.mark.parametrize("name", ALL_TO_ALL)
def test_all_to_all(name, n, inplace, check_program):
    check(library.build(name, "all_to_all", n, inplace=inplace), check_program)


@PLACES
@pytest.mark.parametrize(("n", "channels"), [(2, 2), (5, 3), (8, 2)])
def test_pairwise_channels_use_separate_lanes(n, channels, inplace, check_program):
    prog = library.build("pairwise", "all_to_all", n, channels=channels, inplace=inplace)
    assert {ch.lane for ch in prog.ranks[0].channels if ch.send_peer is not None} == set(range(channels))
    assert sends_to(prog, 0) == {peer: channels for peer in range(1, n)}
    check(prog, check_program)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 16])
def test_bruck_sends_one_message_per_step(n):
    prog = library.build("bruck", "all_to_all", n)
    for rank in range(n):
        assert sends_to(prog, rank) == {(rank + (1 << k)) % n: 1 for k in range((n - 1).bit_length())}


@PLACES
@pytest.mark.parametrize(("nodes", "local_size"), shapes())
@pytest.mark.parametrize(("name", "collective"), NODE_AWARE)
def test_node_aware(name, collective, nodes, local_size, inplace, check_program):
    check(library.build(name, collective, nodes * local_size, local_size=local_size, inplace=inplace), check_program)


@pytest.mark.parametrize(("nodes", "local_size"), [(2, 4), (3, 2), (4, 4), (2, 1), (1, 3)])
def test_2d_all_to_all_aggregates_messages(nodes, local_size):
    prog = library.build("hierarchical_2d", "all_to_all", nodes * local_size, local_size=local_size)
    for rank in range(nodes * local_size):
        a, m = divmod(rank, local_size)
        intra = {a * local_size + j: 1 for j in range(local_size) if j != m}
        inter = {b * local_size + m: 1 for b in range(nodes) if b != a}
        assert sends_to(prog, rank) == intra | inter


def test_hierarchical_all_reduce_crosses_machines_with_one_share():
    nodes, local_size = 3, 4
    prog = library.build("hierarchical", "all_reduce", nodes * local_size, local_size=local_size)
    rank = 5  # machine 1, local rank 1: talks across machines only to local rank 1 elsewhere
    remote = {p for p in sends_to(prog, rank) if p // local_size != rank // local_size}
    assert remote == {((1 + 1) % nodes) * local_size + 1}
    crossing = sum(ins.count for ch in prog.ranks[rank].channels if ch.send_peer in remote for ins in ch.instructions if ins.op.sends)
    assert crossing == 2 * (nodes - 1)  # chunks, out of chunk_factor = nranks: a 2(N-1)/(N*L) share


@PLACES
@pytest.mark.parametrize("n", RANKS)
@pytest.mark.parametrize(("name", "collective"), ROOTED)
def test_rooted_at_first_and_last_root(name, collective, n, inplace, check_program):
    for root in sorted({0, n - 1}):
        check(library.build(name, collective, n, root=root, inplace=inplace), check_program)


@PLACES
@pytest.mark.parametrize("n", ROOT_RANKS)
@pytest.mark.parametrize(("name", "collective"), ROOTED)
def test_rooted_every_root(name, collective, n, inplace, check_program):
    for root in range(1, n - 1):
        check(library.build(name, collective, n, root=root, inplace=inplace), check_program)


@pytest.mark.parametrize("collective", ["gather", "scatter"])
@pytest.mark.parametrize("n", [5, 8, 12])
def test_binomial_root_exchanges_log_n_messages(collective, n):
    prog = library.build("binomial", collective, n, root=2)
    root = prog.ranks[2]
    attr = "recv_peer" if collective == "gather" else "send_peer"
    messages = sum(1 for ch in root.channels if getattr(ch, attr) is not None for ins in ch.instructions if ins.op.sends or ins.op.receives)
    assert messages == (n - 1).bit_length()
    assert prog.collective is Collective(collective)


@pytest.mark.parametrize("builder", [library.hierarchical_all_reduce, library.hierarchical_2d_all_to_all])
@pytest.mark.parametrize("local_size", [0, 3, 2.0])
def test_bad_local_size_is_named(builder, local_size):
    with pytest.raises(CollectiveError, match=f"local_size must be an integer >= 1 dividing nranks=8, got {local_size!r}"):
        builder(8, local_size=local_size)


def test_node_aware_support_needs_even_machines():
    info = library.get("hierarchical_2d", "all_to_all")
    assert info.unsupported_reason(8, 4) is None
    assert "divisible" in info.unsupported_reason(8, 3)
    assert "ranks per machine" in info.unsupported_reason(8)


@pytest.mark.parametrize("channels", [0, -1, 1.5])
def test_bad_channels_are_named(channels):
    with pytest.raises(CollectiveError, match=f"pairwise all_to_all: channels must be an integer >= 1, got {channels!r}"):
        library.pairwise_all_to_all(4, channels=channels)


@pytest.mark.parametrize("builder", [library.direct_gather, library.binomial_scatter])
def test_bad_root_is_named(builder):
    with pytest.raises(CollectiveError, match="root must be a rank in 0..3, got 4"):
        builder(4, root=4)
