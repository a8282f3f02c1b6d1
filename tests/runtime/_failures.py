"""Worker for the failure tests: python _failures.py SCENARIO (launched with torchrun's variables)."""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

import synccl
from synccl.exceptions import CommError


def main(scenario: str) -> int:
    comm = synccl.init(timeout_s=float(os.environ.get("TEST_TIMEOUT", "20")))
    print(f"READY {comm.rank}", flush=True)
    buf = np.ones(1 << 20, np.float32)
    try:
        if scenario == "kill":
            for i in range(1000):
                if comm.rank == 1 and i == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
                comm.allreduce(buf)
        elif scenario == "mismatch_size":
            comm.allreduce(np.ones(100 + comm.rank, np.float32))
        elif scenario == "mismatch_collective":
            if comm.rank == 0:
                comm.allreduce(np.ones(64, np.float32))
            else:
                comm.broadcast(np.ones(64, np.float32))
        elif scenario == "mismatch_op":
            comm.allreduce(np.ones(64, np.float32), op="sum" if comm.rank == 0 else "max")
        elif scenario == "hang":
            if comm.rank == 0:
                comm.allreduce(np.ones(64, np.float32))
            else:
                time.sleep(6)
    except CommError as err:
        started = time.monotonic()
        print(f"COMMERROR {comm.rank} {err}", flush=True)
        print(f"ELAPSED {time.monotonic() - started}", flush=True)
        return 3
    print(f"DONE {comm.rank}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
