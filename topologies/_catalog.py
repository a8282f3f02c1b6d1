"""The registry of named topologies: ``get_topology('ring:8')``, ``list_topologies()``.

A name is a family, optionally followed by ``:`` and its parameter: a count (``ring:8``),
dimensions joined by ``x`` (``torus2d:4x4``), or for a machine, a node count
(``dgx-a100:16`` is 16 DGX A100s on a rail-only fabric; ``:1`` is the plain machine). Family
names are case-insensitive and ``_`` may stand for ``-``; ``fc`` is short for
``fully-connected``. A name ending in ``.json`` is a topology file to load.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from synccl.exceptions import TopologyError
from synccl.topologies._amd import mi250, mi300x
from synccl.topologies._generic import fully_connected, hypercube, line, mesh2d, ring, star, torus2d, torus3d
from synccl.topologies._host import host_topology
from synccl.topologies._json import load_topology
from synccl.topologies._multinode import multinode
from synccl.topologies._nvidia import dgx1, dgx2, dgx_a100, dgx_h100, dgx_h200, hgx_h800, ndv2
from synccl.topologies._topology import Topology

__all__ = ["TopologyInfo", "get_topology", "list_topologies"]

_NUMBER = re.compile(r"[0-9]+$")


@dataclass(frozen=True, slots=True)
class TopologyInfo:
    """One family of named topologies.

    Attributes
    ----------
    name : str
        The name pattern, e.g. ``'ring:N'`` or ``'dgx-a100[:N]'``.
    description : str
        What it models.
    example : str
        A name :func:`get_topology` accepts, e.g. ``'ring:8'``.
    """

    name: str
    description: str
    example: str


@dataclass(frozen=True, slots=True)
class _Family:
    info: TopologyInfo
    build: Callable[[str, str | None], Topology]  # (full name, parameter or None) -> Topology


def _counted(builder: Callable[[int], Topology], what: str) -> Callable[[str, str | None], Topology]:
    def build(name: str, param: str | None) -> Topology:
        return builder(_count(name, param, what, required=True))

    return build


def _dimensioned(builder: Callable[..., Topology], ndims: int) -> Callable[[str, str | None], Topology]:
    def build(name: str, param: str | None) -> Topology:
        example = "x".join(["4"] * ndims)
        parts = (param or "").lower().split("x")
        if param is None or len(parts) != ndims or not all(_NUMBER.match(p) for p in parts):
            raise TopologyError(f"get_topology: {name!r}: expected {ndims} dimensions like ':{example}', got {param!r}")
        return builder(*(int(p) for p in parts))

    return build


def _machine(builder: Callable[..., Topology], family: str) -> Callable[[str, str | None], Topology]:
    def build(name: str, param: str | None) -> Topology:
        nodes = _count(name, param, "node count", required=False)
        if nodes == 1:
            return builder()
        return multinode(builder(nics=True), nodes, fabric="rail", name=f"{family}:{nodes}")

    return build


def _count(name: str, param: str | None, what: str, *, required: bool) -> int:
    if param is None:
        if required:
            family = name.split(":", 1)[0]
            raise TopologyError(f"get_topology: {name!r} needs a {what}, e.g. '{family}:8'")
        return 1
    if not _NUMBER.match(param):
        raise TopologyError(f"get_topology: {name!r}: expected a {what} (a positive integer) after ':', got {param!r}")
    return int(param)


def _families() -> dict[str, _Family]:
    entries = [
        ("ring", "ring:N", "bidirectional ring of N ranks", "ring:8", _counted(ring, "rank count")),
        ("line", "line:N", "line (chain) of N ranks", "line:4", _counted(line, "rank count")),
        (
            "fully-connected",
            "fully-connected:N",
            "direct link between every pair of N ranks (alias fc:N)",
            "fc:4",
            _counted(fully_connected, "rank count"),
        ),
        ("star", "star:N", "N ranks on one switch", "star:8", _counted(star, "rank count")),
        ("torus2d", "torus2d:XxY", "2-D torus", "torus2d:4x4", _dimensioned(torus2d, 2)),
        ("torus3d", "torus3d:XxYxZ", "3-D torus", "torus3d:2x2x2", _dimensioned(torus3d, 3)),
        ("mesh2d", "mesh2d:XxY", "2-D mesh (grid without wrap-around)", "mesh2d:3x3", _dimensioned(mesh2d, 2)),
        ("hypercube", "hypercube:D", "D-dimensional hypercube of 2**D ranks", "hypercube:3", _counted(hypercube, "dimension")),
        ("host", "host:N", "N CPU ranks on this host joined by shared memory", "host:4", _counted(host_topology, "rank count")),
        ("dgx1", "dgx1[:N]", "NVIDIA DGX-1 (8x V100, hybrid cube-mesh); N nodes with 4x EDR NICs each", "dgx1:2", _machine(dgx1, "dgx1")),
        ("dgx2", "dgx2[:N]", "NVIDIA DGX-2 (16x V100 on NVSwitch, 8x EDR NICs)", "dgx2", _machine(dgx2, "dgx2")),
        ("dgx-a100", "dgx-a100[:N]", "NVIDIA DGX A100 (8x A100 on NVSwitch, 8x HDR NICs)", "dgx-a100:16", _machine(dgx_a100, "dgx-a100")),
        ("dgx-h100", "dgx-h100[:N]", "NVIDIA DGX H100 (8x H100 on NVSwitch, 8x NDR NICs)", "dgx-h100:4", _machine(dgx_h100, "dgx-h100")),
        (
            "dgx-h200",
            "dgx-h200[:N]",
            "NVIDIA DGX H200 (8x H200 on NVSwitch, HBM3e, 8x NDR NICs)",
            "dgx-h200:2",
            _machine(dgx_h200, "dgx-h200"),
        ),
        (
            "hgx-h800",
            "hgx-h800[:N]",
            "HGX H800 (8x H800 on NVSwitch at 400 GB/s, 8x NDR NICs)",
            "hgx-h800:2",
            _machine(hgx_h800, "hgx-h800"),
        ),
        ("ndv2", "ndv2[:N]", "Azure NDv2 (8x V100 hybrid cube-mesh, 1x EDR NIC)", "ndv2:4", _machine(ndv2, "ndv2")),
        ("mi250", "mi250[:N]", "AMD node of 4x MI250 (8 GCDs on xGMI, 4x 200G NICs)", "mi250:2", _machine(mi250, "mi250")),
        ("mi300x", "mi300x[:N]", "AMD 8x MI300X (xGMI full mesh, 8x 400G NICs)", "mi300x:2", _machine(mi300x, "mi300x")),
    ]
    return {family: _Family(TopologyInfo(pattern, description, example), build) for family, pattern, description, example, build in entries}


_FAMILIES = _families()
_ALIASES = {"fc": "fully-connected"}


def list_topologies() -> list[TopologyInfo]:
    """Every family of named topologies, in catalog order.

    Returns
    -------
    list of TopologyInfo

    Examples
    --------
    >>> infos = list_topologies()
    >>> infos[0].name, infos[0].example
    ('ring:N', 'ring:8')
    """
    return [family.info for family in _FAMILIES.values()]


def get_topology(name: str) -> Topology:
    """The topology called ``name``, or the topology JSON file at path ``name``.

    Parameters
    ----------
    name : str
        A catalog name such as ``'ring:8'``, ``'torus2d:4x4'``, ``'dgx1'``,
        ``'dgx-a100:16'`` (see :func:`list_topologies`), or a path ending in ``.json``.

    Returns
    -------
    Topology

    Raises
    ------
    TopologyError
        If the name is unknown (the message lists the valid ones), its parameter is
        malformed or out of range, or the JSON file is bad.

    Examples
    --------
    >>> get_topology("torus2d:4x4").nranks
    16
    >>> get_topology("dgx-a100:2").nranks
    16
    >>> get_topology("ring:x")
    Traceback (most recent call last):
    ...
    synccl.exceptions.TopologyError: get_topology: 'ring:x': expected a rank count (a positive integer) after ':', got 'x'
    """
    if not isinstance(name, str) or not name.strip():
        raise TopologyError(f"get_topology: expected a topology name or a .json path, got {name!r}")
    name = name.strip()
    if name.lower().endswith(".json"):
        return load_topology(name)
    family, _, param = name.partition(":")
    key = family.strip().lower().replace("_", "-")
    entry = _FAMILIES.get(_ALIASES.get(key, key))
    if entry is None:
        valid = ", ".join(f.info.name for f in _FAMILIES.values())
        raise TopologyError(f"get_topology: unknown topology {name!r}; valid names: {valid}, or a path to a .json file")
    try:
        return entry.build(name, param.strip() if ":" in name else None)
    except TopologyError as exc:
        if str(exc).startswith("get_topology:"):
            raise
        raise TopologyError(f"get_topology: {name!r}: {exc}") from exc
