"""One rank of an overlap failure scenario (argv[1]); prints ``RANK r RAISED <seconds> <message>`` or ``RANK r OK``."""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

import synccl
from synccl import _arraykit
from synccl.exceptions import CommError
from synccl.overlap import all_gather_matmul, matmul_reduce_scatter

NUMPY_KIT = _arraykit.numpy_kit


def failing_kit() -> _arraykit.ArrayKit:
    """numpy's kit whose matmul raises on the second block: a compute step that fails mid-call."""
    kit = NUMPY_KIT()
    calls = [0]

    def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise FloatingPointError("injected failure in the second block")
        np.matmul(a, b, out=out)

    return dataclasses.replace(kit, matmul=matmul)


def main() -> int:
    scenario = sys.argv[1]
    comm = synccl.init()
    rank = comm.rank
    rows = 3 if scenario == "mismatch" and rank == 1 else 4
    a = np.ones((rows, 8), dtype=np.float32)
    b = np.ones((8, 5), dtype=np.float32)
    if scenario in ("raise", "raise_scatter") and rank == 1:
        _arraykit.numpy_kit = failing_kit
    if scenario == "die" and rank == 1:
        os._exit(3)
    start = time.monotonic()
    try:
        if scenario == "bad_dim":
            all_gather_matmul(a, [b], 5 if rank == 1 else 0, comm=comm)
        elif scenario == "scatter_rows":
            matmul_reduce_scatter(np.ones((comm.size + 1, 8), np.float32), b, 0, comm=comm)
        elif scenario == "raise_scatter":
            matmul_reduce_scatter(np.ones((comm.size * 64, 8), np.float32), b, 0, comm=comm, splits=4)
        else:
            all_gather_matmul(a, [b], 0, comm=comm)
    except CommError as err:
        print(f"RANK {rank} RAISED {time.monotonic() - start:.2f} {err}", flush=True)
        comm.close()
        return 0
    print(f"RANK {rank} OK", flush=True)
    comm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
