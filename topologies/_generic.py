"""Generic topologies: rings, lines, meshes, tori, hypercubes, full meshes and stars.

Every builder takes the link ``bandwidth`` (GB/s, one direction), ``latency`` (us) and
``kind`` as keyword options, adds every link in both directions, and names the topology
the way :func:`synccl.topologies.get_topology` spells it (``'ring:8'``, ``'torus2d:4x4'``).

Sizes: every family accepts a single rank (a lone rank with no links) and at most
:data:`MAX_RANKS` ranks. Dimensions of size 1 add no links; a torus dimension of size 2
has one link between its two ranks, not two (the wrap-around coincides with the direct
link). Grid ranks are numbered row-major: in ``torus2d(x, y)`` rank ``i * y + j`` sits at
coordinates ``(i, j)``.
"""

from __future__ import annotations

import itertools
import math

from synccl.exceptions import TopologyError
from synccl.topologies._topology import DEFAULT_MEMORY_BANDWIDTH, LinkKind, Topology, TopologyBuilder

__all__ = ["MAX_RANKS", "ring", "line", "fully_connected", "star", "torus2d", "torus3d", "mesh2d", "hypercube"]

#: Largest rank count a generic builder accepts.
MAX_RANKS = 1 << 16
_MAX_DIM = 16

_BANDWIDTH = 25.0
_LATENCY = 1.0


def ring(
    n: int,
    *,
    bandwidth: float = _BANDWIDTH,
    latency: float = _LATENCY,
    kind: LinkKind | str = LinkKind.NVLINK,
    memory_bandwidth: float = DEFAULT_MEMORY_BANDWIDTH,
) -> Topology:
    """A bidirectional ring: rank ``i`` is linked to ``i - 1`` and ``i + 1`` (mod ``n``).

    Parameters
    ----------
    n : int
        Number of ranks, at least 1 (``ring(2)`` is one link, ``ring(1)`` a lone rank).
    bandwidth, latency, kind : optional
        Every link's bandwidth (GB/s, one direction), latency (us) and kind.
    memory_bandwidth : float, optional
        Each rank's local copy bandwidth (GB/s).

    Returns
    -------
    Topology
        Named ``'ring:{n}'``.

    Raises
    ------
    TopologyError
        If ``n`` is not an integer in ``1..MAX_RANKS``.

    Examples
    --------
    >>> t = ring(8)
    >>> t.name, sorted(link.dst for link in t.out_links(0))
    ('ring:8', [1, 7])
    """
    _check("ring", n=n)
    pairs = [(i, (i + 1) % n) for i in range(n if n > 2 else n - 1)]
    return _build(f"ring:{n}", n, pairs, "bidirectional ring", bandwidth, latency, kind, memory_bandwidth)


def line(
    n: int,
    *,
    bandwidth: float = _BANDWIDTH,
    latency: float = _LATENCY,
    kind: LinkKind | str = LinkKind.NVLINK,
    memory_bandwidth: float = DEFAULT_MEMORY_BANDWIDTH,
) -> Topology:
    """A line (a ring without its closing link): rank ``i`` is linked to ``i + 1``.

    Parameters
    ----------
    n : int
        Number of ranks, at least 1.
    bandwidth, latency, kind, memory_bandwidth : optional
        As for :func:`ring`.

    Returns
    -------
    Topology
        Named ``'line:{n}'``.

    Raises
    ------
    TopologyError
        If ``n`` is not an integer in ``1..MAX_RANKS``.

    Examples
    --------
    >>> t = line(4)
    >>> t.has_link(0, 1), t.has_link(3, 0)
    (True, False)
    """
    _check("line", n=n)
    pairs = [(i, i + 1) for i in range(n - 1)]
    return _build(f"line:{n}", n, pairs, "line", bandwidth, latency, kind, memory_bandwidth)


def fully_connected(
    n: int,
    *,
    bandwidth: float = _BANDWIDTH,
    latency: float = _LATENCY,
    kind: LinkKind | str = LinkKind.NVLINK,
    memory_bandwidth: float = DEFAULT_MEMORY_BANDWIDTH,
) -> Topology:
    """Every pair of ranks joined by a direct link.

    Parameters
    ----------
    n : int
        Number of ranks, at least 1.
    bandwidth, latency, kind, memory_bandwidth : optional
        As for :func:`ring`.

    Returns
    -------
    Topology
        Named ``'fully-connected:{n}'``.

    Raises
    ------
    TopologyError
        If ``n`` is not an integer in ``1..MAX_RANKS``.

    Examples
    --------
    >>> len(list(fully_connected(4).out_links(0)))
    3
    """
    _check("fully_connected", n=n)
    pairs = list(itertools.combinations(range(n), 2))
    return _build(f"fully-connected:{n}", n, pairs, "full mesh", bandwidth, latency, kind, memory_bandwidth)


def star(
    n: int,
    *,
    bandwidth: float = _BANDWIDTH,
    latency: float = _LATENCY,
    kind: LinkKind | str = LinkKind.NVSWITCH,
    memory_bandwidth: float = DEFAULT_MEMORY_BANDWIDTH,
) -> Topology:
    """All ranks joined to one switch vertex named ``'switch'``.

    Parameters
    ----------
    n : int
        Number of ranks, at least 1.
    bandwidth, latency, kind, memory_bandwidth : optional
        As for :func:`ring`; ``latency`` is per rank-switch link, and ``kind`` defaults
        to ``nvswitch``.

    Returns
    -------
    Topology
        Named ``'star:{n}'``.

    Raises
    ------
    TopologyError
        If ``n`` is not an integer in ``1..MAX_RANKS``.

    Examples
    --------
    >>> t = star(8)
    >>> t.switches, t.link(3, "switch").kind.value
    (('switch',), 'nvswitch')
    """
    _check("star", n=n)
    b = TopologyBuilder()
    for _ in range(n):
        b.add_rank(memory_bandwidth=memory_bandwidth)
    b.add_switch("switch")
    for r in range(n):
        b.add_link(r, "switch", bandwidth=bandwidth, latency=latency, kind=kind)
    return b.build(f"star:{n}", description=f"star: {n} ranks on one switch, {bandwidth:g} GB/s per rank")


def torus2d(
    x: int,
    y: int,
    *,
    bandwidth: float = _BANDWIDTH,
    latency: float = _LATENCY,
    kind: LinkKind | str = LinkKind.NVLINK,
    memory_bandwidth: float = DEFAULT_MEMORY_BANDWIDTH,
) -> Topology:
    """An ``x`` by ``y`` torus (a grid whose rows and columns wrap around).

    Parameters
    ----------
    x, y : int
        Dimension sizes, each at least 1.
    bandwidth, latency, kind, memory_bandwidth : optional
        As for :func:`ring`.

    Returns
    -------
    Topology
        Named ``'torus2d:{x}x{y}'``.

    Raises
    ------
    TopologyError
        If a dimension is not a positive integer or there are more than ``MAX_RANKS`` ranks.

    Examples
    --------
    >>> t = torus2d(4, 4)
    >>> t.nranks, len(list(t.out_links(5)))
    (16, 4)
    """
    _check("torus2d", x=x, y=y)
    return _grid(f"torus2d:{x}x{y}", (x, y), True, bandwidth, latency, kind, memory_bandwidth)


def torus3d(
    x: int,
    y: int,
    z: int,
    *,
    bandwidth: float = _BANDWIDTH,
    latency: float = _LATENCY,
    kind: LinkKind | str = LinkKind.NVLINK,
    memory_bandwidth: float = DEFAULT_MEMORY_BANDWIDTH,
) -> Topology:
    """An ``x`` by ``y`` by ``z`` torus.

    Parameters
    ----------
    x, y, z : int
        Dimension sizes, each at least 1.
    bandwidth, latency, kind, memory_bandwidth : optional
        As for :func:`ring`.

    Returns
    -------
    Topology
        Named ``'torus3d:{x}x{y}x{z}'``.

    Raises
    ------
    TopologyError
        If a dimension is not a positive integer or there are more than ``MAX_RANKS`` ranks.

    Examples
    --------
    >>> t = torus3d(3, 3, 3)
    >>> t.nranks, len(list(t.out_links(0)))
    (27, 6)
    """
    _check("torus3d", x=x, y=y, z=z)
    return _grid(f"torus3d:{x}x{y}x{z}", (x, y, z), True, bandwidth, latency, kind, memory_bandwidth)


def mesh2d(
    x: int,
    y: int,
    *,
    bandwidth: float = _BANDWIDTH,
    latency: float = _LATENCY,
    kind: LinkKind | str = LinkKind.NVLINK,
    memory_bandwidth: float = DEFAULT_MEMORY_BANDWIDTH,
) -> Topology:
    """An ``x`` by ``y`` grid without wrap-around.

    Parameters
    ----------
    x, y : int
        Dimension sizes, each at least 1.
    bandwidth, latency, kind, memory_bandwidth : optional
        As for :func:`ring`.

    Returns
    -------
    Topology
        Named ``'mesh2d:{x}x{y}'``.

    Raises
    ------
    TopologyError
        If a dimension is not a positive integer or there are more than ``MAX_RANKS`` ranks.

    Examples
    --------
    >>> t = mesh2d(3, 3)
    >>> len(list(t.out_links(0))), len(list(t.out_links(4)))
    (2, 4)
    """
    _check("mesh2d", x=x, y=y)
    return _grid(f"mesh2d:{x}x{y}", (x, y), False, bandwidth, latency, kind, memory_bandwidth)


def hypercube(
    dim: int,
    *,
    bandwidth: float = _BANDWIDTH,
    latency: float = _LATENCY,
    kind: LinkKind | str = LinkKind.NVLINK,
    memory_bandwidth: float = DEFAULT_MEMORY_BANDWIDTH,
) -> Topology:
    """A ``dim``-dimensional hypercube: ``2**dim`` ranks, ``r`` linked to ``r ^ (1 << k)``.

    Parameters
    ----------
    dim : int
        Number of dimensions, at least 0 (``hypercube(0)`` is a lone rank).
    bandwidth, latency, kind, memory_bandwidth : optional
        As for :func:`ring`.

    Returns
    -------
    Topology
        Named ``'hypercube:{dim}'``.

    Raises
    ------
    TopologyError
        If ``dim`` is not an integer in ``0..16``.

    Examples
    --------
    >>> t = hypercube(3)
    >>> sorted(link.dst for link in t.out_links(0))
    [1, 2, 4]
    """
    if not isinstance(dim, int) or isinstance(dim, bool) or not 0 <= dim <= _MAX_DIM:
        raise TopologyError(f"hypercube: dim must be an integer in 0..{_MAX_DIM}, got {dim!r}")
    n = 1 << dim
    pairs = [(r, r ^ (1 << k)) for r in range(n) for k in range(dim) if r < r ^ (1 << k)]
    return _build(f"hypercube:{dim}", n, pairs, f"{dim}-dimensional hypercube", bandwidth, latency, kind, memory_bandwidth)


def _check(func: str, **sizes: int) -> None:
    for field, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TopologyError(f"{func}: {field} must be an integer >= 1, got {value!r}")
    n = math.prod(sizes.values())
    if n > MAX_RANKS:
        raise TopologyError(f"{func}: at most {MAX_RANKS} ranks, got {n}")


def _build(
    name: str,
    n: int,
    pairs: list[tuple[int, int]],
    what: str,
    bandwidth: float,
    latency: float,
    kind: LinkKind | str,
    memory_bandwidth: float,
) -> Topology:
    b = TopologyBuilder()
    for _ in range(n):
        b.add_rank(memory_bandwidth=memory_bandwidth)
    for u, v in pairs:
        b.add_link(u, v, bandwidth=bandwidth, latency=latency, kind=kind)
    return b.build(name, description=f"{what} of {n} ranks, {bandwidth:g} GB/s per link")


def _grid(
    name: str,
    dims: tuple[int, ...],
    wrap: bool,
    bandwidth: float,
    latency: float,
    kind: LinkKind | str,
    memory_bandwidth: float,
) -> Topology:
    n = math.prod(dims)
    pairs = []
    for coords in itertools.product(*(range(k) for k in dims)):
        for axis, size in enumerate(dims):
            step = coords[axis] + 1
            if step == size and not (wrap and size > 2):
                continue
            other = (*coords[:axis], step % size, *coords[axis + 1 :])
            pairs.append((_index(coords, dims), _index(other, dims)))
    shape = "x".join(str(k) for k in dims)
    what = f"{shape} {'torus' if wrap else 'mesh'}"
    return _build(name, n, pairs, what, bandwidth, latency, kind, memory_bandwidth)


def _index(coords: tuple[int, ...], dims: tuple[int, ...]) -> int:
    index = 0
    for c, k in zip(coords, dims, strict=True):
        index = index * k + c
    return index
