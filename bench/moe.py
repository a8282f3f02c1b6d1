"""MoE dispatch and combine throughput on this machine, against MPI's Alltoallv and torch's gloo, in one job.

Run: mpiexec -n 2 python -m synccl.bench.moe [--tokens 4096] [--hidden 1024] [--repeat 5] [--json]

Every rank routes ``--tokens`` float32 tokens of ``--hidden`` to ``--experts`` experts, top
``--top-k``, uniformly or zipf(1.2)-skewed (expert ``e`` drawn with weight ``1/(e+1)^1.2``).
Throughput is DeepEP's: bytes of routed token rows a rank sends (dispatch) or receives back
(combine) per second. Each way is a full exchange: counts first, then the rows --
``synccl.moe.dispatch``/``combine`` (routing, packing rows with their expert ids and weights,
fresh result arrays; combine sums each token's rows), and the bare exchange of the same
pre-gathered rows into reused buffers by synccl's ``alltoall`` + ``alltoallv``, MPI's
``Alltoall`` + ``Alltoallv`` and torch's gloo ``all_to_all_single`` (counts, then rows).
A sweep is ``--iters`` calls after a barrier, timed by the slowest rank; ``--repeat`` sweeps,
interleaved across backends, give median and min-max. Then ``synccl.moe.MoELayer``'s
forward + backward at pipeline depths 1, 2, 4 and "auto", and the simulator's prediction for
DeepEP's intranode case on 8 GPUs.
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
from mpi4py import MPI

import synccl
from synccl.bench._report import repeat_stats
from synccl.moe import combine, dispatch, plan_routing
from synccl.sim import MoeShape, exchange_us
from synccl.sim._moe import uniform_traffic
from synccl.topologies import get_topology

#: DeepEP's README, intranode normal kernels on H800 (8 GPUs, NVLink ~160 GB/s): 4096 tokens,
#: hidden 7168, top-8 of 256 experts, bf16 dispatch; GB/s of NVLink traffic per rank.
DEEPEP_H800 = {"dispatch": 153.0, "combine": 158.0}


def routing(kind: str, rng: np.random.Generator, tokens: int, experts: int, k: int) -> np.ndarray:
    """``(tokens, k)`` distinct experts per token."""
    weights = np.ones(experts) if kind == "uniform" else 1.0 / (1 + np.arange(experts)) ** 1.2
    keys = np.log(rng.random((tokens, experts))) / (weights / weights.sum())  # Efraimidis-Spirakis: k distinct, weighted
    return np.argsort(-keys, axis=1)[:, :k].astype(np.int64)


def timed(mpi: MPI.Comm, run: Callable[[], object], iters: int) -> float:
    """Microseconds per call of ``run``, the slowest rank's."""
    mpi.Barrier()
    start = time.perf_counter()
    for _ in range(iters):
        run()
    return mpi.allreduce((time.perf_counter() - start) / iters * 1e6, op=MPI.MAX)


def backends(comm: synccl.Communicator, mpi: MPI.Comm, x: np.ndarray, idx: np.ndarray, w: np.ndarray, experts: int) -> dict[str, dict[str, Callable[[], object]]]:
    """Per backend: its dispatch and combine of the same rows."""
    import torch
    import torch.distributed as dist

    p = comm.size
    plan = plan_routing(idx, experts, p)
    send_counts = plan.send_counts
    rows = np.ascontiguousarray(x[plan.send_token])
    recv_counts = np.empty_like(send_counts)
    mpi.Alltoall(send_counts, recv_counts)
    hidden = x.shape[1]
    received = np.empty((int(recv_counts.sum()), hidden), np.float32)
    returned = np.empty_like(rows)
    _, _, _, _, handle = dispatch(x, idx, w, experts, comm=comm)
    expert_out = np.ones((int(handle.recv_counts.sum()), hidden), np.float32)

    def synccl_exchange(send: np.ndarray, sc: np.ndarray, recv: np.ndarray) -> None:
        traffic = comm.allgather(sc, np.empty(p * p, dtype=sc.dtype)).reshape(p, p)  # the counts, as MPI's Alltoall
        comm.alltoallv(send.reshape(-1), (sc * hidden).tolist(), recv.reshape(-1), (traffic[:, comm.rank] * hidden).tolist(), traffic=traffic * hidden)

    def mpi_exchange(send: np.ndarray, sc: np.ndarray, recv: np.ndarray) -> None:
        rc = np.empty_like(sc)
        mpi.Alltoall(sc, rc)
        mpi.Alltoallv([send, (sc * hidden, None), MPI.FLOAT], [recv, (rc * hidden, None), MPI.FLOAT])

    t_rows, t_received, t_returned = torch.from_numpy(rows), torch.from_numpy(received), torch.from_numpy(returned)
    t_send_counts, t_recv_counts = torch.from_numpy(send_counts.copy()), torch.from_numpy(recv_counts.copy())

    def gloo_exchange(send: torch.Tensor, sc: torch.Tensor, recv: torch.Tensor, rc: torch.Tensor) -> None:
        counts = torch.empty_like(sc)
        dist.all_to_all_single(counts, sc)
        dist.all_to_all_single(recv, send, output_split_sizes=counts.tolist(), input_split_sizes=sc.tolist())

    return {
        "synccl": {"dispatch": lambda: dispatch(x, idx, w, experts, comm=comm), "combine": lambda: combine(expert_out, handle, comm=comm)},
        "synccl-alltoallv": {"dispatch": lambda: synccl_exchange(rows, send_counts, received), "combine": lambda: synccl_exchange(received, recv_counts, returned)},
        "mpi": {"dispatch": lambda: mpi_exchange(rows, send_counts, received), "combine": lambda: mpi_exchange(received, recv_counts, returned)},
        "gloo": {
            "dispatch": lambda: gloo_exchange(t_rows, t_send_counts, t_received, t_recv_counts),
            "combine": lambda: gloo_exchange(t_received, t_recv_counts, t_returned, t_send_counts),
        },
    }


def layer_steps(comm: synccl.Communicator, mpi: MPI.Comm, tokens: int, hidden: int, experts: int, k: int, repeat: int, iters: int) -> dict[str, dict[str, float]]:
    """Forward + backward of an MoE layer (2-layer GELU experts, 4x wide) at pipeline depths 1, 2, 4 and 'auto'."""
    import torch
    from torch import nn

    from synccl.moe import MoELayer

    torch.manual_seed(0)
    per_rank = experts // comm.size
    gate = nn.Linear(hidden, experts)
    local = [nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden)) for _ in range(per_rank)]
    x = torch.randn(tokens, hidden, requires_grad=True)
    times: dict[str, list[float]] = {}
    layers = {str(d): MoELayer(gate, local, num_experts=experts, top_k=k, overlap_degree=d, group=comm) for d in (1, 2, 4, "auto")}

    def step(layer: nn.Module) -> None:
        layer(x).sum().backward()

    for layer in layers.values():
        step(layer)  # warm up
    for _ in range(repeat):
        for name, layer in layers.items():
            times.setdefault(name, []).append(timed(mpi, lambda layer=layer: step(layer), iters))
    return {name: {"median_us": s.median_us, "min_us": s.min_us, "max_us": s.max_us} for name, s in repeat_stats(times).items()}


def simulated_deepep() -> dict[str, float]:
    """GB/s per rank the model predicts for DeepEP's intranode case (dispatch = combine in volume)."""
    shape = MoeShape(tokens=4096, hidden=7168, ffn_hidden=2048, top_k=8, num_experts=256, dtype="bf16")
    out = {}
    for name in ("hgx-h800", "dgx-h100"):
        traffic = uniform_traffic(shape, 8, shape.tokens)
        out[name] = traffic[0].sum() / exchange_us(get_topology(name), traffic) / 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--layer-tokens", type=int, default=2048, help="tokens per rank of the MoELayer step")
    parser.add_argument("--layer-hidden", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print only JSON")
    args = parser.parse_args()
    import torch.distributed as dist

    import synccl.torch as synccl_torch

    synccl_torch.environment_from_mpi()
    dist.init_process_group("gloo")
    mpi = MPI.COMM_WORLD
    comm = synccl.init()
    records = []
    for kind in ("uniform", "zipf"):
        rng = np.random.default_rng([7, comm.rank])
        x = rng.standard_normal((args.tokens, args.hidden), dtype=np.float32)
        idx = routing(kind, rng, args.tokens, args.experts, args.top_k)
        w = rng.random((args.tokens, args.top_k), dtype=np.float32)
        plan = plan_routing(idx, args.experts, comm.size)
        sent_bytes = float(plan.send_counts.sum() * args.hidden * 4)
        sent_max = mpi.allreduce(sent_bytes, op=MPI.MAX)
        ways = backends(comm, mpi, x, idx, w, args.experts)
        for run in (f for b in ways.values() for f in b.values()):
            run()  # warm up
        times: dict[str, dict[str, list[float]]] = {way: {name: [] for name in ways} for way in ("dispatch", "combine")}
        for _ in range(args.repeat):
            for way in times:
                for name in ways:
                    times[way][name].append(timed(mpi, ways[name][way], args.iters))
        for way, per_backend in times.items():
            stats = repeat_stats(per_backend)
            records.append(
                {
                    "routing": kind,
                    "way": way,
                    "bytes_per_rank_max": sent_max,
                    **{name: {"median_us": s.median_us, "min_us": s.min_us, "max_us": s.max_us, "gbps": sent_max / s.median_us / 1e3} for name, s in stats.items()},
                }
            )
    steps = layer_steps(comm, mpi, args.layer_tokens, args.layer_hidden, args.experts, args.top_k, args.repeat, max(1, args.iters // 5))
    if comm.rank == 0:
        meta = {
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()} {os.cpu_count()} cpus",
            "ranks": comm.size,
            **{k: getattr(args, k) for k in ("tokens", "hidden", "experts", "top_k")},
        }
        model = simulated_deepep()
        if args.json:
            print(json.dumps({"meta": meta, "records": records, "layer_step_us": steps, "model_gbps": model, "deepep_h800_gbps": DEEPEP_H800}, indent=2))
        else:
            print(f"# {meta}")
            names = ("synccl", "synccl-alltoallv", "mpi", "gloo")
            print("| routing | way | MB per rank (max) | " + " | ".join(f"{n} us (min-max) | GB/s" for n in names) + " |")
            print("|---|---|---:|" + "---:|---:|" * len(names))
            for r in records:
                cells = [f"{r[n]['median_us']:.0f} ({r[n]['min_us']:.0f}-{r[n]['max_us']:.0f}) | {r[n]['gbps']:.2f}" for n in names]
                print(f"| {r['routing']} | {r['way']} | {r['bytes_per_rank_max'] / 1e6:.1f} | " + " | ".join(cells) + " |")
            print(
                f"MoE layer forward+backward, {args.layer_tokens} tokens x {args.layer_hidden} per rank, µs median (min-max): "
                + ", ".join(f"d={name} {v['median_us']:.0f} ({v['min_us']:.0f}-{v['max_us']:.0f})" for name, v in steps.items())
            )
            print(f"model, DeepEP's intranode case (4096 tokens, 7168 bf16, top-8 of 256): {', '.join(f'{k} {v:.0f} GB/s' for k, v in model.items())}; DeepEP measured on H800: {DEEPEP_H800}")
    comm.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
