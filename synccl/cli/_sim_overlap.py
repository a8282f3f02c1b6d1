"""``synccl sim --overlap KIND``: what overlapping a tensor-parallel matmul with its collective buys.

Prints the cost model's unfused and overlapped times (:func:`synccl.sim.estimate_overlap`), the
speedup, the pieces per block it chose and the bound no overlap can beat.
"""

from __future__ import annotations

import argparse

from synccl.cli._format import print_json, table
from synccl.collectives import FUSED_KINDS
from synccl.exceptions import CollectiveError
from synccl.sim import FUSIONS, estimate_overlap
from synccl.topologies import get_topology

__all__ = ["add_arguments", "run_overlap", "OVERLAP_ONLY"]

#: Flags that mean something only with --overlap.
OVERLAP_ONLY = ("shape", "dtype", "splits", "device", "fusion")


def add_arguments(sim: argparse.ArgumentParser) -> None:
    group = sim.add_argument_group("compute-communication overlap (tensor parallelism)")
    group.add_argument("--overlap", choices=FUSED_KINDS, help="time a fused matmul + collective unfused and overlapped (no --collective)")
    group.add_argument("--shape", metavar="M,N,K", help="with --overlap: the global matmul (M x K) @ (K x N)")
    group.add_argument("--dtype", help="with --overlap: bf16, fp16 or fp32 (default bf16)")
    group.add_argument("--splits", type=int, help="with --overlap: pieces per block (default: the fastest the model finds)")
    group.add_argument("--device", help="with --overlap: device type (default: the topology's, e.g. H100)")
    group.add_argument(
        "--fusion", choices=FUSIONS, help="with --overlap: blocks = a matmul per block (torch async TP; default), kernel = one matmul kernel waiting for its rows (Flux)"
    )


def run_overlap(args: argparse.Namespace) -> int:
    """Run ``synccl sim --overlap``."""
    if args.collective:
        raise CollectiveError("sim: --overlap times its own collective; drop --collective")
    if not args.shape:
        raise CollectiveError("sim: --overlap needs --shape M,N,K")
    try:
        shape = tuple(int(v) for v in args.shape.split(","))
    except ValueError:
        raise CollectiveError(f"sim: --shape must be three integers M,N,K, got {args.shape!r}") from None
    if len(shape) != 3:
        raise CollectiveError(f"sim: --shape must be three integers M,N,K, got {args.shape!r}")
    topo = get_topology(args.topology)
    estimate = estimate_overlap(args.overlap, topo, shape, args.dtype or "bf16", splits=args.splits, device=args.device, fusion=args.fusion or "blocks")
    if args.json:
        print_json(estimate.as_dict())
        return 0
    m, n, k = estimate.shape
    print(f"{estimate.kind} of ({m} x {k}) @ ({k} x {n}) {estimate.dtype} on {topo.name} ({topo.nranks} x {estimate.device})")
    rows = [
        ["matmul alone", estimate.compute_us],
        ["collective alone", estimate.comm_us],
        ["unfused (one after the other)", estimate.unfused_us],
        [f"overlapped ({estimate.splits} piece(s) per block, {estimate.fusion} fusion)", estimate.overlapped_us],
    ]
    print(table(["", "time us"], rows))
    print(f"speedup {estimate.speedup:.3f} (bound {estimate.bound:.3f}); schedule {estimate.program}")
    return 0
