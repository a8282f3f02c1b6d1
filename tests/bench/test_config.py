"""Options, sizes and buffer layouts in nccl-tests' convention; test data and the #wrong count."""

import numpy as np
import pytest

from synccl.bench import COLLECTIVES, BenchConfig, count_wrong, expected_output, layout, nccl_type_name, parse_dtype, rank_input
from synccl.collectives import Collective
from synccl.sim import busbw_factor


def test_sizes_follow_nccl_tests_b_e_f():
    assert BenchConfig("allreduce", min_bytes=8, max_bytes=256 << 20).sizes[-1] == 256 << 20
    assert BenchConfig("allreduce", min_bytes=4096, max_bytes=64 << 20, factor=4).sizes == tuple(4096 * 4**i for i in range(8))
    assert BenchConfig("allreduce", min_bytes=4096, max_bytes=5000).sizes == (4096,)


@pytest.mark.parametrize("name", ["allreduce", "all_reduce", "AllGather", "reduce-scatter", "alltoall", "broadcast"])
def test_collective_spellings(name):
    assert BenchConfig(name).collective in COLLECTIVES


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"collective": "gather"}, "cannot benchmark"),
        ({"collective": "all_reduce", "op": "mulsum"}, "unknown op"),
        ({"collective": "all_reduce", "dtype": "uint8"}, "unknown data type"),
        ({"collective": "all_reduce", "backends": ("nvshmem",)}, "backends"),
        ({"collective": "all_reduce", "backends": ("nccl",)}, "backend 'nccl' runs on GPU buffers; add --device cuda"),
        ({"collective": "all_reduce", "device": "rocm"}, "unknown device 'rocm'; valid: cpu, cuda"),
        ({"collective": "all_reduce", "device": "cuda", "backends": ("synccl", "mpi")}, "backend 'mpi' runs on host buffers; with --device cuda use synccl, torch-synccl, nccl"),
        ({"collective": "all_reduce", "device": "cuda", "registered": True}, "--registered .* does not apply to --device cuda"),
        ({"collective": "all_reduce", "backends": ("mpi", "mpi")}, "backends"),
        ({"collective": "all_reduce", "iters": 0}, "iters"),
        ({"collective": "all_reduce", "repeat": 0}, r"--repeat must be >= 1, got 0"),
        ({"collective": "all_reduce", "algorithm": "bruck"}, "no algorithm 'bruck' for all_reduce"),
        ({"collective": "all_reduce", "min_bytes": 64, "max_bytes": 8}, "size_range"),
    ],
)
def test_bad_options_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BenchConfig(**kwargs)


@pytest.mark.parametrize(("name", "numpy_name", "nccl"), [("float", "float32", "float"), ("half", "float16", "half"), ("double", "float64", "double"), ("bf16", "bfloat16", "bfloat16"), ("int64", "int64", "int64"), ("float32", "float32", "float")])
def test_dtype_names(name, numpy_name, nccl):
    dtype = parse_dtype(name)
    assert dtype.name == numpy_name and nccl_type_name(dtype) == nccl


@pytest.mark.parametrize(
    ("collective", "count", "send", "recv", "size"),
    [
        (Collective.ALL_REDUCE, 1 << 20, 1 << 20, 1 << 20, 4 << 20),
        (Collective.BROADCAST, 1 << 20, 1 << 20, 1 << 20, 4 << 20),
        (Collective.ALL_GATHER, 1 << 18, 1 << 18, 1 << 20, 4 << 20),
        (Collective.REDUCE_SCATTER, 1 << 18, 1 << 20, 1 << 18, 4 << 20),
        (Collective.ALL_TO_ALL, 1 << 18, 1 << 20, 1 << 20, 4 << 20),
    ],
)
def test_layout_size_convention(collective, count, send, recv, size):
    lay = layout(collective, 4 << 20, 4, 4)
    assert (lay.count, lay.send_count, lay.recv_count, lay.size_bytes) == (count, send, recv, size)


def test_layout_rounds_blocks_to_16_bytes_like_nccl_tests():
    lay = layout(Collective.ALL_GATHER, 100, 3, 4)  # 25 elements / 3 ranks = 8, already a multiple of 4
    assert (lay.count, lay.size_bytes) == (8, 96)
    assert layout(Collective.ALL_TO_ALL, 40, 2, 1).count == 16  # 20 bytes per rank -> 16


def test_inplace_slots():
    lay = layout(Collective.ALL_GATHER, 64, 4, 4)
    assert lay.input_slot(2) == slice(8, 12) and lay.output_slot(2) == slice(0, 16)
    lay = layout(Collective.REDUCE_SCATTER, 64, 4, 4)
    assert lay.input_slot(2) == slice(0, 16) and lay.output_slot(2) == slice(8, 12)


def test_busbw_factors_used_are_nccl_tests():
    assert busbw_factor("all_reduce", 8) == 2 * 7 / 8 and busbw_factor("all_to_all", 8) == 7 / 8 and busbw_factor("broadcast", 8) == 1


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int8"])
@pytest.mark.parametrize("op", ["sum", "prod", "min", "max", "avg"])
def test_reference_of_test_data_is_exact_in_narrow_types(dtype, op):
    np_dtype = parse_dtype(dtype)
    lay = layout(Collective.ALL_REDUCE, 4096, 8, np_dtype.itemsize)
    want = expected_output(lay, 3, np_dtype, op, 0)
    exact = expected_output(layout(Collective.ALL_REDUCE, lay.count * 8, 8, 8), 3, np.dtype(np.float64), op, 0)
    if op == "avg" and dtype == "int8":
        exact = np.floor(exact)
    assert want.dtype == np_dtype and np.array_equal(want.astype(np.float64), exact)


def test_movement_data_tells_ranks_apart():
    lay = layout(Collective.ALL_GATHER, 4096, 4, 4)
    assert len({rank_input(lay, r, np.dtype(np.float32), "sum").tobytes() for r in range(4)}) == 4


def test_count_wrong_tolerates_rounding_only_in_float_reductions():
    want = np.array([100.0, 200.0, 300.0], np.float16)
    got = np.array([100.5, 200.0, 330.0], np.float16)
    assert count_wrong(got, want, op="sum", reduces=True) == 1
    assert count_wrong(got, want, op="max", reduces=True) == 2
    assert count_wrong(got, want, op="sum", reduces=False) == 2
    assert count_wrong(np.array([1, 2], np.int32), np.array([1, 3], np.int32), op="sum", reduces=True) == 1
    with pytest.raises(ValueError, match="shape"):
        count_wrong(np.zeros(2), np.zeros(3), op="sum", reduces=True)
