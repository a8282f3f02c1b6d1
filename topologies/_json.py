"""The synccl topology JSON format: load, save, and convert to and from plain dicts.

The format is documented in ``docs/topology-json.md``. Every field is checked when
reading; an error names the file, the field path and the bad value, e.g.
``topology.json: links[3].bandwidth: expected a number > 0, got -1``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

from synccl._files import read_limited
from synccl.exceptions import TopologyError
from synccl.topologies._topology import (
    DEFAULT_MEMORY_BANDWIDTH,
    HOST,
    MEMORY_BANDWIDTH,
    VERTEX_KIND,
    LinkKind,
    Topology,
    TopologyBuilder,
    VertexKind,
)

__all__ = ["FORMAT", "VERSION", "to_dict", "from_dict", "save_topology", "load_topology"]

#: Value of the ``"format"`` field.
FORMAT = "synccl-topology"
#: The format version this module reads and writes.
VERSION = 1
#: The largest topology file read: 80x the file of 128 DGX-A100 (1024 ranks, 0.8 MB).
MAX_TOPOLOGY_BYTES = 64 << 20

_RESERVED = frozenset({VERTEX_KIND, HOST, MEMORY_BANDWIDTH})
# Attribute names a file may not use: the reserved ones and the builders' own arguments.
_FORBIDDEN_ATTRS = _RESERVED | {"kind", "name"}
_TOP_FIELDS = ("format", "version", "name", "description", "ranks", "switches", "links")
_RANK_FIELDS = ("id", "host", "memory_bandwidth", "attrs")
_SWITCH_FIELDS = ("name", "kind", "host", "attrs")
_LINK_FIELDS = ("src", "dst", "bandwidth", "latency", "kind", "lanes")
_SWITCH_KINDS = tuple(k.value for k in VertexKind if k is not VertexKind.RANK)
_LINK_KINDS = tuple(k.value for k in LinkKind)


def to_dict(topo: Topology) -> dict[str, Any]:
    """The JSON-ready dict of ``topo`` (see ``docs/topology-json.md``).

    Parameters
    ----------
    topo : Topology

    Returns
    -------
    dict
        With keys ``format``, ``version``, ``name``, ``description``, ``ranks``,
        ``switches`` and ``links``.

    Raises
    ------
    TopologyError
        If a vertex attribute is not a JSON scalar (str, int, finite float, bool, None).

    Examples
    --------
    >>> from synccl.topologies import line
    >>> d = to_dict(line(2))
    >>> d["ranks"][0], d["links"][0]["src"], d["links"][0]["dst"]
    ({'id': 0, 'host': 0, 'memory_bandwidth': 100.0}, 0, 1)
    """
    graph = topo.graph
    ranks = []
    for r in topo.ranks:
        data = graph.nodes[r]
        entry: dict[str, Any] = {"id": r, "host": data[HOST], "memory_bandwidth": data[MEMORY_BANDWIDTH]}
        ranks.append(_with_attrs(entry, r, data))
    switches = []
    for s in topo.switches:
        data = graph.nodes[s]
        entry = {"name": s, "kind": data[VERTEX_KIND].value, "host": data.get(HOST)}
        switches.append(_with_attrs(entry, s, data))
    links = [
        {
            "src": link.src,
            "dst": link.dst,
            "bandwidth": link.bandwidth,
            "latency": link.latency,
            "kind": link.kind.value,
            "lanes": link.lanes,
        }
        for link in topo.links()
    ]
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": topo.name,
        "description": topo.description,
        "ranks": ranks,
        "switches": switches,
        "links": links,
    }


def from_dict(data: Mapping[str, Any], *, source: str = "topology") -> Topology:
    """Build a :class:`Topology` from its dict form, checking every field.

    Parameters
    ----------
    data : Mapping
        As produced by :func:`to_dict` or read from a topology JSON file.
    source : str, optional
        Where ``data`` came from, put at the front of error messages (a file name).

    Returns
    -------
    Topology

    Raises
    ------
    TopologyError
        Naming ``source``, the field path and the bad value.

    Examples
    --------
    >>> from synccl.topologies import ring
    >>> t = ring(4)
    >>> from_dict(to_dict(t)) == t
    True
    >>> from_dict({"format": "synccl-topology", "version": 1, "name": "x", "ranks": []}, source="x.json")
    Traceback (most recent call last):
    ...
    synccl.exceptions.TopologyError: x.json: ranks: expected a non-empty list, got []
    """
    return _Reader(source).topology(data)


def save_topology(topo: Topology, path: str | os.PathLike[str]) -> None:
    """Write ``topo`` to ``path`` as topology JSON, one rank, switch or link per line.

    Parameters
    ----------
    topo : Topology
    path : str or os.PathLike
        The file to write (replaced if it exists).

    Raises
    ------
    TopologyError
        If a vertex attribute is not a JSON scalar.

    Examples
    --------
    >>> import os, tempfile
    >>> from synccl.topologies import ring
    >>> path = os.path.join(tempfile.mkdtemp(), "ring.json")
    >>> save_topology(ring(4), path)
    >>> load_topology(path).name
    'ring:4'
    """
    data = to_dict(topo)
    lines = ["{"]
    for i, (key, value) in enumerate(data.items()):
        comma = "," if i < len(data) - 1 else ""
        if isinstance(value, list) and value:
            lines.append(f"  {json.dumps(key)}: [")
            lines.extend(f"    {json.dumps(item)}{',' if j < len(value) - 1 else ''}" for j, item in enumerate(value))
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
    lines.append("}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def load_topology(path: str | os.PathLike[str]) -> Topology:
    """Read a topology JSON file.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    Topology

    Raises
    ------
    TopologyError
        If the file cannot be read, is larger than :data:`MAX_TOPOLOGY_BYTES`, is not JSON, or a
        field is wrong; the message starts with the file name, e.g. ``topology.json: links[3].bandwidth: expected a number > 0, got -1``.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "bad.json")
    >>> with open(path, "w") as f:
    ...     _ = f.write('{"format": "synccl-topology", "version": 2}')
    >>> load_topology(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    synccl.exceptions.TopologyError: ...bad.json: version: expected 1, got 2
    """
    source = os.fspath(path)
    text = read_limited(source, limit=MAX_TOPOLOGY_BYTES, what="topology", error=TopologyError)
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise TopologyError(f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except ValueError as exc:
        raise TopologyError(f"{source}: invalid JSON: {exc}") from exc
    return from_dict(data, source=source)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name!r} is not a number")


def _with_attrs(entry: dict[str, Any], vertex: int | str, data: Mapping[str, Any]) -> dict[str, Any]:
    attrs = {k: v for k, v in sorted(data.items()) if k not in _RESERVED}
    for key, value in attrs.items():
        if not _is_scalar(value):
            raise TopologyError(f"to_dict: vertex {vertex!r} attribute {key!r} is {value!r}, not a JSON scalar")
    if attrs:
        entry["attrs"] = attrs
    return entry


def _is_scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int, bool))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Reader:
    """Checks a topology dict field by field; every error names the source and the path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, expected: str, got: object) -> TopologyError:
        return TopologyError(f"{self.source}: {path}: expected {expected}, got {got!r}")

    def topology(self, data: object) -> Topology:
        obj = self.object(data, "(top level)", _TOP_FIELDS)
        if obj.get("format") != FORMAT:
            raise self.fail("format", repr(FORMAT), obj.get("format"))
        if obj.get("version") != VERSION or isinstance(obj.get("version"), bool):
            raise self.fail("version", str(VERSION), obj.get("version"))
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise self.fail("name", "a non-empty string", name)
        description = obj.get("description", "")
        if not isinstance(description, str):
            raise self.fail("description", "a string", description)
        ranks = obj.get("ranks")
        if not isinstance(ranks, list) or not ranks:
            raise self.fail("ranks", "a non-empty list", ranks)
        switches = obj.get("switches", [])
        if not isinstance(switches, list):
            raise self.fail("switches", "a list", switches)
        links = obj.get("links", [])
        if not isinstance(links, list):
            raise self.fail("links", "a list", links)

        b = TopologyBuilder()
        for attrs in self.ranks(ranks):
            b.add_rank(**attrs)
        names = set()
        for i, item in enumerate(switches):
            switch, attrs = self.switch(item, f"switches[{i}]")
            if switch in names:
                raise self.fail(f"switches[{i}].name", "a name not used before", switch)
            names.add(switch)
            b.add_switch(switch, **attrs)
        seen: dict[tuple[int | str, int | str], int] = {}
        for i, item in enumerate(links):
            src, dst, attrs = self.link(item, f"links[{i}]", len(ranks), names)
            if (src, dst) in seen:
                raise self.fail(f"links[{i}]", f"one link per (src, dst), this one repeats links[{seen[src, dst]}]", f"{src!r} -> {dst!r}")
            seen[src, dst] = i
            b.add_link(src, dst, bidirectional=False, **attrs)
        return b.build(name, description=description)

    def object(self, value: object, path: str, fields: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "an object", value)
        for key in value:
            if key not in fields:
                where = key if path == "(top level)" else f"{path}.{key}"
                raise self.fail(where, f"a known field ({', '.join(fields)})", key)
        return value

    def ranks(self, items: list[object]) -> list[dict[str, Any]]:
        """Each rank's builder arguments, in id order (ids are checked to be 0..n-1)."""
        n = len(items)
        by_id: dict[int, dict[str, Any]] = {}
        for i, item in enumerate(items):
            path = f"ranks[{i}]"
            obj = self.object(item, path, _RANK_FIELDS)
            rank = obj.get("id")
            if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < n:
                raise self.fail(f"{path}.id", f"an integer in 0..{n - 1}", rank)
            if rank in by_id:
                raise self.fail(f"{path}.id", "an id not used before", rank)
            host = obj.get("host", 0)
            if not isinstance(host, int) or isinstance(host, bool) or host < 0:
                raise self.fail(f"{path}.host", "an integer >= 0", host)
            bandwidth = obj.get("memory_bandwidth", DEFAULT_MEMORY_BANDWIDTH)
            if not _is_number(bandwidth) or not bandwidth > 0:
                raise self.fail(f"{path}.memory_bandwidth", "a number > 0", bandwidth)
            attrs = self.attrs(obj.get("attrs", {}), f"{path}.attrs")
            by_id[rank] = {"host": host, "memory_bandwidth": bandwidth, **attrs}
        return [by_id[r] for r in sorted(by_id)]

    def switch(self, item: object, path: str) -> tuple[str, dict[str, Any]]:
        obj = self.object(item, path, _SWITCH_FIELDS)
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise self.fail(f"{path}.name", "a non-empty string", name)
        kind = obj.get("kind", VertexKind.SWITCH.value)
        if kind not in _SWITCH_KINDS:
            raise self.fail(f"{path}.kind", " or ".join(repr(k) for k in _SWITCH_KINDS), kind)
        host = obj.get("host")
        if host is not None and (not isinstance(host, int) or isinstance(host, bool) or host < 0):
            raise self.fail(f"{path}.host", "null or an integer >= 0", host)
        attrs = self.attrs(obj.get("attrs", {}), f"{path}.attrs")
        return name, {"kind": kind, "host": host, **attrs}

    def link(self, item: object, path: str, nranks: int, switches: set[str]) -> tuple[int | str, int | str, dict[str, Any]]:
        obj = self.object(item, path, _LINK_FIELDS)
        ends = []
        for end in ("src", "dst"):
            v = obj.get(end)
            ok = (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < nranks) or (isinstance(v, str) and v in switches)
            if not ok:
                raise self.fail(f"{path}.{end}", f"a rank id in 0..{nranks - 1} or a switch name", v)
            ends.append(v)
        src, dst = ends
        if src == dst:
            raise self.fail(f"{path}.dst", "a vertex other than src", dst)
        bandwidth = obj.get("bandwidth")
        if not _is_number(bandwidth) or not bandwidth > 0:
            raise self.fail(f"{path}.bandwidth", "a number > 0", bandwidth)
        latency = obj.get("latency")
        if not _is_number(latency) or not latency >= 0:
            raise self.fail(f"{path}.latency", "a number >= 0", latency)
        kind = obj.get("kind")
        if kind not in _LINK_KINDS:
            raise self.fail(f"{path}.kind", f"one of {', '.join(_LINK_KINDS)}", kind)
        lanes = obj.get("lanes", 1)
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
            raise self.fail(f"{path}.lanes", "an integer >= 1", lanes)
        return src, dst, {"bandwidth": bandwidth, "latency": latency, "kind": kind, "lanes": lanes}

    def attrs(self, value: object, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "an object", value)
        for key, item in value.items():
            if key in _FORBIDDEN_ATTRS:
                raise self.fail(f"{path}.{key}", "an attribute name other than " + ", ".join(sorted(_FORBIDDEN_ATTRS)), key)
            if not _is_scalar(item):
                raise self.fail(f"{path}.{key}", "a string, number, boolean or null", item)
        return dict(value)
