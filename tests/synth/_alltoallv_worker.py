"""One rank: run the all-to-all LP's schedule for a skewed traffic matrix through alltoallv, with relays, against numpy.

argv: topology name, chunks per pair. Prints ``RESULT rank cases failed`` and ``FAIL ...`` lines.
"""

from __future__ import annotations

import sys

import numpy as np

import synccl
from synccl.synth._flow import flow_all_to_all
from synccl.topologies import get_topology


def traffic_of(n: int, seed: int) -> np.ndarray:
    """Element counts src -> dst: zipf-skewed, some pairs empty."""
    rng = np.random.default_rng(seed)
    counts = (rng.pareto(1.2, (n, n)) * 40).astype(np.int64)
    counts[rng.random((n, n)) < 0.15] = 0
    np.fill_diagonal(counts, rng.integers(0, 9, n))
    return counts


def main() -> int:
    name, chunks = sys.argv[1], int(sys.argv[2])
    comm = synccl.init()
    n, me = comm.size, comm.rank
    cases = failed = 0
    for seed in range(4):
        counts = traffic_of(n, seed)
        program = flow_all_to_all(get_topology(name), counts.astype(float) + 1, chunks=chunks).to_program()  # planned for this traffic
        for given_traffic in (None, counts):
            cases += 1
            send = np.concatenate([np.arange(counts[me, d], dtype=np.float64) + 1000 * me + 100_000 * d for d in range(n)])
            recv = np.full(int(counts[:, me].sum()), -1.0)
            comm.alltoallv(send, counts[me].tolist(), recv, counts[:, me].tolist(), program=program, traffic=given_traffic)
            want = np.concatenate([np.arange(counts[s, me], dtype=np.float64) + 1000 * s + 100_000 * me for s in range(n)])
            if not np.array_equal(recv, want):
                failed += 1
                print(f"FAIL rank {me} seed {seed} traffic given {given_traffic is not None}: first difference at {int(np.argmax(recv != want))}", flush=True)
    relays = sum(rp.scratch_chunks for rp in program.ranks)
    print(f"RESULT {me} {cases} {failed} relays {relays}", flush=True)
    comm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
