"""Worker run on every rank (under mpiexec or torchrun): every collective against the numpy oracle.

Usage: python _matrix.py [quick|full]. Prints one line "RESULT <rank> <cases> <failures>" and
the first failures; exits 1 on any failure.
"""

from __future__ import annotations

import sys
import traceback

import ml_dtypes
import numpy as np

import synccl
from synccl.bench._apply import call_collective
from synccl.collectives import expected_outputs, library

DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.int8, np.int32, np.int64]
OPS = ["sum", "prod", "min", "max", "avg"]


def data(seed: int, rank: int, count: int, dtype) -> np.ndarray:
    rng = np.random.default_rng([seed, rank])
    if np.issubdtype(np.dtype(dtype), np.integer):
        return rng.integers(-3, 4, size=count).astype(dtype)
    return rng.integers(-3, 4, size=count).astype(np.float32).astype(dtype)  # exact in every float type


def close(got: np.ndarray, want: np.ndarray, dtype) -> bool:
    if np.issubdtype(np.dtype(dtype), np.integer):
        return np.array_equal(got, want)
    return np.allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=1e-2, atol=1e-2)


class Runner:
    def __init__(self, comm: synccl.Communicator) -> None:
        self.comm = comm
        self.cases = 0
        self.failures: list[str] = []
        self.seed = 0

    def check(self, name: str, collective: str, count: int, dtype, *, op: str = "sum", algorithm: str | None = None, inplace: bool = False, root: int = 0, registered: bool = False) -> None:
        comm, n, r = self.comm, self.comm.size, self.comm.rank
        self.seed += 1
        self.cases += 1
        split = collective in ("reduce_scatter", "all_to_all", "scatter")
        size = count * n if split else count
        inputs = [data(self.seed, k, size, dtype) for k in range(n)]
        want = expected_outputs(collective, inputs, op=op, root=root)[r]
        mine = inputs[r].copy()
        if registered:
            buf = comm.empty(mine.size, mine.dtype)
            buf[:] = mine
            mine = buf
        try:
            got = self._call(collective, mine, count, dtype, op, algorithm, inplace, root, registered)
            if want is not None and not close(got, want, dtype):
                self.failures.append(f"{name}: rank {r} got {got[:6]} want {want[:6]}")
        except Exception:  # noqa: BLE001 - report every failure with its case
            self.failures.append(f"{name}: rank {r} raised {traceback.format_exc(limit=3)}")

    def _call(self, collective, mine, count, dtype, op, algorithm, inplace, root, registered):
        comm = self.comm
        alloc = (lambda k: comm.empty(k, mine.dtype)) if registered else (lambda k: np.empty(k, mine.dtype))
        return call_collective(comm, alloc, collective, mine, count, op=op, inplace=inplace, root=root, algorithm=algorithm)


def main(mode: str) -> int:
    comm = synccl.init(timeout_s=60)
    run = Runner(comm)
    n = comm.size
    local = comm.local_size
    collectives = ["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "reduce", "gather", "scatter"]
    sizes = [0, 1, 7, 1000] if mode == "quick" else [0, 1, 7, 1001, 3 << 18]
    # Every library algorithm that applies, in and out of place, at every size (float32 sum).
    for coll in collectives:
        for info in library.applicable(coll, n, local_size=local):
            for count in sizes:
                for inplace in (False, True):
                    if coll in ("gather", "scatter") and inplace:
                        continue
                    root = (count + 1) % n
                    run.check(f"{coll}/{info.name}/{count}/{'in' if inplace else 'out'}", coll, count, np.float32, algorithm=info.name, inplace=inplace, root=root)
    # Every dtype x op with the default algorithms.
    for dtype in DTYPES:
        for op in OPS:
            for coll in ("all_reduce", "reduce_scatter", "reduce"):
                run.check(f"{coll}/{np.dtype(dtype).name}/{op}", coll, 33, dtype, op=op)
        for coll in ("all_gather", "all_to_all", "broadcast"):
            run.check(f"{coll}/{np.dtype(dtype).name}", coll, 33, dtype)
    # Registered buffers (zero copy) for the main collectives, small and several MiB.
    for coll in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all"):
        for count in (100, 1 << 20):
            run.check(f"{coll}/registered/{count}", coll, count, np.float32, registered=True)
    # Uneven all-to-allv.
    run.cases += 1
    send_counts = [(comm.rank + j) % 3 for j in range(n)]
    recv_counts = [(i + comm.rank) % 3 for i in range(n)]
    send = np.concatenate([np.full(c, comm.rank * 100 + j, np.int32) for j, c in enumerate(send_counts)]) if sum(send_counts) else np.empty(0, np.int32)
    recv = np.empty(sum(recv_counts), np.int32)
    comm.alltoallv(send, send_counts, recv, recv_counts)
    want = np.concatenate([np.full(c, i * 100 + comm.rank, np.int32) for i, c in enumerate(recv_counts)]) if sum(recv_counts) else np.empty(0, np.int32)
    if not np.array_equal(recv, want):
        run.failures.append(f"alltoallv: rank {comm.rank} got {recv} want {want}")
    # Torch tensors are zero-copy views.
    try:
        import torch

        run.cases += 1
        t = torch.full((4, 3), float(comm.rank + 1))
        comm.allreduce(t)
        if not torch.equal(t, torch.full((4, 3), float(n * (n + 1) // 2))):
            run.failures.append(f"torch allreduce: rank {comm.rank} got {t}")
        tb = torch.ones(10, dtype=torch.bfloat16)
        comm.allreduce(tb)
        if not torch.equal(tb, torch.full((10,), float(n), dtype=torch.bfloat16)):
            run.failures.append(f"torch bfloat16 allreduce: rank {comm.rank} got {tb}")
    except ImportError:
        pass
    if comm.config.engine == "native" and comm.world.nnodes == 1:  # the kernel ran them, not the Python executor
        elsewhere = sorted({call.label for call in comm._calls.values() if call.native is None})
        if elsewhere:
            run.failures.append(f"native engine: rank {comm.rank} ran {elsewhere} in the Python executor")
    comm.barrier()
    print(f"RESULT {comm.rank} {run.cases} {len(run.failures)}", flush=True)
    for f in run.failures[:5]:
        print("FAIL", f, flush=True)
    comm.close()
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "quick"))
