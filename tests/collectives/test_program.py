"""The Program IR: its lane count."""

import pytest

from synccl.collectives import Channel, CollectiveSpec, Program, RankProgram, library, replicate


def _program(lanes_by_rank):
    spec = CollectiveSpec("all_gather", len(lanes_by_rank))
    ranks = tuple(RankProgram(r, tuple(Channel(k, None, None, (), lane) for k, lane in enumerate(lanes))) for r, lanes in enumerate(lanes_by_rank))
    return Program("lanes", spec, ranks)


@pytest.mark.parametrize(("lanes_by_rank", "expected"), [([[], []], 1), ([[0], [0]], 1), ([[0, 2], [1]], 3), ([[0], [4]], 5)])
def test_nlanes_is_one_more_than_the_largest_lane(lanes_by_rank, expected):
    assert _program(lanes_by_rank).nlanes == expected


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_nlanes_of_library_rings_and_their_replicas(channels):
    prog = library.build("ring", "all_gather", 4, channels=channels)
    assert prog.nlanes == channels
    assert replicate(prog, 3).nlanes == 3 * channels
