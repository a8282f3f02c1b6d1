"""One rank of the tensor-parallel layer checks, under ``torchrun --nproc-per-node 2``.

Trains examples/tp_mlp.py's block overlapped, on plain collectives, and as the one-process
reference with the full weights (computed on every rank), in float64 and float32; compares
one step's gradients with the reference's; collects the errors bad sizes raise. Writes one
JSON file per rank, ``OUT_DIR/rank<r>.json`` (``python _tp_worker.py OUT_DIR``); the test makes the comparisons.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import synccl.torch  # noqa: F401 - registers the "synccl" backend
from synccl.exceptions import CommError
from synccl.overlap import ColumnParallelLinear, RowParallelLinear

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tp_mlp.py"
STEPS = 20


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("tp_mlp_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def models(ex: Any, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """The three models, each built after the same seed."""
    built = {}
    for name, make in (("overlap", lambda: ex.tp_mlp(overlap=True, dtype=dtype)), ("plain", lambda: ex.tp_mlp(overlap=False, dtype=dtype)), ("reference", lambda: ex.reference_mlp(dtype=dtype))):
        torch.manual_seed(0)
        built[name] = make()
    return built


def shard_pairs(tp: torch.nn.Module, ref: torch.nn.Module, rank: int, *, grad: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(the TP model's parameter, the matching slice of the reference's) by name; their gradients if ``grad``."""
    h = tp[0].weight.shape[0]  # d_ff / p
    rows = slice(rank * h, (rank + 1) * h)

    def of(param: torch.Tensor) -> torch.Tensor:
        return param.grad if grad else param

    return {
        "w1": (of(tp[0].weight), of(ref[0].weight)[rows]),
        "b1": (of(tp[0].bias), of(ref[0].bias)[rows]),
        "w2": (of(tp[2].weight), of(ref[2].weight)[:, rows]),
        "b2": (of(tp[2].bias), of(ref[2].bias)),
    }


def initial_weights_equal(ex: Any, rank: int, p: int) -> dict[str, bool]:
    """Built after the same seed, each shard is exactly the reference's slice; from_full too."""
    built = models(ex, torch.float64)
    same = {f"seeded {name}": torch.equal(a, b) for name, (a, b) in shard_pairs(built["overlap"], built["reference"], rank).items()}
    ref = built["reference"]
    col = ColumnParallelLinear.from_full(ref[0].weight.detach(), ref[0].bias.detach())
    row = RowParallelLinear.from_full(ref[2].weight.detach(), ref[2].bias.detach())
    loaded = torch.nn.Sequential(col, torch.nn.GELU(), row)
    same.update({f"from_full {name}": torch.equal(a, b) for name, (a, b) in shard_pairs(loaded, ref, rank).items()})
    return same


def gradients(ex: Any, rank: int, p: int) -> dict[str, dict[str, list[float]]]:
    """One float64 forward/backward: [max |TP grad - reference grad slice|, max |reference grad slice|] per tensor."""
    built = models(ex, torch.float64)
    x, target = ex.batch(0, dtype=torch.float64)
    x_ref = x.clone().requires_grad_(True)
    ref = built["reference"]
    (ref(x_ref) - target).pow(2).mean().backward()
    out = {}
    for name in ("overlap", "plain"):
        tp = built[name]
        x_shard = x.chunk(p)[rank].clone().requires_grad_(True)
        ((tp(x_shard) - target.chunk(p)[rank]).pow(2).sum() / target.numel()).backward()
        pairs = shard_pairs(tp, ref, rank, grad=True)
        pairs["x"] = (x_shard.grad, x_ref.grad.chunk(p)[rank])
        out[name] = {n: [float((g - r).abs().max()), float(r.abs().max())] for n, (g, r) in pairs.items()}
    return out


def errors() -> dict[str, str]:
    """The message each bad size raises (every rank makes the same calls, so nothing waits on a peer)."""
    found = {}
    calls = {
        "row in_features 7": lambda: RowParallelLinear(7, 8),
        "column out_features 7": lambda: ColumnParallelLinear(8, 7),
        "column input width": lambda: ColumnParallelLinear(8, 4)(torch.ones(2, 3, 6)),
        "row sequence 3": lambda: RowParallelLinear(4, 8)(torch.ones(3, 2)),
    }
    for name, call in calls.items():
        try:
            call()
            found[name] = "no error"
        except CommError as err:
            found[name] = str(err)
    return found


def main() -> None:
    dist.init_process_group("synccl")
    rank, p = dist.get_rank(), dist.get_world_size()
    ex = load_example()
    result: dict[str, Any] = {"init": initial_weights_equal(ex, rank, p), "losses": {}}
    for dtype in (torch.float64, torch.float32):
        for name, model in models(ex, dtype).items():
            result["losses"][f"{name} {dtype}"] = ex.train(model, steps=STEPS, sharded=name != "reference", dtype=dtype)
    result["gradients"] = gradients(ex, rank, p)
    result["errors"] = errors()
    (Path(sys.argv[1]) / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
