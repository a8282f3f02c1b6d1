"""Resident memory over 10,000 back-to-back calls: it must stay flat.

Run: mpiexec -n 2 python -m synccl.bench.memory_flat [--calls 10000]
Prints the resident set size of rank 0 after warm-up and after every 2,000 calls.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import synccl


def rss_mib() -> float:
    """This process's resident set size in MiB (from /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--count", type=int, default=1 << 16, help="float32 elements per call")
    args = parser.parse_args()
    comm = synccl.init()
    send = np.ones(args.count, np.float32)
    recv = np.empty_like(send)
    for _ in range(100):
        comm.allreduce(send, recv)
    start = rss_mib()
    samples = [start]
    for i in range(1, args.calls + 1):
        comm.allreduce(send, recv)
        if i % 2000 == 0:
            samples.append(rss_mib())
    if comm.rank == 0:
        print("rss MiB after warm-up and every 2000 calls:", " ".join(f"{s:.1f}" for s in samples))
        print(f"growth over {args.calls} calls: {samples[-1] - start:+.2f} MiB")
    comm.close()


if __name__ == "__main__":
    main()
