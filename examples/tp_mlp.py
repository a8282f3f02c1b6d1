"""A Megatron-style tensor-parallel MLP block (sequence parallel) trained on synccl's overlapped matmuls.

    torchrun --nproc-per-node 2 examples/tp_mlp.py               # all_gather_matmul / matmul_reduce_scatter
    torchrun --nproc-per-node 2 examples/tp_mlp.py --no-overlap  # the same model on plain all_gather / reduce_scatter
    torchrun --nproc-per-node 2 examples/tp_mlp.py --json        # only {"losses": [...]} (rank 0)

ColumnParallelLinear -> GELU -> RowParallelLinear, with the activations split along the
sequence (dimension 0 of [s, b, h]) between blocks. Both ways print the same losses, to rounding.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import synccl.torch  # noqa: F401 - registers the "synccl" backend
from synccl.overlap import ColumnParallelLinear, RowParallelLinear

SEQ, BATCH, D_MODEL, D_FF = 16, 4, 32, 128


# -- the same layers on plain (non-overlapped) collectives, for comparison --------------------------


def _gather(x: torch.Tensor, group: Any) -> torch.Tensor:
    out = x.new_empty((dist.get_world_size(group) * x.shape[0], *x.shape[1:]))
    dist.all_gather_single(out, x.contiguous(), group=group)
    return out


def _scatter(x: torch.Tensor, group: Any) -> torch.Tensor:
    out = x.new_empty((x.shape[0] // dist.get_world_size(group), *x.shape[1:]))
    dist.reduce_scatter_single(out, x.contiguous(), group=group)
    return out


class _PlainColumn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, group: Any) -> torch.Tensor:
        x_full = _gather(x, group)  # all-gather, then matmul
        ctx.save_for_backward(x_full, weight)
        ctx.group = group
        return x_full @ weight.t() + (0 if bias is None else bias)

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[Any, ...]:
        x_full, weight = ctx.saved_tensors
        rows = grad_y.reshape(-1, grad_y.shape[-1])
        return _scatter(grad_y @ weight, ctx.group), rows.t() @ x_full.reshape(-1, x_full.shape[-1]), rows.sum(0), None


class _PlainRow(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, group: Any) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.group = group
        return _scatter(x @ weight.t(), group) + (0 if bias is None else bias)  # matmul, then reduce-scatter

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[Any, ...]:
        x, weight = ctx.saved_tensors
        grad_full = _gather(grad_y, ctx.group)
        grad_b = grad_y.reshape(-1, grad_y.shape[-1]).sum(0)
        dist.all_reduce(grad_b, group=ctx.group)  # the replicated bias: sum the sequence shards' shares
        return grad_full @ weight, grad_full.reshape(-1, grad_full.shape[-1]).t() @ x.reshape(-1, x.shape[-1]), grad_b, None


class PlainColumnParallelLinear(ColumnParallelLinear):
    """ColumnParallelLinear's parameters and math, with a plain all-gather (dist.all_gather_single, once all_gather_into_tensor) before the matmul."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _PlainColumn.apply(x, self.weight, self.bias, self.group)


class PlainRowParallelLinear(RowParallelLinear):
    """RowParallelLinear's parameters and math, with a plain reduce-scatter (dist.reduce_scatter_single, once reduce_scatter_tensor) after the matmul."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _PlainRow.apply(x, self.weight, self.bias, self.group)


# -- model, data, training -------------------------------------------------------------------------


def tp_mlp(d_model: int = D_MODEL, d_ff: int = D_FF, *, overlap: bool = True, dtype: torch.dtype | None = None) -> nn.Sequential:
    """The MLP block split over the default group; its shards equal ``reference_mlp``'s weights from the same seed."""
    column, row = (ColumnParallelLinear, RowParallelLinear) if overlap else (PlainColumnParallelLinear, PlainRowParallelLinear)
    return nn.Sequential(column(d_model, d_ff, dtype=dtype), nn.GELU(), row(d_ff, d_model, dtype=dtype))


def reference_mlp(d_model: int = D_MODEL, d_ff: int = D_FF, *, dtype: torch.dtype | None = None) -> nn.Sequential:
    """The same block in one process, with the full weights."""
    return nn.Sequential(nn.Linear(d_model, d_ff, dtype=dtype), nn.GELU(), nn.Linear(d_ff, d_model, dtype=dtype))


def batch(step: int, *, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s full input and target, ``[s, b, h]``, the same on every rank."""
    x = torch.randn(SEQ, BATCH, D_MODEL, generator=torch.Generator().manual_seed(step), dtype=dtype)
    return x, torch.sin(x.roll(1, dims=-1))


def train(model: nn.Module, *, steps: int = 20, lr: float = 1.0, sharded: bool = True, dtype: torch.dtype | None = None) -> list[float]:
    """SGD on the mean squared error; a sharded model sees this rank's slice of the sequence. Returns the full losses."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    rank, world = (dist.get_rank(), dist.get_world_size()) if sharded else (0, 1)
    losses = []
    for step in range(steps):
        x, target = batch(step, dtype=dtype)
        y = model(x.chunk(world)[rank])
        loss = (y - target.chunk(world)[rank]).pow(2).sum() / target.numel()  # this rank's share of the mean
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total = loss.detach().clone()
        if sharded:
            dist.all_reduce(total)
        losses.append(total.item())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-overlap", action="store_true", help="plain all_gather / reduce_scatter around the matmuls")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", action="store_true", help='print only {"losses": [...]}')
    args = parser.parse_args()

    dist.init_process_group("synccl")
    torch.manual_seed(0)  # every rank draws the same full weights and keeps its shard
    losses = train(tp_mlp(overlap=not args.no_overlap), steps=args.steps)
    if dist.get_rank() == 0:
        if args.json:
            print(json.dumps({"losses": losses}))
        else:
            for step, loss in enumerate(losses):
                print(f"[{'plain' if args.no_overlap else 'overlap'}] step {step + 1}: loss {loss:.6f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
