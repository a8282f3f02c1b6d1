"""Tiling: every message of a tile fits one FIFO slot, whatever the rounding of pieces."""

from hypothesis import given
from hypothesis import strategies as st

from synccl.collectives import Buffer
from synccl.runtime._plan import ShareLayout, TrafficLayout


@given(share=st.integers(1, 1 << 20), chunk_factor=st.integers(1, 16), tiles=st.integers(1, 64))
def test_largest_piece_bounds_every_piece_of_a_share(share, chunk_factor, tiles):
    layout = ShareLayout(share, chunk_factor)
    pieces = [hi - lo for t in range(tiles) for chunk in range(chunk_factor) for lo, hi in [layout.range(Buffer.INPUT, chunk, t, tiles)]]
    assert max(pieces) == layout.largest_piece(tiles)


@given(
    traffic=st.integers(1, 4).flatmap(lambda n: st.lists(st.lists(st.integers(0, 1 << 12), min_size=n, max_size=n), min_size=n, max_size=n)),
    chunk_factor=st.integers(1, 3),
    tiles=st.integers(1, 8),
)
def test_traffic_pieces_tile_each_buffer_and_fit_the_largest_piece(traffic, chunk_factor, tiles):
    n = len(traffic)
    matrix = tuple(tuple(row) for row in traffic)
    largest = TrafficLayout(0, matrix, chunk_factor).largest_piece(tiles)
    for rank in range(n):
        layout = TrafficLayout(rank, matrix, chunk_factor)
        for buffer, total in ((Buffer.INPUT, sum(matrix[rank])), (Buffer.OUTPUT, sum(row[rank] for row in matrix))):
            spans = sorted(layout.range(buffer, chunk, t, tiles) for chunk in range(n * chunk_factor) for t in range(tiles))
            assert spans[0][0] == 0 and spans[-1][1] == total  # contiguous, no gap, no overlap
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
            assert max(hi - lo for lo, hi in spans) <= largest
        # A relaying rank sizes another pair's piece as its sender lays it out.
        for src in range(n):
            for chunk in range(n * chunk_factor):
                lo, hi = TrafficLayout(src, matrix, chunk_factor).range(Buffer.INPUT, chunk, tiles - 1, tiles)
                assert layout.class_size((src, chunk), tiles - 1, tiles) == hi - lo


def test_a_three_node_all_to_all_message_fits_its_slot():
    """6 ranks as 3 nodes of 2, 1 MiB of float32: a message of several chunks overflowed its slot by one element."""
    from synccl.collectives import library
    from synccl.runtime._plan import tile_count

    program = library.build("hierarchical_2d", "all_to_all", 6, local_size=2)
    layout = ShareLayout((1 << 20) // 6, program.spec.chunk_factor)
    tiles = tile_count(program, layout.largest_piece, 4, 512 << 10)
    widest = max(ins.count for _, _, _, ins in program.instructions())
    assert widest * layout.largest_piece(tiles) * 4 <= 512 << 10
