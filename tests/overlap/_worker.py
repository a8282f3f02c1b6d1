"""One rank of the overlap matrix: every case against a numpy reference built from plain collectives.

Run under mpiexec (or torchrun's variables). Prints ``RESULT rank cases failed`` and one
``FAIL ...`` line per failing case.
"""

from __future__ import annotations

import itertools
import sys

import numpy as np

import synccl
from synccl.overlap import all_gather_matmul, matmul_reduce_scatter


def integer_valued(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Small integers: every product and sum is exact in any order, so results must match bit for bit."""
    return rng.integers(-3, 4, size=shape).astype(dtype)


def gathered(comm: synccl.Communicator, shard: np.ndarray, dim: int) -> np.ndarray:
    """The reference all-gather: the plain collective, then concatenation along ``dim``."""
    every = comm.allgather(np.ascontiguousarray(shard), np.empty((comm.size, *shard.shape), dtype=shard.dtype))
    return np.concatenate(list(every), axis=dim)


def check_gather(comm, rng, shape, dim, dtype, widths, splits, as_torch) -> str | None:
    a = integer_valued(rng, shape, dtype)
    bs = [integer_valued(rng, (shape[-1], n), dtype) for n in widths]
    full = gathered(comm, a, dim)
    expected = [full @ b for b in bs]
    if as_torch:
        import torch

        got_a, got = all_gather_matmul(torch.from_numpy(a), [torch.from_numpy(b) for b in bs], dim, comm=comm, splits=splits)
        got_a, got = got_a.numpy(), [c.numpy() for c in got]
    else:
        got_a, got = all_gather_matmul(a, bs, dim, comm=comm, splits=splits)
    if not np.array_equal(got_a, full):
        return "a_full differs"
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        if g.shape != e.shape or not np.array_equal(g, e):
            return f"result {i} differs: shape {g.shape} vs {e.shape}, max error {np.max(np.abs(g - e)) if g.shape == e.shape else 'n/a'}"
    return None


def check_scatter(comm, rng, shape, dim, dtype, n, splits, op, as_torch) -> str | None:
    a = integer_valued(rng, shape, dtype)
    b = integer_valued(rng, (shape[-1], n), dtype)
    product = a @ b
    total = comm.allreduce(np.ascontiguousarray(product), np.empty_like(product))
    if op == "avg":
        total = total / comm.size if np.issubdtype(total.dtype, np.floating) else total // comm.size
    expected = np.split(total, comm.size, axis=dim)[comm.rank]
    if as_torch:
        import torch

        got = matmul_reduce_scatter(torch.from_numpy(a), torch.from_numpy(b), dim, op=op, comm=comm, splits=splits).numpy()
    else:
        got = matmul_reduce_scatter(a, b, dim, op=op, comm=comm, splits=splits)
    if got.shape != expected.shape or not np.array_equal(got, expected.astype(got.dtype)):
        return f"differs: shape {got.shape} vs {expected.shape}"
    return None


def check_random_floats(comm, rng) -> str | None:
    """Random float32 data: equal to the unfused computation within float tolerance."""
    a = rng.standard_normal((5, 33)).astype(np.float32)
    b = rng.standard_normal((33, 17)).astype(np.float32)
    full = gathered(comm, a, 0)
    _, (c,) = all_gather_matmul(a, [b], 0, comm=comm, splits=2)
    if not np.allclose(c, full @ b, rtol=1e-5, atol=1e-5):
        return "all_gather_matmul float32"
    product = a.repeat(comm.size, axis=0) @ b
    total = comm.allreduce(np.ascontiguousarray(product), np.empty_like(product))
    got = matmul_reduce_scatter(a.repeat(comm.size, axis=0), b, 0, comm=comm)
    if not np.allclose(got, np.split(total, comm.size)[comm.rank], rtol=1e-5, atol=1e-4):
        return "matmul_reduce_scatter float32"
    return None


def main() -> int:
    comm = synccl.init()
    rng = np.random.default_rng(1234)  # the same stream on every rank: shapes agree, data differ by rank below
    data_rng = np.random.default_rng(comm.rank + 1)
    p = comm.size
    cases, failed = 0, 0

    def record(name: str, problem: str | None) -> None:
        nonlocal cases, failed
        cases += 1
        if problem is not None:
            failed += 1
            print(f"FAIL rank {comm.rank} {name}: {problem}", flush=True)

    shapes = [((4, 6), 0), ((1, 3), 0), ((3, 5, 4), 0), ((3, 5, 4), 1), ((2, 7, 3), -2)]
    for (shape, dim), dtype, splits, as_torch in itertools.product(shapes, ["float32", "float64", "int64"], [1, 3], [False, True]):
        widths = [int(w) for w in rng.integers(1, 9, size=1 + int(rng.integers(0, 2)))]
        record(f"all_gather_matmul {shape} dim {dim} {dtype} splits {splits} torch {as_torch}", check_gather(comm, data_rng, shape, dim, dtype, widths, splits, as_torch))
    for (shape, dim), dtype, splits, op, as_torch in itertools.product(
        [((2 * p, 5), 0), ((p, 3, 4), 0), ((3, 2 * p, 4), 1), ((p * 7, 9), 0)], ["float32", "float64", "int64"], [1, 2], ["sum", "avg"], [False, True]
    ):
        record(f"matmul_reduce_scatter {shape} dim {dim} {dtype} splits {splits} {op} torch {as_torch}", check_scatter(comm, data_rng, shape, dim, dtype, 6, splits, op, as_torch))
    record("random float32", check_random_floats(comm, data_rng))
    print(f"RESULT {comm.rank} {cases} {failed}", flush=True)
    comm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
