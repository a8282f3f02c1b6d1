"""One rank of a dispatch failure scenario (argv[1]); prints ``RANK r RAISED <seconds> <message>`` or ``RANK r OK``."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import synccl
from synccl.exceptions import CommError
from synccl.moe import combine, dispatch


def main() -> int:
    scenario = sys.argv[1]
    comm = synccl.init()
    rank = comm.rank
    hidden = 5 if scenario == "hidden" and rank == 1 else 4
    x = np.ones((6, hidden))
    idx = np.tile(np.arange(2), (6, 1))
    w = np.full((6, 2), 0.5)
    if scenario == "bad_idx" and rank == 1:
        idx = idx + 10  # experts that do not exist: refused on this rank alone
    if scenario == "die" and rank == 1:
        os._exit(3)
    start = time.monotonic()
    try:
        rows, _, _, _, handle = dispatch(x, idx, w, 2 * comm.size, comm=comm)
        if scenario == "combine_hidden":
            rows = np.ones((rows.shape[0], 3 if rank == 1 else 4))
        combine(rows, handle, comm=comm)
    except CommError as err:
        print(f"RANK {rank} RAISED {time.monotonic() - start:.2f} {err}", flush=True)
        comm.close()
        return 0
    print(f"RANK {rank} OK", flush=True)
    comm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
