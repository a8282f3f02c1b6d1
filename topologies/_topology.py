"""The Topology: a directed graph of ranks, switches and NICs joined by links.

Ranks are the integers ``0 .. nranks-1``; switches and NICs are string-named vertices.
Every directed link ``src -> dst`` carries its bandwidth (GB/s, 1e9 bytes per second, one
direction), its latency (microseconds), its kind and its lane count (how many physical
links of that kind the pair has, e.g. the NVLink multiplicities of a DGX-1).
Links are always indexed ``(src, dst)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

import networkx as nx

from synccl.exceptions import TopologyError

__all__ = [
    "BANDWIDTH",
    "LATENCY",
    "KIND",
    "LANES",
    "VERTEX_KIND",
    "HOST",
    "MEMORY_BANDWIDTH",
    "DEVICE",
    "DEFAULT_MEMORY_BANDWIDTH",
    "LinkKind",
    "VertexKind",
    "Link",
    "Topology",
    "TopologyBuilder",
]

# Edge attribute names.
BANDWIDTH = "bandwidth"  # GB/s, one direction
LATENCY = "latency"  # microseconds
KIND = "kind"  # LinkKind
LANES = "lanes"  # physical links bundled in this directed link
# Vertex attribute names.
VERTEX_KIND = "vertex_kind"  # VertexKind
HOST = "host"  # machine index of a rank, switch or NIC (None for fabric switches)
MEMORY_BANDWIDTH = "memory_bandwidth"  # GB/s of a rank's local copies and reductions
DEVICE = "device"  # a rank's device type, e.g. 'H100' (absent where the topology does not say)

#: Local copy bandwidth assumed when a topology does not state one (GB/s).
DEFAULT_MEMORY_BANDWIDTH = 100.0


class LinkKind(str, Enum):  # noqa: UP042 - StrEnum would change str() of a public type
    """The physical kind of a link."""

    NVLINK = "nvlink"
    NVSWITCH = "nvswitch"
    PCIE = "pcie"
    XGMI = "xgmi"
    IB = "ib"
    ETHERNET = "ethernet"
    SHM = "shm"


class VertexKind(str, Enum):  # noqa: UP042 - StrEnum would change str() of a public type
    """What a vertex of the topology is."""

    RANK = "rank"
    SWITCH = "switch"
    NIC = "nic"


@dataclass(frozen=True, slots=True)
class Link:
    """One directed link ``src -> dst``."""

    src: int | str
    dst: int | str
    bandwidth: float
    latency: float
    kind: LinkKind
    lanes: int = 1


class Topology:
    """A validated, immutable network of ranks, switches and NICs.

    Build one with :class:`TopologyBuilder` or take one from the catalog.

    Examples
    --------
    >>> b = TopologyBuilder()
    >>> r0, r1 = b.add_rank(), b.add_rank()
    >>> b.add_link(r0, r1, bandwidth=25.0, latency=0.7, kind=LinkKind.NVLINK)
    >>> topo = b.build("pair")
    >>> topo.nranks, topo.link(1, 0).bandwidth
    (2, 25.0)
    """

    __slots__ = ("_name", "_graph", "_nranks", "_description", "_fingerprint")

    def __init__(self, name: str, graph: nx.DiGraph, *, description: str = "") -> None:
        self._name = name
        self._description = description
        self._nranks = _validate(name, graph)
        self._graph = nx.freeze(graph.copy())
        self._fingerprint: str | None = None  # computed once: the frozen graph never changes

    # -- identity -------------------------------------------------------------
    @property
    def name(self) -> str:
        """The topology's name, e.g. ``'ring:8'`` or ``'dgx1'``."""
        return self._name

    @property
    def description(self) -> str:
        """One line on what the topology models and where its figures come from."""
        return self._description

    @property
    def graph(self) -> nx.DiGraph:
        """The underlying frozen :class:`networkx.DiGraph`."""
        return self._graph

    def __repr__(self) -> str:
        return f"Topology({self._name!r}, nranks={self._nranks}, switches={len(self.switches)}, links={self._graph.number_of_edges()})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Topology):
            return NotImplemented
        return self._name == other._name and self.fingerprint() == other.fingerprint()

    def __hash__(self) -> int:
        return hash((self._name, self.fingerprint()))

    def fingerprint(self) -> str:
        """A SHA-256 over vertices and links, independent of the name (for caches)."""
        if self._fingerprint is not None:
            return self._fingerprint
        vertices = sorted((str(v), _jsonable(d)) for v, d in self._graph.nodes(data=True))
        links = sorted((str(u), str(v), _jsonable(d)) for u, v, d in self._graph.edges(data=True))
        payload = json.dumps([vertices, links], sort_keys=True)
        self._fingerprint = hashlib.sha256(payload.encode()).hexdigest()
        return self._fingerprint

    # -- vertices -------------------------------------------------------------
    @property
    def nranks(self) -> int:
        """Number of compute ranks."""
        return self._nranks

    @property
    def ranks(self) -> range:
        """The compute ranks, ``range(nranks)``."""
        return range(self._nranks)

    @property
    def switches(self) -> tuple[str, ...]:
        """Every vertex that is not a rank (switches and NICs), sorted."""
        return tuple(sorted(v for v in self._graph if not isinstance(v, int)))

    def vertex_kind(self, vertex: int | str) -> VertexKind:
        """The kind of ``vertex``; raises :class:`TopologyError` if absent."""
        self._check_vertex(vertex)
        return self._graph.nodes[vertex][VERTEX_KIND]

    def memory_bandwidth(self, rank: int) -> float:
        """Bandwidth (GB/s) of local copies and reductions on ``rank``."""
        self._check_rank(rank)
        return self._graph.nodes[rank][MEMORY_BANDWIDTH]

    def device(self, rank: int) -> str | None:
        """The device type of ``rank``, e.g. ``'H100'``; ``None`` where the topology does not say.

        The vendor machines of the catalog name their GPUs (``'A100'``, ``'H100'``,
        ``'MI300X'``, ...); generic topologies such as ``ring:8`` do not. The device is the
        rank's vertex attribute :data:`DEVICE`, so it survives JSON, subsets and multinode.

        >>> b = TopologyBuilder()
        >>> r0, r1 = b.add_rank(device="H100"), b.add_rank()
        >>> b.add_link(r0, r1, bandwidth=25.0, latency=0.7, kind="nvlink")
        >>> topo = b.build("pair")
        >>> topo.device(0), topo.device(1)
        ('H100', None)
        """
        self._check_rank(rank)
        return self._graph.nodes[rank].get(DEVICE)

    def host_of(self, vertex: int | str) -> int | None:
        """Machine index of ``vertex`` (``None`` for a fabric switch)."""
        self._check_vertex(vertex)
        return self._graph.nodes[vertex].get(HOST)

    @property
    def nhosts(self) -> int:
        """Number of machines the ranks are spread over."""
        return len({self._graph.nodes[r][HOST] for r in self.ranks})

    def ranks_on_host(self, host: int) -> tuple[int, ...]:
        """The ranks on machine ``host``, in rank order."""
        return tuple(r for r in self.ranks if self._graph.nodes[r][HOST] == host)

    # -- links ----------------------------------------------------------------
    def has_link(self, src: int | str, dst: int | str) -> bool:
        """Whether a direct link ``src -> dst`` exists."""
        return self._graph.has_edge(src, dst)

    def link(self, src: int | str, dst: int | str) -> Link:
        """The link ``src -> dst``; raises :class:`TopologyError` if there is none."""
        if not self._graph.has_edge(src, dst):
            raise TopologyError(f"link: no link {src!r} -> {dst!r} in topology {self._name!r}")
        return _link(src, dst, self._graph.edges[src, dst])

    def links(self) -> Iterator[Link]:
        """Every directed link, in insertion order."""
        for u, v, data in self._graph.edges(data=True):
            yield _link(u, v, data)

    def out_links(self, vertex: int | str) -> Iterator[Link]:
        """Links leaving ``vertex``."""
        self._check_vertex(vertex)
        for _, v, data in self._graph.out_edges(vertex, data=True):
            yield _link(vertex, v, data)

    def in_links(self, vertex: int | str) -> Iterator[Link]:
        """Links entering ``vertex``."""
        self._check_vertex(vertex)
        for u, _, data in self._graph.in_edges(vertex, data=True):
            yield _link(u, vertex, data)

    def is_connected(self) -> bool:
        """Whether every rank can reach every other rank along directed links."""
        if self._nranks <= 1:
            return True
        reach = nx.descendants(self._graph, 0) | {0}
        back = nx.ancestors(self._graph, 0) | {0}
        return all(r in reach and r in back for r in self.ranks)

    # -- derived topologies ----------------------------------------------------
    def reversed(self) -> Topology:
        """The same topology with every link turned around (for reduction duality)."""
        return Topology(f"{self._name}^R", self._graph.reverse(copy=True), description=self._description)

    def subset(self, ranks: Iterable[int], *, name: str | None = None) -> Topology:
        """The topology a job sees when given only ``ranks`` (Blink's sub-allocations).

        Kept ranks are renumbered ``0..k-1`` in the given order; every switch and NIC is
        kept, so traffic may still cross them. The original rank id is kept in the
        vertex attribute ``"physical_rank"``.

        >>> from synccl.topologies import TopologyBuilder
        >>> b = TopologyBuilder()
        >>> rs = [b.add_rank() for _ in range(3)]
        >>> for u in rs:
        ...     for v in rs:
        ...         if u != v:
        ...             b.add_link(u, v, bandwidth=10.0, latency=1.0, kind="nvlink", bidirectional=False)
        >>> b.build("tri").subset([2, 0]).nranks
        2
        """
        chosen = list(ranks)
        if len(set(chosen)) != len(chosen):
            raise TopologyError(f"subset: ranks repeat in {chosen!r}")
        for r in chosen:
            self._check_rank(r)
        if not chosen:
            raise TopologyError("subset: no ranks given")
        relabel: dict[int | str, int | str] = {old: new for new, old in enumerate(chosen)}
        keep = set(chosen) | set(self.switches)
        sub = self._graph.subgraph(keep).copy()
        sub = nx.relabel_nodes(sub, relabel, copy=True)
        for old, new in relabel.items():
            sub.nodes[new].setdefault("physical_rank", self._graph.nodes[old].get("physical_rank", old))
        label = name or f"{self._name}[{','.join(str(r) for r in chosen)}]"
        return Topology(label, sub, description=self._description)

    # -- helpers ----------------------------------------------------------------
    def _check_rank(self, rank: int) -> None:
        if not isinstance(rank, int) or not 0 <= rank < self._nranks:
            raise TopologyError(f"topology {self._name!r}: no rank {rank!r} (ranks are 0..{self._nranks - 1})")

    def _check_vertex(self, vertex: int | str) -> None:
        if vertex not in self._graph:
            raise TopologyError(f"topology {self._name!r}: no vertex {vertex!r}")


class TopologyBuilder:
    """Mutable builder for a :class:`Topology`.

    Examples
    --------
    >>> b = TopologyBuilder()
    >>> ranks = [b.add_rank() for _ in range(4)]
    >>> sw = b.add_switch("sw")
    >>> for r in ranks:
    ...     b.add_link(r, sw, bandwidth=100.0, latency=0.5, kind="nvswitch")
    >>> b.build("star:4").switches
    ('sw',)
    """

    def __init__(self) -> None:
        self._graph = nx.DiGraph()
        self._nranks = 0

    def add_rank(self, *, host: int = 0, memory_bandwidth: float = DEFAULT_MEMORY_BANDWIDTH, **attrs: object) -> int:
        """Add the next rank (numbered in order of addition) and return its id."""
        rank = self._nranks
        self._graph.add_node(rank, **{VERTEX_KIND: VertexKind.RANK, HOST: host, MEMORY_BANDWIDTH: float(memory_bandwidth)}, **attrs)
        self._nranks += 1
        return rank

    def add_switch(self, name: str, *, kind: VertexKind | str = VertexKind.SWITCH, host: int | None = None, **attrs: object) -> str:
        """Add a switch or NIC vertex named ``name`` and return the name."""
        if not isinstance(name, str):
            raise TopologyError(f"add_switch: switch names are strings, got {name!r}")
        if name in self._graph:
            raise TopologyError(f"add_switch: vertex {name!r} already exists")
        self._graph.add_node(name, **{VERTEX_KIND: VertexKind(kind), HOST: host}, **attrs)
        return name

    def add_link(
        self,
        src: int | str,
        dst: int | str,
        *,
        bandwidth: float,
        latency: float,
        kind: LinkKind | str,
        lanes: int = 1,
        bidirectional: bool = True,
    ) -> None:
        """Add ``src -> dst`` (and ``dst -> src`` unless ``bidirectional=False``).

        Adding a link that already exists adds its bandwidth and lanes to it (parallel
        physical links between the same pair).
        """
        pairs = [(src, dst), (dst, src)] if bidirectional else [(src, dst)]
        for u, v in pairs:
            for vertex in (u, v):
                if vertex not in self._graph:
                    raise TopologyError(f"add_link: unknown vertex {vertex!r} in link {u!r} -> {v!r}")
            if self._graph.has_edge(u, v):
                data = self._graph.edges[u, v]
                data[BANDWIDTH] += float(bandwidth)
                data[LANES] += int(lanes)
                data[LATENCY] = min(data[LATENCY], float(latency))
            else:
                self._graph.add_edge(u, v, **{BANDWIDTH: float(bandwidth), LATENCY: float(latency), KIND: LinkKind(kind), LANES: int(lanes)})

    def build(self, name: str, *, description: str = "") -> Topology:
        """Validate and freeze into a :class:`Topology`."""
        return Topology(name, self._graph, description=description)


def _link(u: int | str, v: int | str, data: dict) -> Link:
    return Link(u, v, data[BANDWIDTH], data[LATENCY], data[KIND], data[LANES])


def _jsonable(data: dict) -> dict:
    return {k: (v.value if isinstance(v, Enum) else v) for k, v in sorted(data.items())}


def _validate(name: str, graph: nx.DiGraph) -> int:
    """Check vertices and links; return the rank count."""
    ranks = sorted(v for v in graph if isinstance(v, int) and not isinstance(v, bool))
    if ranks != list(range(len(ranks))):
        raise TopologyError(f"topology {name!r}: ranks must be the integers 0..n-1, got {ranks!r}")
    if not ranks:
        raise TopologyError(f"topology {name!r}: has no ranks")
    for v, data in graph.nodes(data=True):
        if not isinstance(v, (int, str)) or isinstance(v, bool):
            raise TopologyError(f"topology {name!r}: vertex {v!r} is neither a rank (int) nor a switch (str)")
        kind = data.get(VERTEX_KIND)
        expected_rank = isinstance(v, int)
        if kind is None or (kind == VertexKind.RANK) != expected_rank:
            raise TopologyError(f"topology {name!r}: vertex {v!r} has vertex_kind {kind!r}")
        if expected_rank and not data.get(MEMORY_BANDWIDTH, 0) > 0:
            raise TopologyError(f"topology {name!r}: rank {v!r} has memory_bandwidth {data.get(MEMORY_BANDWIDTH)!r}, must be > 0")
        if expected_rank and DEVICE in data and not (isinstance(data[DEVICE], str) and data[DEVICE]):
            raise TopologyError(f"topology {name!r}: rank {v!r} has device {data[DEVICE]!r}, must be a non-empty string")
    for u, v, data in graph.edges(data=True):
        if u == v:
            raise TopologyError(f"topology {name!r}: self-link {u!r} -> {v!r}")
        bw, lat, lanes = data.get(BANDWIDTH), data.get(LATENCY), data.get(LANES)
        if not isinstance(bw, (int, float)) or not bw > 0:
            raise TopologyError(f"topology {name!r}: link {u!r} -> {v!r} has bandwidth {bw!r}, must be > 0 GB/s")
        if not isinstance(lat, (int, float)) or not lat >= 0:
            raise TopologyError(f"topology {name!r}: link {u!r} -> {v!r} has latency {lat!r}, must be >= 0 us")
        if not isinstance(lanes, int) or lanes < 1:
            raise TopologyError(f"topology {name!r}: link {u!r} -> {v!r} has lanes {lanes!r}, must be >= 1")
        if not isinstance(data.get(KIND), LinkKind):
            raise TopologyError(f"topology {name!r}: link {u!r} -> {v!r} has kind {data.get(KIND)!r}")
    return len(ranks)
