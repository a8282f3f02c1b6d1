"""The overlap cost model: invariants, and its predictions against the speedups Flux published.

Flux (bytedance/flux README at commit 775e061, TP=8, bf16, M=4096, K=12288, N=49152; times in ms,
torch = GEMM then NCCL, flux = the fused kernel). A800 is A100 compute with H800's 400 GB/s NVLink,
so it is modelled as the hgx-h800 fabric with device A100.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from synccl.exceptions import CollectiveError, TopologyError
from synccl.sim import FUSIONS, estimate_overlap, ring_order
from synccl.topologies import get_topology

# (kind, (M, N, K) in our convention, device, torch ms, flux ms)
FLUX = [
    ("all_gather_matmul", (4096, 49152, 12288), "H800", 1.429, 0.957),
    ("matmul_reduce_scatter", (4096, 12288, 49152), "H800", 1.408, 0.932),
    ("all_gather_matmul", (4096, 49152, 12288), "A100", 3.099, 2.469),
    ("matmul_reduce_scatter", (4096, 12288, 49152), "A100", 3.100, 2.508),
]


@pytest.mark.parametrize("kind, shape, device, torch_ms, flux_ms", FLUX, ids=[f"{k}-{d}" for k, _, d, _, _ in FLUX])
def test_predicted_speedup_is_within_20_percent_of_flux_and_never_above_the_bound(kind, shape, device, torch_ms, flux_ms):
    estimate = estimate_overlap(kind, get_topology("hgx-h800"), shape, "bf16", device=device, fusion="kernel")
    published = torch_ms / flux_ms
    assert abs(estimate.speedup / published - 1) <= 0.20, (estimate.speedup, published)
    assert estimate.speedup <= estimate.bound + 1e-9


@pytest.mark.parametrize("kind", ["all_gather_matmul", "matmul_reduce_scatter"])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_overlap_is_bounded_by_the_slower_of_compute_and_transfers(kind, fusion):
    e = estimate_overlap(kind, get_topology("dgx-h100"), (8192, 8192, 8192), "bf16", fusion=fusion)
    assert max(e.compute_us, e.comm_us) <= e.overlapped_us + 1e-6
    assert e.unfused_us == pytest.approx(e.compute_us + e.comm_us)
    assert e.speedup <= e.bound + 1e-9 and e.splits in (1, 2, 4, 8)


def test_a_matmul_per_block_costs_more_than_one_fused_kernel():
    topo = get_topology("hgx-h800")
    blocks = estimate_overlap("all_gather_matmul", topo, (4096, 49152, 12288), splits=4, fusion="blocks")
    kernel = estimate_overlap("all_gather_matmul", topo, (4096, 49152, 12288), splits=4, fusion="kernel")
    assert blocks.overlapped_us > kernel.overlapped_us and blocks.splits == kernel.splits == 4


def test_the_chosen_splits_is_the_fastest_of_the_choices():
    topo = get_topology("dgx-h100")
    best = estimate_overlap("matmul_reduce_scatter", topo, (8192, 8192, 28672), "bf16")
    for splits in (1, 2, 4, 8):
        assert best.overlapped_us <= estimate_overlap("matmul_reduce_scatter", topo, (8192, 8192, 28672), "bf16", splits=splits).overlapped_us + 1e-9


def test_ring_order_follows_direct_links():
    assert ring_order(get_topology("ring:5")) == (0, 1, 2, 3, 4)
    order = ring_order(get_topology("torus2d:3x3"))
    assert sorted(order) == list(range(9)) and order[0] == 0


@pytest.mark.parametrize(
    "call, error, fragment",
    [
        (lambda: estimate_overlap("all_reduce_matmul", get_topology("dgx-h100"), (8, 8, 8)), CollectiveError, "kind must be one of"),
        (lambda: estimate_overlap("all_gather_matmul", get_topology("dgx-h100"), (12, 8, 8)), CollectiveError, "divisible by 8"),
        (lambda: estimate_overlap("all_gather_matmul", get_topology("dgx-h100"), (8, 8)), CollectiveError, "three integers"),
        (lambda: estimate_overlap("all_gather_matmul", get_topology("ring:4"), (8, 8, 8)), TopologyError, "names no device type"),
        (lambda: estimate_overlap("all_gather_matmul", get_topology("dgx-h100"), (8, 8, 8), fusion="tiles"), CollectiveError, "fusion must be one of"),
        (lambda: estimate_overlap("all_gather_matmul", get_topology("dgx-h100"), (8, 8, 8), splits=0), CollectiveError, "splits must be"),
    ],
)
def test_bad_arguments_are_one_line(call, error, fragment):
    with pytest.raises(error, match=fragment) as err:
        call()
    assert "\n" not in str(err.value)


def test_cli_prints_only_json_with_every_field():
    argv = ["-m", "synccl", "sim", "--overlap", "all_gather_matmul", "--topology", "dgx-h100", "--shape", "4096,49152,12288", "--dtype", "bf16", "--json"]
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout)
    assert {"unfused_us", "overlapped_us", "speedup", "splits", "bound"} <= set(record)
    assert record["speedup"] == pytest.approx(record["unfused_us"] / record["overlapped_us"])


def test_cli_refuses_overlap_flags_without_overlap():
    done = subprocess.run([sys.executable, "-m", "synccl", "sim", "-t", "ring:4", "-c", "all_gather", "--shape", "8,8,8"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0 and "--shape need --overlap" in done.stderr
