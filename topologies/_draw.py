"""Draw a topology to an image file with matplotlib (Agg canvas; no display, no pyplot).

Ranks are circles, switches grey squares, NICs orange squares. A pair of opposite links
is drawn as one line, as wide as its larger bandwidth (relative to the topology's widest
link) and coloured by kind. Ranks-only topologies of up to 64 ranks are laid out on a
circle in rank order; others use a seeded spring layout (deterministic), which stays
readable up to a few hundred vertices.
"""

from __future__ import annotations

import math
import os

import networkx as nx

from synccl.topologies._topology import VERTEX_KIND, LinkKind, Topology, VertexKind

__all__ = ["draw_topology"]

_KIND_COLORS = {
    LinkKind.NVLINK: "#76b900",
    LinkKind.NVSWITCH: "#2e7d32",
    LinkKind.PCIE: "#1f77b4",
    LinkKind.XGMI: "#d62728",
    LinkKind.IB: "#9467bd",
    LinkKind.ETHERNET: "#8c564b",
    LinkKind.SHM: "#17becf",
}
_VERTEX_STYLE = {
    VertexKind.RANK: ("o", "#ffffff"),
    VertexKind.SWITCH: ("s", "#bdbdbd"),
    VertexKind.NIC: ("s", "#ffb74d"),
}
_SPRING_LIMIT = 500  # networkx's spring layout needs scipy above this size
_LABEL_LIMIT = 64


def draw_topology(topo: Topology, path: str | os.PathLike[str], *, title: str | None = None, dpi: int = 100) -> None:
    """Draw ``topo`` and save the picture to ``path`` (format from its extension, e.g. PNG).

    Parameters
    ----------
    topo : Topology
    path : str or os.PathLike
        The image file to write, e.g. ``'dgx1.png'`` or ``'dgx1.svg'``.
    title : str, optional
        Defaults to the topology's name and size.
    dpi : int, optional
        Resolution of raster formats.

    Examples
    --------
    >>> import os, tempfile
    >>> from synccl.topologies import dgx1
    >>> path = os.path.join(tempfile.mkdtemp(), "dgx1.png")
    >>> draw_topology(dgx1(), path)
    >>> os.path.getsize(path) > 0
    True
    """
    # matplotlib takes a third of a second to import: only a caller that draws pays for it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    graph = topo.graph
    pos = _layout(topo)
    size = min(16.0, 6.0 + 0.05 * graph.number_of_nodes())
    fig = Figure(figsize=(size, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_aspect("equal")

    pairs: dict[tuple[str, str], tuple[float, LinkKind, int | str, int | str]] = {}
    for link in topo.links():
        key = tuple(sorted((str(link.src), str(link.dst))))
        if key not in pairs or pairs[key][0] < link.bandwidth:
            pairs[key] = (link.bandwidth, link.kind, link.src, link.dst)
    widest = max((bw for bw, *_ in pairs.values()), default=1.0)
    for kind in LinkKind:
        edges = [(bw, u, v) for bw, k, u, v in pairs.values() if k is kind]
        if edges:
            segments = [(pos[u], pos[v]) for _, u, v in edges]
            widths = [0.5 + 4.0 * bw / widest for bw, _, _ in edges]
            ax.add_collection(LineCollection(segments, linewidths=widths, colors=_KIND_COLORS[kind], alpha=0.7, zorder=1))

    marker_size = 300 if graph.number_of_nodes() <= _LABEL_LIMIT else 40
    for vkind, (marker, color) in _VERTEX_STYLE.items():
        members = [v for v in graph if graph.nodes[v][VERTEX_KIND] is vkind]
        if members:
            xs, ys = zip(*(pos[v] for v in members), strict=True)
            ax.scatter(xs, ys, s=marker_size, marker=marker, c=color, edgecolors="black", linewidths=0.8, zorder=2)
    if graph.number_of_nodes() <= _LABEL_LIMIT:
        for v, (x, y) in pos.items():
            ax.text(x, y, str(v), ha="center", va="center", fontsize=7, zorder=3)

    handles = [
        Line2D([], [], color=_KIND_COLORS[k], linewidth=3, label=k.value) for k in LinkKind if any(p[1] is k for p in pairs.values())
    ]
    present = {graph.nodes[v][VERTEX_KIND] for v in graph}
    handles += [
        Line2D([], [], marker=marker, color="black", markerfacecolor=color, linestyle="", markersize=9, label=vkind.value)
        for vkind, (marker, color) in _VERTEX_STYLE.items()
        if vkind in present
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_title(title if title is not None else f"{topo.name} ({topo.nranks} ranks, {len(topo.switches)} switches/NICs)")
    ax.autoscale_view()
    fig.savefig(path, dpi=dpi, bbox_inches="tight")


def _layout(topo: Topology) -> dict[int | str, tuple[float, float]]:
    graph = topo.graph
    n = graph.number_of_nodes()
    if (not topo.switches and n <= _LABEL_LIMIT) or n > _SPRING_LIMIT:
        order = list(topo.ranks) + list(topo.switches)
        return {v: (math.cos(2 * math.pi * i / n), math.sin(2 * math.pi * i / n)) for i, v in enumerate(order)}
    pos = nx.spring_layout(graph.to_undirected(as_view=True), seed=0, k=2.0 / math.sqrt(n))
    return {v: (float(x), float(y)) for v, (x, y) in pos.items()}
