"""A plot of simulated bus bandwidth against message size: several Programs and a bound on one chart."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from synccl.exceptions import CollectiveError
from synccl.sim._result import SimResult
from synccl.units import format_size

__all__ = ["plot_busbw"]

_MARKERS = ("o", "s", "^", "D", "v")


def plot_busbw(
    results: Mapping[str, Sequence[SimResult]],
    path: str | os.PathLike[str],
    *,
    bound_busbw: Sequence[float] | None = None,
    title: str | None = None,
) -> None:
    """Draw bus bandwidth against message size (log2 x axis), one line per Program, to an image file.

    Draws on its own :class:`~matplotlib.figure.Figure` with the Agg canvas, so it needs no
    display and leaves pyplot's global state alone.

    Parameters
    ----------
    results : mapping of str to sequence of SimResult
        Label -> one result per size, all over the same sizes (what :func:`~synccl.sim.compare`
        returns).
    path : str or PathLike
        The image file; its suffix picks the format (``.png``, ``.svg``, ``.pdf``).
    bound_busbw : sequence of float, optional
        The bus bandwidth of a lower bound on time at each size, drawn dashed.
    title : str, optional
        The title; by default collective, topology and rank count of the first result.

    Raises
    ------
    CollectiveError
        If there are no results or sizes, or the labels' sizes (or the bound's length) disagree.

    Examples
    --------
    >>> import os, tempfile
    >>> from synccl.collectives import library
    >>> from synccl.sim import compare, size_range
    >>> from synccl.topologies import get_topology
    >>> ring = get_topology("ring:4")
    >>> results = compare({"ring": library.build("ring", "all_gather", 4)}, ring, size_range(1024, 4096))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     plot_busbw(results, os.path.join(d, "bw.png"), bound_busbw=[1.0, 2.0, 3.0])
    ...     os.path.getsize(os.path.join(d, "bw.png")) > 0
    True
    """
    if not results:
        raise CollectiveError("plot_busbw: no results to plot")
    sizes = [r.size_bytes for r in next(iter(results.values()))]
    if not sizes:
        raise CollectiveError("plot_busbw: no message sizes to plot")
    for label, series in results.items():
        if [r.size_bytes for r in series] != sizes:
            raise CollectiveError(f"plot_busbw: {label!r} has sizes {[r.size_bytes for r in series]!r}, expected {sizes!r}")
    if bound_busbw is not None and len(bound_busbw) != len(sizes):
        raise CollectiveError(f"plot_busbw: bound has {len(bound_busbw)} values, expected one per size ({len(sizes)})")
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported only when drawing (slow to import)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for k, (label, series) in enumerate(results.items()):
        # Ten colours, then the markers tell lines of the same colour apart.
        ax.plot(sizes, [r.busbw_gbps for r in series], marker=_MARKERS[k // 10 % len(_MARKERS)], markersize=4, label=label)
    if bound_busbw is not None:
        ax.plot(sizes, list(bound_busbw), linestyle="--", color="black", label="lower bound")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [format_size(s) for s in sizes], rotation=45, ha="right")
    first = next(iter(results.values()))[0]
    ax.set_title(title if title is not None else f"{first.collective.value} on {first.topology} ({first.nranks} ranks)")
    ax.set_xlabel("message size")
    ax.set_ylabel("bus bandwidth (GB/s)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
