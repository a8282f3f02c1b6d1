"""The matmul time model: calibration, monotonicity, memory-bound products, errors, and the topologies' devices."""

from __future__ import annotations

import itertools
import random

import pytest

from synccl.exceptions import TopologyError
from synccl.sim._compute import (
    DEVICES,
    DeviceSpec,
    device_spec,
    dtype_bytes,
    matmul_efficiency,
    matmul_seconds,
)
from synccl.topologies import dgx_a100, get_topology, list_topologies, load_topology, save_topology

HOPPER = ("H100", "H200", "H800")


# -- calibration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "n", "k", "published_ms"),
    [
        # ByteDance Flux README (2024), TP=8 on H800, bf16, torch (cuBLAS) GEMM-only times per rank.
        (4096, 6144, 12288, 0.846),  # AG+GEMM: (M x K) @ (K x N/8), M=4096 K=12288 N=49152
        (4096, 12288, 6144, 0.818),  # GEMM+RS: (M x K/8) @ (K/8 x N), M=4096 K=49152 N=12288
    ],
)
def test_flux_h800_gemm_times_within_15_percent(m, n, k, published_ms):
    predicted = 1e3 * matmul_seconds("H800", m, n, k, "bf16")
    assert predicted == pytest.approx(published_ms, rel=0.15)


def test_flux_a800_gemm_time_within_15_percent():
    # The A800 is the A100's compute with NVLink cut; Flux's torch GEMM time: 2.438 ms.
    assert 1e3 * matmul_seconds("A100", 4096, 6144, 12288, "bf16") == pytest.approx(2.438, rel=0.15)


@pytest.mark.parametrize("device", HOPPER)
def test_large_bf16_gemm_reaches_70_to_80_percent_on_hopper(device):
    for shape in [(8192, 8192, 8192), (16384, 16384, 16384), (4096, 6144, 12288)]:
        assert 0.70 <= matmul_efficiency(device, *shape, "bf16") <= 0.80, shape


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_efficiency_is_a_fraction_for_every_device_and_dtype(device):
    spec = device_spec(device)
    for dtype in ("bf16", "fp16", "fp32"):
        if (spec.bf16_tflops if dtype == "bf16" else spec.fp16_tflops if dtype == "fp16" else spec.fp32_tflops) is None:
            continue
        large = matmul_efficiency(device, 8192, 8192, 8192, dtype)
        assert 0.3 < large < 0.95
        assert matmul_efficiency(device, 256, 256, 256, dtype) < large


def test_same_compute_same_time_when_compute_bound():
    # H800 and H200 have the H100's compute: a compute-bound product takes the same time on all three.
    times = {d: matmul_seconds(d, 8192, 8192, 8192) for d in HOPPER}
    assert times["H100"] == times["H800"] == times["H200"]


# -- shape of the curve --------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["H100", "A100", "MI300X", "V100"])
def test_monotone_in_m_n_and_k(device):
    dtype = "fp16"
    sizes = [1, 7, 64, 100, 128, 129, 255, 256, 257, 512, 1000, 1024, 3000, 4096, 6144, 8192, 12288]
    for fixed in [(1, 1), (64, 4096), (4096, 4096), (128, 12288), (12288, 6144)]:
        for axis in range(3):
            times = []
            for s in sizes:
                dims = list(fixed)
                dims.insert(axis, s)
                times.append(matmul_seconds(device, *dims, dtype))
            assert all(a <= b for a, b in itertools.pairwise(times)), (device, axis, fixed)


def test_monotone_on_random_pairs():
    rng = random.Random(1234)
    for _ in range(2000):
        base = [rng.randint(1, 20000) for _ in range(3)]
        axis = rng.randrange(3)
        bigger = list(base)
        bigger[axis] += rng.randint(1, 5000)
        device = rng.choice(sorted(DEVICES))
        dtype = "fp16"
        assert matmul_seconds(device, *base, dtype) <= matmul_seconds(device, *bigger, dtype), (device, base, bigger)


def test_skinny_product_is_memory_bound():
    # A decode-like GEMV: 16 tokens through an 8192 x 8192 bf16 weight. Reading the weight once
    # (128 MiB) bounds the time; the model must sit within 30% above that floor.
    spec = device_spec("H100")
    weight_bytes = 8192 * 8192 * dtype_bytes("bf16")
    floor = weight_bytes / (spec.hbm_bandwidth * 1e9)
    t = matmul_seconds("H100", 16, 8192, 8192, "bf16")
    assert floor < t < 1.3 * floor
    assert matmul_efficiency("H100", 16, 8192, 8192, "bf16") < 0.05
    # more HBM bandwidth, same compute: the memory-bound product is faster on the H200
    assert matmul_seconds("H200", 16, 8192, 8192) < 0.8 * t


def test_split_chunks_cost_more_than_the_whole():
    # Cutting the rows into pieces (as overlap does) cannot be cheaper than one product,
    # and pieces too small to fill the GPU cost noticeably more.
    whole = matmul_seconds("H800", 4096, 6144, 12288)
    for pieces in (2, 8, 32):
        parts = pieces * matmul_seconds("H800", 4096 // pieces, 6144, 12288)
        assert parts >= whole
    assert 8 * matmul_seconds("H800", 512, 6144, 12288) > 1.2 * whole


def test_fp32_is_slower_than_bf16():
    assert matmul_seconds("A100", 4096, 4096, 4096, "fp32") > 5 * matmul_seconds("A100", 4096, 4096, 4096, "bf16")


def test_dtype_aliases_and_sizes():
    assert dtype_bytes("bf16") == dtype_bytes("bfloat16") == dtype_bytes("fp16") == dtype_bytes("float16") == dtype_bytes("half") == 2
    assert dtype_bytes("fp32") == dtype_bytes("float32") == 4
    assert matmul_seconds("H100", 512, 512, 512, "bfloat16") == matmul_seconds("H100", 512, 512, 512, "bf16")
    assert matmul_seconds("H100", 512, 512, 512, "half") == matmul_seconds("H100", 512, 512, 512, "fp16")


def test_device_lookup_is_case_insensitive_and_accepts_a_spec():
    assert device_spec("mi300x") is device_spec("MI300X") is DEVICES["MI300X"]
    custom = DeviceSpec("X1", 100.0, 100.0, 10.0, 1000.0, 10, 128, 128, 0.5, "made up")
    assert device_spec(custom) is custom
    assert matmul_seconds(custom, 1024, 1024, 1024) > 0


@pytest.mark.parametrize(
    ("field", "value"), [("fp32_tflops", 0.0), ("hbm_bandwidth", -1.0), ("sms", 0), ("tile_n", 1.5), ("efficiency", 1.2), ("efficiency", 0)]
)
def test_device_spec_checks_its_figures(field, value):
    figures = {
        "bf16_tflops": 100.0,
        "fp16_tflops": 100.0,
        "fp32_tflops": 10.0,
        "hbm_bandwidth": 1000.0,
        "sms": 10,
        "tile_m": 128,
        "tile_n": 128,
    }
    figures.update({"efficiency": 0.5, field: value})
    with pytest.raises(TopologyError, match=rf"^DeviceSpec 'X1': {field} must"):
        DeviceSpec(name="X1", source="made up", **figures)


def test_table_is_frozen():
    with pytest.raises(TypeError):
        DEVICES["B200"] = DEVICES["H100"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        DEVICES["H100"].efficiency = 1.0  # type: ignore[misc]


# -- errors --------------------------------------------------------------------------------------


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_unknown_device_is_one_line_naming_it_and_the_known_ones():
    with pytest.raises(TopologyError) as exc_info:
        matmul_seconds("B200", 128, 128, 128)
    message = _one_line(exc_info)
    assert "'B200'" in message and all(name in message for name in DEVICES)


@pytest.mark.parametrize("dtype", ["int8", "fp8", "", "float64"])
def test_unknown_dtype_is_one_line_naming_it(dtype):
    with pytest.raises(TopologyError) as exc_info:
        matmul_seconds("H100", 128, 128, 128, dtype)
    message = _one_line(exc_info)
    assert message.startswith("matmul_seconds: dtype") and repr(dtype) in message and "bf16" in message
    with pytest.raises(TopologyError, match=r"^dtype_bytes: dtype"):
        dtype_bytes(dtype)


def test_dtype_the_device_lacks():
    with pytest.raises(TopologyError) as exc_info:
        matmul_seconds("V100", 128, 128, 128, "bf16")
    message = _one_line(exc_info)
    assert "'V100'" in message and "bf16" in message and "fp16" in message


@pytest.mark.parametrize(("dims", "bad"), [((0, 1, 1), "m"), ((1, -2, 1), "n"), ((1, 1, 2.5), "k"), ((True, 1, 1), "m")])
def test_bad_dimensions(dims, bad):
    with pytest.raises(TopologyError, match=rf"^matmul_seconds: {bad} must be an integer >= 1"):
        matmul_seconds("H100", *dims)


# -- the topologies' devices ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "device"),
    [
        ("dgx-h100", "H100"),
        ("dgx-h100:2", "H100"),
        ("dgx-h200", "H200"),
        ("hgx-h800", "H800"),
        ("hgx-h800:2", "H800"),
        ("dgx-a100", "A100-40GB"),
        ("dgx-a100:2", "A100-40GB"),
        ("mi300x", "MI300X"),
        ("mi250", "MI250"),
    ],
)
def test_machine_ranks_know_their_device_and_the_model_knows_it(name, device):
    topo = get_topology(name)
    assert {topo.device(r) for r in topo.ranks} == {device}
    assert device_spec(topo.device(0)).name == device


def test_dgx_a100_80gb_is_an_a100():
    assert dgx_a100(memory="80gb").device(0) == "A100"
    assert device_spec("A100").hbm_bandwidth == dgx_a100(memory="80gb").memory_bandwidth(0)


@pytest.mark.parametrize("name", ["ring:4", "fc:4", "torus2d:2x2", "host:2"])
def test_generic_topologies_have_no_device(name):
    topo = get_topology(name)
    assert [topo.device(r) for r in topo.ranks] == [None] * topo.nranks


def test_device_accessor_checks_the_rank():
    with pytest.raises(TopologyError, match="no rank 8"):
        get_topology("dgx-h100").device(8)


def test_device_survives_json_and_subset(tmp_path):
    topo = get_topology("hgx-h800")
    path = tmp_path / "h800.json"
    save_topology(topo, path)
    assert load_topology(path).device(3) == "H800"
    assert topo.subset([5, 2]).device(1) == "H800"


def test_new_catalog_machines():
    names = {info.name for info in list_topologies()}
    assert {"dgx-h200[:N]", "hgx-h800[:N]"} <= names
    h200, h800, h100 = get_topology("dgx-h200"), get_topology("hgx-h800"), get_topology("dgx-h100")
    # H200: the H100's NVSwitch fabric (450 GB/s per direction, 900 bidirectional) and HBM3e 4.8 TB/s
    assert h200.link(0, "nvswitch").bandwidth == h100.link(0, "nvswitch").bandwidth == 450.0
    assert h200.memory_bandwidth(0) == device_spec("H200").hbm_bandwidth == 4800.0
    # H800: NVLink cut to 400 GB/s bidirectional = 200 per direction; otherwise an H100 SXM
    assert h800.link(0, "nvswitch").bandwidth == 200.0
    assert h800.link("nvswitch", 7).bandwidth == 200.0
    assert h800.memory_bandwidth(0) == h100.memory_bandwidth(0) == 3350.0
    assert h800.link(0, "nic0").bandwidth == h100.link(0, "nic0").bandwidth
    assert get_topology("hgx-h800:2").nranks == 16 and get_topology("dgx-h200:2").is_connected()
