"""Worker for the failure tests: python _failures.py SCENARIO (launched with torchrun's variables or mpiexec).

Every rank prints ``COMMERROR rank message`` and exits 3 when synccl raises, ``DONE rank`` and
exits 0 when it finishes; scenarios that let an exception escape end the process with Python's
traceback on purpose.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time

import numpy as np

import synccl
from synccl.exceptions import CommError


def main(scenario: str) -> int:
    # TEST_RANK1_ENGINE: rank 1 runs another engine than SYNCCL_ENGINE says (a slow peer for a fast rank).
    other = {"engine": os.environ["TEST_RANK1_ENGINE"]} if os.environ.get("RANK") == "1" and os.environ.get("TEST_RANK1_ENGINE") else {}
    comm = synccl.init(timeout_s=float(os.environ.get("TEST_TIMEOUT", "20")), **other)
    print(f"READY {comm.rank}", flush=True)
    buf = np.ones(1 << 20, np.float32)
    started = time.monotonic()
    try:
        if scenario == "kill":
            for i in range(1000):
                if comm.rank == 1 and i == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
                comm.allreduce(buf)
        elif scenario == "raise":  # an application error on rank 1, between calls
            for i in range(1000):
                if comm.rank == 1 and i == 3:
                    raise ValueError("application bug on rank 1")
                comm.allreduce(buf)
        elif scenario == "exit":  # rank 1 ends normally, owing calls
            if comm.rank == 1:
                print("DONE 1", flush=True)
                return 0
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
        elif scenario == "mismatch_count":  # rank 1 makes one call fewer
            if comm.rank == 0:
                comm.allreduce(np.ones(64, np.float32))
            comm.allreduce(np.ones(64, np.float32), op="max")
        elif scenario in ("mismatch_root_broadcast", "mismatch_root_reduce"):
            data = np.full(64, float(comm.rank), np.float32)
            for _ in range(3):
                if scenario == "mismatch_root_broadcast":
                    comm.broadcast(data, root=comm.rank)
                else:
                    comm.reduce(data, root=comm.rank)
                time.sleep(0.2)
        elif scenario == "gather_without_recvbuf":
            comm.gather(np.ones(8, np.float32), None, root=0)
            time.sleep(0.5)
            comm.allreduce(np.ones(8, np.float32))
        elif scenario == "late":  # rank 1 joins after the others timed out and left
            if comm.rank == 1:
                time.sleep(float(os.environ["TEST_LATE"]))
            comm.allreduce(np.ones(64, np.float32))
        elif scenario == "slow_but_moving":  # a call longer than the timeout whose peers keep moving
            big = np.ones(int(os.environ["TEST_ELEMENTS"]), np.float32)
            short = comm.config
            comm.config = dataclasses.replace(short, timeout_s=60.0)  # preparing the plan takes the ranks unequal times
            comm.allreduce(big)
            comm.barrier()
            comm.config = short
            if comm.rank == 1:
                time.sleep(float(os.environ["TEST_LATE"]))
            begun = time.monotonic()
            comm.allreduce(big)
            print(f"CALL {time.monotonic() - begun:.3f}", flush=True)
            assert big[0] == comm.size**2
        elif scenario == "hang":
            if comm.rank == 0:
                comm.allreduce(np.ones(64, np.float32))
            else:
                time.sleep(6)
    except CommError as err:
        print(f"COMMERROR {comm.rank} {err}", flush=True)
        print(f"PEER {err.peer}", flush=True)
        print(f"ELAPSED {time.monotonic() - started:.3f}", flush=True)
        return 3
    print(f"ELAPSED {time.monotonic() - started:.3f}", flush=True)
    print(f"DONE {comm.rank}", flush=True)
    comm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
