"""Tiling: every message of a tile fits one FIFO slot, whatever the rounding of pieces."""

from hypothesis import given
from hypothesis import strategies as st

from synccl.collectives import Buffer
from synccl.runtime._plan import CountsLayout, ShareLayout


@given(share=st.integers(1, 1 << 20), chunk_factor=st.integers(1, 16), tiles=st.integers(1, 64))
def test_largest_piece_bounds_every_piece_of_a_share(share, chunk_factor, tiles):
    layout = ShareLayout(share, chunk_factor)
    pieces = [hi - lo for t in range(tiles) for chunk in range(chunk_factor) for lo, hi in [layout.range(Buffer.INPUT, chunk, t, tiles)]]
    assert max(pieces) == layout.largest_piece(tiles)


@given(counts=st.lists(st.integers(0, 1 << 16), min_size=1, max_size=8), tiles=st.integers(1, 64))
def test_largest_piece_bounds_every_piece_of_uneven_counts(counts, tiles):
    layout = CountsLayout(0, tuple(counts), tuple(counts))
    pieces = [hi - lo for t in range(tiles) for chunk in range(len(counts)) for lo, hi in [layout.range(Buffer.INPUT, chunk, t, tiles)]]
    assert max(pieces) == layout.largest_piece(tiles)


def test_a_three_node_all_to_all_message_fits_its_slot():
    """6 ranks as 3 nodes of 2, 1 MiB of float32: a message of several chunks overflowed its slot by one element."""
    from synccl.collectives import library
    from synccl.runtime._plan import tile_count

    program = library.build("hierarchical_2d", "all_to_all", 6, local_size=2)
    layout = ShareLayout((1 << 20) // 6, program.spec.chunk_factor)
    tiles = tile_count(program, layout.largest_piece, 4, 512 << 10)
    widest = max(ins.count for _, _, _, ins in program.instructions())
    assert widest * layout.largest_piece(tiles) * 4 <= 512 << 10
