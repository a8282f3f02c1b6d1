"""The machine this process runs on, and the topology of CPU ranks sharing it.

:func:`host_topology` joins ``n`` ranks on one host by shared-memory (``shm``) links. Its
default rates were measured once, not at import: a single-threaded large copy
(:func:`measure_memcpy_bandwidth`, 256 MiB with numpy) ran at about 16 GB/s on the
project's 2-core CI machine, so each rank's memory bandwidth defaults to 16 GB/s, and a
``shm`` link to 8 GB/s, because a message through ``/dev/shm`` is copied twice (into the
shared buffer and out of it). The 1 us link latency is an order-of-magnitude figure for a
shared-memory handoff between processes on different cores. Pass measured values to
model another machine.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass

import numpy as np

from synccl.exceptions import TopologyError
from synccl.topologies._topology import LinkKind, Topology, TopologyBuilder

__all__ = ["HostInfo", "detect_host", "host_topology", "measure_memcpy_bandwidth"]

_MEMCPY_BANDWIDTH = 16.0
_SHM_BANDWIDTH = _MEMCPY_BANDWIDTH / 2
_SHM_LATENCY = 1.0
_NODE_DIR = re.compile(r"node\d+$")


@dataclass(frozen=True, slots=True)
class HostInfo:
    """What :func:`detect_host` found.

    Attributes
    ----------
    hostname : str
    cpus : int
        CPUs this process may run on (its affinity mask).
    numa_nodes : int
        NUMA nodes (1 where the system does not report any).
    memory_bytes : int
        Physical memory.
    shm_total_bytes, shm_free_bytes : int
        Size and free space of ``/dev/shm`` (0 where there is none).
    """

    hostname: str
    cpus: int
    numa_nodes: int
    memory_bytes: int
    shm_total_bytes: int
    shm_free_bytes: int


def detect_host(
    *,
    shm_path: str = "/dev/shm",  # noqa: S108 - measured with statvfs, not written to
    node_path: str = "/sys/devices/system/node",
) -> HostInfo:
    """Describe the machine this process runs on.

    Parameters
    ----------
    shm_path : str, optional
        The shared-memory file system to measure.
    node_path : str, optional
        Where the kernel lists NUMA nodes (``node0``, ``node1``, ...).

    Returns
    -------
    HostInfo

    Examples
    --------
    >>> info = detect_host()
    >>> info.cpus >= 1 and info.numa_nodes >= 1
    True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        numa_nodes = sum(1 for entry in os.listdir(node_path) if _NODE_DIR.match(entry))
    except OSError:
        numa_nodes = 0
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 0
    try:
        fs = os.statvfs(shm_path)
        shm_total, shm_free = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
    except OSError:
        shm_total = shm_free = 0
    return HostInfo(
        hostname=socket.gethostname(),
        cpus=cpus,
        numa_nodes=max(numa_nodes, 1),
        memory_bytes=memory,
        shm_total_bytes=shm_total,
        shm_free_bytes=shm_free,
    )


def host_topology(
    nranks: int,
    *,
    bandwidth: float = _SHM_BANDWIDTH,
    latency: float = _SHM_LATENCY,
    memory_bandwidth: float = _MEMCPY_BANDWIDTH,
) -> Topology:
    """``nranks`` CPU ranks on one host, every pair joined by a ``shm`` link.

    Parameters
    ----------
    nranks : int
        Number of ranks, at least 1.
    bandwidth : float, optional
        GB/s of each shm link (default 8, see the module documentation).
    latency : float, optional
        Microseconds per shm link.
    memory_bandwidth : float, optional
        Each rank's local copy bandwidth (default 16 GB/s).

    Returns
    -------
    Topology
        Named ``'host:{nranks}'``.

    Raises
    ------
    TopologyError
        If ``nranks`` is not a positive integer.

    Examples
    --------
    >>> t = host_topology(4)
    >>> t.name, t.link(0, 3).kind.value
    ('host:4', 'shm')
    """
    if not isinstance(nranks, int) or isinstance(nranks, bool) or nranks < 1:
        raise TopologyError(f"host_topology: nranks must be an integer >= 1, got {nranks!r}")
    b = TopologyBuilder()
    for _ in range(nranks):
        b.add_rank(memory_bandwidth=memory_bandwidth)
    for u in range(nranks):
        for v in range(u + 1, nranks):
            b.add_link(u, v, bandwidth=bandwidth, latency=latency, kind=LinkKind.SHM)
    return b.build(f"host:{nranks}", description=f"{nranks} CPU ranks on one host, shared-memory links of {bandwidth:g} GB/s")


def measure_memcpy_bandwidth(*, nbytes: int = 256 << 20, repeats: int = 5) -> float:
    """Measure this machine's single-threaded copy bandwidth (GB/s) with numpy.

    Copies ``nbytes`` between two arrays ``repeats`` times and reports the best run.

    Parameters
    ----------
    nbytes : int, optional
        Bytes per copy (large, to defeat the caches).
    repeats : int, optional
        Number of timed copies.

    Returns
    -------
    float
        Bytes copied per second, in GB/s.

    Raises
    ------
    TopologyError
        If ``nbytes`` or ``repeats`` is not a positive integer.

    Examples
    --------
    >>> measure_memcpy_bandwidth(nbytes=1 << 20, repeats=2) > 0
    True
    """
    for field, value in (("nbytes", nbytes), ("repeats", repeats)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TopologyError(f"measure_memcpy_bandwidth: {field} must be an integer >= 1, got {value!r}")
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch every page before timing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return nbytes / max(best, 1e-9) / 1e9
