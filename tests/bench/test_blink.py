"""Blink's setting (bench/blink_dgx1.py): DGX-1 allocations up to symmetry, and packed trees on them.

Where the expected counts come from. The DGX-1 here has 8 GPUs and 16 NVLink pairs of 25 or
50 GB/s (``topo show dgx1``); every GPU has two 50 GB/s and two 25 GB/s neighbours.

* Connected allocations per size (brute force below: every subset, kept if its induced NVLink
  graph is connected): 32 of 3 GPUs, 56 of 4, 56 of 5, 28 of 6, 8 of 7.
* Classes up to symmetry: 5, 14, 14, 10, 2 (45 in all). Checked below by a second, independent
  method: a canonical form of each induced graph (the smallest relabelled, bandwidth-labelled
  edge list over all orderings of its GPUs), no networkx matching involved. By hand for 3 GPUs:
  the 8 triangles (two K4s of GPUs 0-3 and 4-7) carry 50+50+25 or 50+25+25 GB/s, and the
  paths (a centre and two non-adjacent neighbours) carry 50+50, 50+25 or 25+25: 2 + 3 = 5
  classes. For 7 GPUs: the 8 ways to leave one GPU out fall into 2 classes, as the
  bandwidth-preserving automorphisms of the DGX-1 split the GPUs into two orbits.
"""

import itertools
from collections import Counter

import networkx as nx
import pytest

from synccl.bench.blink_dgx1 import allocations, chain_broadcast, main, measure
from synccl.sim import simulate
from synccl.synth import pack_trees
from synccl.topologies import get_topology

CONNECTED = {3: 32, 4: 56, 5: 56, 6: 28, 7: 8}
CLASSES = {3: 5, 4: 14, 5: 14, 6: 10, 7: 2}


@pytest.fixture(scope="module")
def dgx1():
    return get_topology("dgx1")


@pytest.fixture(scope="module")
def found(dgx1):
    return allocations(dgx1)


def nvlink_graph(topo):
    g = nx.Graph()
    g.add_nodes_from(topo.ranks)
    g.add_edges_from((link.src, link.dst, {"bw": link.bandwidth}) for link in topo.links())
    return g


def canonical(g, ranks):
    """The lexicographically smallest bandwidth-labelled edge list over every renumbering of ``ranks``."""
    edges = [(u, v, g.edges[u, v]["bw"]) for u, v in itertools.combinations(ranks, 2) if g.has_edge(u, v)]
    best = None
    for order in itertools.permutations(ranks):
        pos = {r: i for i, r in enumerate(order)}
        form = tuple(sorted((min(pos[u], pos[v]), max(pos[u], pos[v]), bw) for u, v, bw in edges))
        best = form if best is None or form < best else best
    return best


def test_connected_allocations_by_brute_force(dgx1, found):
    g = nvlink_graph(dgx1)
    brute = Counter(k for k in range(3, 8) for s in itertools.combinations(dgx1.ranks, k) if nx.is_connected(g.subgraph(s)))
    assert dict(brute) == CONNECTED
    covered = Counter()
    for alloc in found:
        covered[len(alloc.ranks)] += alloc.count
    assert dict(covered) == CONNECTED


def test_classes_match_an_independent_canonical_form(dgx1, found):
    g = nvlink_graph(dgx1)
    forms: dict[tuple, list] = {}
    for k in range(3, 8):
        for s in itertools.combinations(dgx1.ranks, k):
            if nx.is_connected(g.subgraph(s)):
                forms.setdefault(canonical(g, s), []).append(s)
    assert Counter(len(members[0]) for members in forms.values()) == Counter(CLASSES)
    assert Counter(len(a.ranks) for a in found) == Counter(CLASSES)
    # The same partition: each representative's class has the size allocations() reports.
    by_form = {canonical(g, a.ranks): a for a in found}
    assert len(by_form) == len(found) == sum(CLASSES.values())
    assert all(len(forms[form]) == a.count and forms[form][0] == a.ranks for form, a in by_form.items())


def test_allocations_rejects_an_empty_range(dgx1):
    with pytest.raises(ValueError, match="allocations: need 1 <= min_ranks <= max_ranks <= 8"):
        allocations(dgx1, min_ranks=5, max_ranks=4)


def test_chain_broadcast_is_a_pipelined_ring(check_program):
    check_program(chain_broadcast(4, chunks=3))
    line = get_topology("line:4")
    slow, fast = (simulate(chain_broadcast(4, chunks=c), line, 64 << 20).busbw_gbps for c in (1, 64))
    assert slow < 9 and fast > 24  # 25 GB/s links: store-and-forward over 3 hops vs. pipelined


# Three small allocations: the 4-GPU quad whose rank-order ring uses only NVLinks, a 3-GPU path,
# and a 4-GPU allocation whose ring 0-2-4-6 must route 6 -> 0 through other GPUs.
SMALL = [(0, 1, 2, 3), (0, 1, 3), (0, 2, 4, 6)]


@pytest.mark.parametrize("collective", ["all_reduce", "broadcast"])
@pytest.mark.parametrize("ranks", SMALL)
def test_trees_verify_and_sit_between_ring_and_bound(found, check_program, ranks, collective):
    alloc = next(a for a in found if a.ranks == ranks)
    check_program(pack_trees(collective, alloc.topology, root=0).to_program())
    row = measure(alloc, collective, 256 << 20)
    assert not row.note
    assert row.ring_busbw <= row.trees_busbw <= row.bound_busbw * (1 + 1e-9), row


def test_all_reduce_trees_stay_below_the_bound_on_a_path(found):
    # GPUs 0, 1, 5: the path 0 -50 GB/s- 1 -25 GB/s- 5. Reducing everything at GPU 1 and sending
    # it back, pipelined, takes M / 25 GB/s (GPU 5's links carry M each way, at once), i.e.
    # busbw 25 * 2 * 2/3 = 33.3 GB/s -- beyond the two-phase bound (25 GB/s), but not beyond
    # the all_reduce cut bound M / 25 GB/s that lower_bound gives.
    row = measure(next(a for a in found if a.ranks == (0, 1, 5)), "all_reduce", 256 << 20)
    assert row.trees_busbw <= row.bound_busbw * (1 + 1e-9), row


def test_main_prints_a_table_and_a_summary(capsys, tmp_path):
    out_json = tmp_path / "rows.json"
    assert main(["--max-ranks", "3", "--collective", "all_reduce", "--size", "64MiB", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "32 connected allocations of 3..3 GPUs, 5 up to symmetry" in out
    assert "trees over ring: geo-mean" in out and "0,1,5" in out
    assert out_json.read_text().count('"ranks"') == 5
