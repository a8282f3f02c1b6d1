"""Parse the connectivity matrix printed by ``nvidia-smi topo -m``.

Each ``GPU{i}`` row becomes rank ``i``; every other row (``NIC0``, or ``mlx5_0`` in older
drivers' output) becomes a NIC vertex, named from the "NIC Legend" block when there is one.

NVLink (``NV#``)
    ``#`` bonded NVLinks: a link with ``lanes=#`` and ``# * nvlink_bandwidth`` GB/s.
    When a GPU's counts add up to more than 18 (no GPU has more NVLinks than the H100's
    18) the counts are through NVSwitch, as on DGX-2/A100/H100 (``NV6``/``NV12``/``NV18``
    to every peer): the GPUs are then joined through one ``'nvswitch'`` vertex, each
    with its largest per-peer count as lanes.
PCIe (``PIX``, ``PXB``, ``PHB``, ``NODE``, ``SYS``)
    Rebuilt as a tree of shared vertices rather than direct links, so that devices
    behind one PCIe switch or CPU share its bandwidth. Devices related by ``PIX`` or
    ``PXB`` (no host bridge crossed) hang from one PCIe switch vertex ``'pcie{k}'``;
    devices related by ``PHB`` or ``NODE``, or with the same NUMA Affinity, share one
    CPU vertex ``'cpu{k}'``; CPU vertices are joined pairwise (``SYS``: the SMP
    interconnect). Links to and between PCIe switches and CPUs have ``pcie_bandwidth``,
    links between CPUs ``sys_bandwidth``; each hop takes 0.5 us. A ``NV#`` entry hides
    the pair's PCIe relation; a device with no PCIe entry and no NUMA Affinity gets no
    PCIe links. ``SOC`` (older drivers' name for ``SYS``) is accepted.
Affinity columns
    ``CPU Affinity`` (a string such as ``'0-19,40-59'``), ``NUMA Affinity`` and ``GPU NUMA
    ID`` become the rank attributes :data:`CPU_AFFINITY`, :data:`NUMA_NODE` and
    :data:`GPU_NUMA_ID` (``N/A`` leaves them unset).

nvidia-smi does not report the PCIe generation or the NVLink generation; pass the
bandwidths (GB/s, one direction) that fit the machine.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from synccl.exceptions import TopologyError
from synccl.topologies._nodes import NVLINK_LANE, NVLINK_LATENCY, NVSWITCH_LATENCY, PCIE_GEN4, PCIE_LATENCY, natural_key
from synccl.topologies._topology import DEFAULT_MEMORY_BANDWIDTH, LinkKind, Topology, TopologyBuilder, VertexKind

__all__ = ["CPU_AFFINITY", "NUMA_NODE", "GPU_NUMA_ID", "parse_nvidia_smi_topo"]

#: Rank attribute: the GPU's "CPU Affinity" column, e.g. ``'0-19,40-59'``.
CPU_AFFINITY = "cpu_affinity"
#: Rank attribute: the GPU's "NUMA Affinity" column (an int when it is one number).
NUMA_NODE = "numa_node"
#: Rank attribute: the "GPU NUMA ID" column (set on machines where the GPU is a NUMA node).
GPU_NUMA_ID = "gpu_numa_id"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GPU = re.compile(r"GPU(\d+)$")
_NV = re.compile(r"NV([1-9]\d*)$")
_LEGEND_ENTRY = re.compile(r"(NIC\d+)\s*:\s*(\S+)$")
_PCIE_LEVEL = {"PIX": 1, "PXB": 2, "PHB": 3, "NODE": 4, "SYS": 5, "SOC": 5}
_SWITCH_LEVEL = 2  # PIX, PXB: below one host bridge
_CPU_LEVEL = 4  # PHB, NODE: within one NUMA node
_TRAILING = {"CPU Affinity": CPU_AFFINITY, "NUMA Affinity": NUMA_NODE, "GPU NUMA ID": GPU_NUMA_ID}
_NUMA_COLUMN = "NUMA Affinity"
_MAX_DIRECT_NVLINKS = 18
_HOP_LATENCY = PCIE_LATENCY / 2
_SYS_BANDWIDTH = 20.0  # about one UPI link (10.4 GT/s: ~20.8 GB/s per direction)


@dataclass
class _Matrix:
    """The matrix as read: labels in column order, each row's entries and trailing values."""

    labels: list[str]
    entries: dict[str, list[str]] = field(default_factory=dict)
    extras: dict[str, dict[str, str]] = field(default_factory=dict)
    line_of: dict[str, int] = field(default_factory=dict)
    nic_names: dict[str, str] = field(default_factory=dict)

    def entry(self, row: str, col: str) -> str:
        return self.entries[row][self.labels.index(col)]


def parse_nvidia_smi_topo(
    text: str,
    *,
    nvlink_bandwidth: float = NVLINK_LANE,
    pcie_bandwidth: float = PCIE_GEN4,
    sys_bandwidth: float = _SYS_BANDWIDTH,
    nvswitch: bool | None = None,
    pcie: bool = True,
    memory_bandwidth: float = DEFAULT_MEMORY_BANDWIDTH,
    name: str = "nvidia-smi",
) -> Topology:
    """Build a topology from the text printed by ``nvidia-smi topo -m``.

    Parameters
    ----------
    text : str
        The command's output; lines before the matrix header and the legends after it
        are allowed, and terminal escape codes are ignored.
    nvlink_bandwidth : float, optional
        GB/s per NVLink per direction (25 for NVLink 2, 3 and 4; 20 for NVLink 1).
    pcie_bandwidth : float, optional
        GB/s of each PCIe link (default PCIe Gen4 x16, 31.5).
    sys_bandwidth : float, optional
        GB/s between two CPUs (default 20, about one UPI link).
    nvswitch : bool, optional
        Whether the NV# counts go through NVSwitch; by default, when some GPU's counts
        add up to more than 18.
    pcie : bool, optional
        Whether to add the PCIe tree (``False`` keeps only NVLink, like SCCL's
        ``nvlink_only``).
    memory_bandwidth : float, optional
        Each GPU's memory bandwidth (GB/s), which the output does not show.
    name : str, optional
        The topology's name.

    Returns
    -------
    Topology

    Raises
    ------
    TopologyError
        If the text is not such a matrix; the message names the line and the token.

    Examples
    --------
    >>> text = '''
    ...         GPU0    GPU1    CPU Affinity    NUMA Affinity
    ... GPU0     X      NV4     0-15            0
    ... GPU1    NV4      X      0-15            0
    ... '''
    >>> t = parse_nvidia_smi_topo(text)
    >>> t.link(0, 1).lanes, t.link(0, 1).bandwidth, t.graph.nodes[1]["cpu_affinity"]
    (4, 100.0, '0-15')
    """
    matrix = _read(text)
    gpus = _gpu_ranks(matrix)
    b = TopologyBuilder()
    for label in sorted(gpus, key=gpus.__getitem__):
        b.add_rank(memory_bandwidth=memory_bandwidth, **_affinity(matrix.extras.get(label, {})))
    vertex: dict[str, int | str] = dict(gpus)
    for label in matrix.labels:
        if label not in gpus:
            vertex[label] = b.add_switch(matrix.nic_names.get(label, label), kind=VertexKind.NIC)

    nvlinks = _nvlinks(matrix, gpus)
    totals = {g: sum(n for pair, n in nvlinks.items() if g in pair) for g in gpus}
    switched = any(t > _MAX_DIRECT_NVLINKS for t in totals.values()) if nvswitch is None else nvswitch
    if switched and nvlinks:
        b.add_switch("nvswitch")
        for g in sorted(gpus, key=gpus.__getitem__):
            lanes = max((n for pair, n in nvlinks.items() if g in pair), default=0)
            if lanes:
                bandwidth = lanes * nvlink_bandwidth
                b.add_link(gpus[g], "nvswitch", bandwidth=bandwidth, latency=NVSWITCH_LATENCY, kind=LinkKind.NVSWITCH, lanes=lanes)
    else:
        for (u, v), n in nvlinks.items():
            b.add_link(gpus[u], gpus[v], bandwidth=n * nvlink_bandwidth, latency=NVLINK_LATENCY, kind=LinkKind.NVLINK, lanes=n)
    if pcie:
        _add_pcie_tree(b, matrix, vertex, pcie_bandwidth, sys_bandwidth)

    nics = len(matrix.labels) - len(gpus)
    through = ", through NVSwitch" if switched and nvlinks else ""
    description = f"parsed from 'nvidia-smi topo -m': {len(gpus)} GPUs, {nics} NICs; NV# = # x {nvlink_bandwidth:g} GB/s{through}"
    return b.build(name, description=description)


def _error(message: str) -> TopologyError:
    return TopologyError(f"parse_nvidia_smi_topo: {message}")


def _read(text: str) -> _Matrix:
    lines = [_ANSI.sub("", line).rstrip() for line in text.splitlines()]
    start = next((i for i, line in enumerate(lines) if _is_header(line.split())), None)
    if start is None:
        raise _error("no header line starting with 'GPU0' found; expected the output of 'nvidia-smi topo -m'")
    labels, trailing = _header(lines[start].split(), start + 1)
    matrix = _Matrix(labels)
    for offset, label in enumerate(labels, start=1):
        number = start + offset + 1
        tokens = lines[start + offset].split() if start + offset < len(lines) else []
        if not tokens or tokens[0] != label:
            got = tokens[0] if tokens else "a blank line or the end of input"
            raise _error(f"line {number}: expected the row of {label!r}, got {got!r}")
        if len(tokens) - 1 not in (len(labels), len(labels) + len(trailing)):
            values = f" plus {len(trailing)} ({', '.join(trailing)})" if trailing else ""
            raise _error(f"line {number}: row {label!r} has {len(tokens) - 1} values, expected {len(labels)} matrix entries{values}")
        matrix.entries[label] = tokens[1 : len(labels) + 1]
        matrix.extras[label] = dict(zip(trailing, tokens[len(labels) + 1 :], strict=False))
        matrix.line_of[label] = number
        for col, entry in zip(labels, matrix.entries[label], strict=True):
            _check_entry(number, label, col, entry)
    _check_symmetric(matrix)
    matrix.nic_names = _nic_legend(lines[start + len(labels) + 1 :])
    return matrix


def _is_header(tokens: list[str]) -> bool:
    return bool(tokens) and _GPU.match(tokens[0]) is not None and "X" not in tokens


def _header(tokens: list[str], number: int) -> tuple[list[str], list[str]]:
    labels: list[str] = []
    trailing: list[str] = []
    i = 0
    while i < len(tokens):
        phrase = next((p for p in _TRAILING if tokens[i : i + len(p.split())] == p.split()), None)
        if phrase is not None:
            trailing.append(phrase)
            i += len(phrase.split())
            continue
        if trailing:
            raise _error(f"line {number}: unexpected header token {tokens[i]!r} after {trailing[-1]!r}")
        if tokens[i] in labels:
            raise _error(f"line {number}: column {tokens[i]!r} appears twice")
        labels.append(tokens[i])
        i += 1
    return labels, trailing


def _check_entry(number: int, row: str, col: str, entry: str) -> None:
    if row == col:
        if entry != "X":
            raise _error(f"line {number}: row {row!r}, column {col!r}: expected 'X' on the diagonal, got {entry!r}")
    elif entry not in _PCIE_LEVEL and _NV.match(entry) is None:
        raise _error(f"line {number}: row {row!r}, column {col!r}: unknown entry {entry!r} (expected NV#, PIX, PXB, PHB, NODE or SYS)")


def _check_symmetric(matrix: _Matrix) -> None:
    for a, b in itertools.combinations(matrix.labels, 2):
        ab, ba = matrix.entry(a, b), matrix.entry(b, a)
        if ab != ba:
            raise _error(
                f"line {matrix.line_of[b]}: row {b!r}, column {a!r} is {ba!r} "
                f"but line {matrix.line_of[a]}: row {a!r}, column {b!r} is {ab!r}"
            )


def _nic_legend(lines: list[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    in_legend = False
    for line in lines:
        stripped = line.strip()
        if stripped == "NIC Legend:":
            in_legend = True
        elif in_legend and (match := _LEGEND_ENTRY.match(stripped)):
            names[match.group(1)] = match.group(2)
    return names


def _gpu_ranks(matrix: _Matrix) -> dict[str, int]:
    gpus = {label: int(m.group(1)) for label in matrix.labels if (m := _GPU.match(label))}
    if sorted(gpus.values()) != list(range(len(gpus))) or any(label != f"GPU{i}" for label, i in gpus.items()):
        raise _error(f"GPU columns must be GPU0..GPU{len(gpus) - 1}, got {sorted(gpus, key=natural_key)!r}")
    return gpus


def _affinity(extras: dict[str, str]) -> dict[str, int | str]:
    attrs: dict[str, int | str] = {}
    for phrase, value in extras.items():
        if value != "N/A":
            attrs[_TRAILING[phrase]] = int(value) if value.isdigit() else value
    return attrs


def _nvlinks(matrix: _Matrix, gpus: dict[str, int]) -> dict[tuple[str, str], int]:
    links = {}
    for a, b in itertools.combinations(matrix.labels, 2):
        match = _NV.match(matrix.entry(a, b))
        if match is None:
            continue
        if a not in gpus or b not in gpus:
            raise _error(f"line {matrix.line_of[a]}: row {a!r}, column {b!r}: NVLink {match.group(0)!r} to a device that is not a GPU")
        links[a, b] = int(match.group(1))
    return links


def _add_pcie_tree(
    b: TopologyBuilder,
    matrix: _Matrix,
    vertex: dict[str, int | str],
    pcie_bandwidth: float,
    sys_bandwidth: float,
) -> None:
    labels = matrix.labels
    levels = {}
    for a, c in itertools.combinations(labels, 2):
        level = _PCIE_LEVEL.get(matrix.entry(a, c))
        if level is not None:
            levels[a, c] = level
    numa = {label: extras[_NUMA_COLUMN] for label, extras in matrix.extras.items() if extras.get(_NUMA_COLUMN, "N/A") != "N/A"}
    informed = {label for pair in levels for label in pair} | set(numa)

    switch_of = _components(labels, [pair for pair, level in levels.items() if level <= _SWITCH_LEVEL])
    same_numa = [(a, c) for a, c in itertools.combinations(sorted(numa, key=labels.index), 2) if numa[a] == numa[c]]
    cpu_of = _components(labels, [pair for pair, level in levels.items() if level <= _CPU_LEVEL] + same_numa)

    cpu_names: dict[int, str] = {}
    switch_names: dict[int, str] = {}
    for label in labels:
        if label not in informed:
            continue
        if cpu_of[label] not in cpu_names:
            cpu_names[cpu_of[label]] = b.add_switch(f"cpu{len(cpu_names)}")
        cpu = cpu_names[cpu_of[label]]
        group = switch_of[label]
        if sum(1 for other in labels if switch_of[other] == group) < 2:
            b.add_link(vertex[label], cpu, bandwidth=pcie_bandwidth, latency=_HOP_LATENCY, kind=LinkKind.PCIE)
            continue
        if group not in switch_names:
            switch_names[group] = b.add_switch(f"pcie{len(switch_names)}")
            b.add_link(switch_names[group], cpu, bandwidth=pcie_bandwidth, latency=_HOP_LATENCY, kind=LinkKind.PCIE)
        b.add_link(vertex[label], switch_names[group], bandwidth=pcie_bandwidth, latency=_HOP_LATENCY, kind=LinkKind.PCIE)
    for u, v in itertools.combinations(cpu_names.values(), 2):
        b.add_link(u, v, bandwidth=sys_bandwidth, latency=_HOP_LATENCY, kind=LinkKind.PCIE)


def _components(labels: list[str], pairs: list[tuple[str, str]]) -> dict[str, int]:
    """Connected components of ``pairs`` over ``labels``: label -> index of its component's first label."""
    parent = {label: label for label in labels}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, c in pairs:
        ra, rc = root(a), root(c)
        if ra != rc:
            first, second = sorted((ra, rc), key=labels.index)
            parent[second] = first
    return {label: labels.index(root(label)) for label in labels}
