"""One rank of the dispatch/combine matrix, checked against a reference every rank computes alone.

Every rank draws every rank's tokens from the same seeds, so each can compute what it must
receive and what combine must return without communicating. Prints ``RESULT rank cases failed``
and a ``FAIL ...`` line per failing case.
"""

from __future__ import annotations

import math
import sys

import numpy as np

import synccl
from synccl.moe import combine, dispatch

HIDDEN, K = 6, 2


def routing_of(kind: str, rng: np.random.Generator, tokens: int, experts: int) -> np.ndarray:
    if kind == "uniform":
        scores = rng.random((tokens, experts))
    elif kind == "zipf":
        scores = rng.random((tokens, experts)) / (1 + np.arange(experts)) ** 1.2  # skewed towards low experts
    else:  # degenerate: expert 0 first for everyone, the second choice random
        scores = rng.random((tokens, experts))
        scores[:, 0] = 2.0
    return np.argsort(-scores, axis=1)[:, :K].astype(np.int64)


def data(seed: int, rank: int, tokens: int, experts: int, kind: str):
    rng = np.random.default_rng([seed, rank])
    x = rng.integers(-4, 5, size=(tokens, HIDDEN)).astype(np.float64)
    idx = routing_of(kind, rng, tokens, experts)
    if tokens:
        idx[rng.random(tokens) < 0.1, 1] = -1  # some masked slots
    w = rng.random((tokens, K))
    return x, idx, w


def expert(e: int, rows: np.ndarray) -> np.ndarray:
    return rows * (e + 1) + e


def kept_reference(idx: np.ndarray, experts: int, factor: float | None) -> np.ndarray:
    """GShard capacity, written the slow obvious way: slot-major, tokens in order."""
    kept = idx >= 0
    if factor is None or not len(idx):
        return kept
    limit = math.ceil(factor * len(idx) * K / experts)
    used = [0] * experts
    for s in range(K):
        for t in range(len(idx)):
            e = idx[t, s]
            if e >= 0:
                kept[t, s] = used[e] < limit
                used[e] += 1
    return kept


def check(comm, seed: int, counts: list[int], experts: int, kind: str, factor: float | None, as_torch: bool) -> str | None:
    p, me = comm.size, comm.rank
    per = experts // p
    everyone = [data(seed, r, counts[r], experts, kind) for r in range(p)]
    x, idx, w = everyone[me]
    # What this rank must receive: rows from each source in rank order, tokens in order.
    want_rows, want_idx, want_w = [], [], []
    for src in range(p):
        sx, sidx, sw = everyone[src]
        kept = kept_reference(sidx, experts, factor)
        for t in range(len(sx)):
            here = [s for s in range(K) if kept[t, s] and sidx[t, s] // per == me]
            if here:
                want_rows.append(sx[t])
                want_idx.append([sidx[t, s] % per if s in here else -1 for s in range(K)])
                want_w.append([sw[t, s] if s in here else 0.0 for s in range(K)])
    if as_torch:
        import torch

        got = dispatch(torch.from_numpy(x), torch.from_numpy(idx), torch.from_numpy(w), experts, comm=comm, capacity_factor=factor)
        rows, ridx, rw = (a.numpy() for a in got[:3])
    else:
        got = dispatch(x, idx, w, experts, comm=comm, capacity_factor=factor)
        rows, ridx, rw = got[:3]
    per_expert, handle = got[3], got[4]
    if not np.array_equal(rows, np.array(want_rows).reshape(-1, HIDDEN)):
        return "received rows differ"
    if not np.array_equal(ridx, np.array(want_idx, dtype=np.int64).reshape(-1, K)) or not np.array_equal(rw, np.array(want_w).reshape(-1, K)):
        return "received slots or weights differ"
    if per_expert != [int((ridx == j).sum()) for j in range(per)]:
        return f"tokens_per_expert {per_expert}"
    # The experts' side: each row's weighted sum over its local slots.
    y = np.zeros_like(rows)
    for r in range(len(rows)):
        for s in range(K):
            if ridx[r, s] >= 0:
                y[r] += rw[r, s] * expert(me * per + int(ridx[r, s]), rows[r])
    out = combine(torch.from_numpy(y), handle, comm=comm).numpy() if as_torch else combine(y, handle, comm=comm)
    kept = kept_reference(idx, experts, factor)
    dense = np.zeros_like(x)
    for t in range(len(x)):
        for s in range(K):
            if kept[t, s]:
                dense[t] += w[t, s] * expert(int(idx[t, s]), x[t])
    if out.shape != dense.shape or not np.allclose(out, dense, rtol=1e-12, atol=1e-12):
        return f"combine differs from the dense reference (max error {np.max(np.abs(out - dense)) if out.shape == dense.shape else out.shape})"
    return None


def main() -> int:
    comm = synccl.init()
    p = comm.size
    cases = failed = 0
    for seed, kind in enumerate(["uniform", "zipf", "degenerate"]):
        for counts in ([7] * p, [3 + 5 * r for r in range(p)], [0] + [9] * (p - 1), [0] * p):
            for experts in (p, 2 * p):
                for factor in (None, 1.0, 0.5):
                    for as_torch in (False, True):
                        cases += 1
                        problem = check(comm, seed, counts, experts, kind, factor, as_torch)
                        if problem:
                            failed += 1
                            print(f"FAIL rank {comm.rank} {kind} counts {counts} experts {experts} capacity {factor} torch {as_torch}: {problem}", flush=True)
    print(f"RESULT {comm.rank} {cases} {failed}", flush=True)
    comm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
