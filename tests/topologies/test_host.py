"""Host detection and the shared-memory host topology."""

from __future__ import annotations

import itertools

import pytest

from synccl.exceptions import TopologyError
from synccl.topologies import LinkKind, detect_host, get_topology, host_topology, measure_memcpy_bandwidth


def test_detect_host_reports_sane_positive_numbers():
    info = detect_host()
    assert info.hostname
    assert info.cpus >= 1
    assert info.numa_nodes >= 1
    assert info.memory_bytes > 1 << 20
    assert info.shm_total_bytes >= info.shm_free_bytes >= 0


def test_detect_host_without_sysfs_or_shm(tmp_path):
    info = detect_host(shm_path=str(tmp_path / "none"), node_path=str(tmp_path / "none"))
    assert (info.numa_nodes, info.shm_total_bytes, info.shm_free_bytes) == (1, 0, 0)


def test_detect_host_counts_numa_node_directories(tmp_path):
    for name in ("node0", "node1", "possible", "has_cpu"):
        (tmp_path / name).mkdir()
    assert detect_host(node_path=str(tmp_path)).numa_nodes == 2


def test_host_topology_is_a_full_shm_mesh():
    topo = host_topology(4)
    assert topo.name == "host:4" and topo.nhosts == 1
    for u, v in itertools.permutations(range(4), 2):
        assert topo.link(u, v).kind is LinkKind.SHM
    assert get_topology("host:4") == topo


def test_host_topology_options():
    topo = host_topology(2, bandwidth=3.0, latency=0.2, memory_bandwidth=6.0)
    assert (topo.link(0, 1).bandwidth, topo.link(0, 1).latency, topo.memory_bandwidth(1)) == (3.0, 0.2, 6.0)
    assert not list(host_topology(1).links())


@pytest.mark.parametrize("nranks", [0, -2, 2.5, True])
def test_host_topology_rejects_bad_rank_counts(nranks):
    with pytest.raises(TopologyError, match=f"host_topology: nranks must be an integer >= 1, got {nranks!r}"):
        host_topology(nranks)


def test_measure_memcpy_bandwidth_is_positive():
    assert measure_memcpy_bandwidth(nbytes=1 << 20, repeats=2) > 0
    with pytest.raises(TopologyError, match="repeats must be an integer >= 1, got 0"):
        measure_memcpy_bandwidth(repeats=0)
