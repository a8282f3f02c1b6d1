"""draw_topology writes real image files."""

from __future__ import annotations

import pytest

from synccl.topologies import draw_topology, get_topology

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["ring:8", "dgx1", "dgx-a100:2", "mi250:2", "torus2d:16x16"])
def test_draws_a_non_empty_png(tmp_path, name):
    path = tmp_path / "topology.png"
    draw_topology(get_topology(name), path)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 5000


def test_draws_svg_with_a_title(tmp_path):
    path = tmp_path / "t.svg"
    draw_topology(get_topology("star:4"), str(path), title="four on a switch")
    text = path.read_text()
    assert text.lstrip().startswith("<?xml") and "four on a switch" in text
