"""Overlapped vs unfused all-gather + matmul and matmul + reduce-scatter on this machine's CPU runtime.

Run: OMP_NUM_THREADS=1 mpiexec -n 2 python -m synccl.bench.overlap_cpu [--repeat 5] [--iters 10] [--json]

For each shape ``(M, N, K)`` (float32; the Megatron convention of :mod:`synccl.sim._overlap`)
every rank times, in the same job: the collective alone, the matmul alone, the two one after the
other (unfused: ``comm.allgather`` then ``@``; ``@`` then ``comm.reduce_scatter``) and the fused
call (:mod:`synccl.overlap`). A timed sweep is ``--iters`` calls after a barrier; its time is the
slowest rank's. ``--repeat`` sweeps give median and min-max (``synccl.bench.repeat_stats``);
``speedup`` is unfused / overlapped by median and ``worst_speedup`` the unfused run's fastest
sweep over the overlapped run's slowest (above 1 even then: overlap wins in every sweep);
``bound`` is ``(T_matmul + T_collective) / max(T_matmul, T_collective)`` from the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import date

import numpy as np

import synccl
from synccl.bench._report import repeat_stats
from synccl.overlap import all_gather_matmul, matmul_reduce_scatter

SHAPES = ((512, 512, 512), (1024, 1024, 1024), (2048, 1024, 2048), (2048, 2048, 2048))


def timed(comm: synccl.Communicator, run: Callable[[], object], iters: int) -> float:
    """Microseconds per call of ``run`` over ``iters`` calls, the slowest rank's."""
    comm.barrier()
    start = time.perf_counter()
    for _ in range(iters):
        run()
    mine = np.array([(time.perf_counter() - start) / iters * 1e6])
    return float(comm.allreduce(mine, np.empty(1), op="max")[0])


def cases(comm: synccl.Communicator, shape: tuple[int, int, int]) -> dict[str, dict[str, Callable[[], object]]]:
    """Per fused operation: its four variants as callables over fixed buffers."""
    p = comm.size
    m, n, k = shape
    rng = np.random.default_rng(comm.rank)
    # all_gather_matmul: A rows sharded (M/p x K), B column-sharded (K x N/p).
    a_shard = rng.standard_normal((m // p, k), dtype=np.float32)
    b_cols = rng.standard_normal((k, n // p), dtype=np.float32)
    a_full = np.empty((m, k), np.float32)
    # matmul_reduce_scatter: A column-sharded (M x K/p), B row-sharded (K/p x N).
    a_cols = rng.standard_normal((m, k // p), dtype=np.float32)
    b_rows = rng.standard_normal((k // p, n), dtype=np.float32)
    partial = np.empty((m, n), np.float32)
    block = np.empty((m // p, n), np.float32)
    return {
        "all_gather_matmul": {
            "collective": lambda: comm.allgather(a_shard, a_full),
            "matmul": lambda: a_full @ b_cols,
            "unfused": lambda: comm.allgather(a_shard, a_full) @ b_cols,
            "overlapped": lambda: all_gather_matmul(a_shard, [b_cols], 0, comm=comm),
        },
        "matmul_reduce_scatter": {
            "collective": lambda: comm.reduce_scatter(partial, block),
            "matmul": lambda: np.matmul(a_cols, b_rows, out=partial),
            "unfused": lambda: comm.reduce_scatter(np.matmul(a_cols, b_rows, out=partial), block),
            "overlapped": lambda: matmul_reduce_scatter(a_cols, b_rows, 0, comm=comm),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="timed sweeps per variant (default 5)")
    parser.add_argument("--iters", type=int, default=10, help="calls per sweep (default 10)")
    parser.add_argument("--json", action="store_true", help="print only JSON")
    args = parser.parse_args()
    comm = synccl.init()
    records = []
    for shape in SHAPES:
        for kind, variants in cases(comm, shape).items():
            for run in variants.values():  # warm up: prepared calls, page faults, BLAS
                run()
            times: dict[str, list[float]] = {name: [] for name in ("unfused", "overlapped", "collective", "matmul")}
            for _ in range(args.repeat):
                for name in times:  # interleaved: drift on a shared machine hits every variant alike
                    times[name].append(timed(comm, variants[name], args.iters))
            stats = repeat_stats(times)
            compute, collective = stats["matmul"].median_us, stats["collective"].median_us
            records.append(
                {
                    "kind": kind,
                    "shape": list(shape),
                    **{f"{name}_us": {"median": s.median_us, "min": s.min_us, "max": s.max_us} for name, s in stats.items()},
                    "speedup": stats["unfused"].median_us / stats["overlapped"].median_us,
                    "worst_speedup": stats["unfused"].min_us / stats["overlapped"].max_us,
                    "bound": (compute + collective) / max(compute, collective),
                }
            )
    if comm.rank == 0:
        meta = {"date": date.today().isoformat(), "machine": f"{platform.machine()} {os.cpu_count()} cpus", "ranks": comm.size, "omp_threads": os.environ.get("OMP_NUM_THREADS", "unset")}
        if args.json:
            print(json.dumps({"meta": meta, "records": records}, indent=2))
        else:
            print(f"# {meta}")
            print("| op | M,N,K | collective us | matmul us | unfused us (min-max) | overlapped us (min-max) | speedup (worst) | bound |")
            print("|---|---|---|---|---|---|---|---|")
            for r in records:
                u, o = r["unfused_us"], r["overlapped_us"]
                print(
                    f"| {r['kind']} | {','.join(map(str, r['shape']))} | {r['collective_us']['median']:.0f} | {r['matmul_us']['median']:.0f} | "
                    f"{u['median']:.0f} ({u['min']:.0f}-{u['max']:.0f}) | {o['median']:.0f} ({o['min']:.0f}-{o['max']:.0f}) | "
                    f"{r['speedup']:.2f} ({r['worst_speedup']:.2f}) | {r['bound']:.2f} |"
                )
    comm.close()


if __name__ == "__main__":
    main()
