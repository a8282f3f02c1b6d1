"""A pre-norm mixture-of-experts block, ``x + MoE(LayerNorm(x))``, trained with its 4 experts spread over 2 ranks.

    torchrun --nproc-per-node 2 examples/moe_block.py           # expert parallel: 2 experts per rank, 2 pipelined parts
    python examples/moe_block.py --reference                    # one process, all 4 experts dense (every expert on every token)
    torchrun --nproc-per-node 2 examples/moe_block.py --json    # only {"losses": [...]} (rank 0); --reference --json too

Top-2 of 4 experts (GShard gating: softmax over all experts, then the top 2), each a
``d -> 4d -> d`` MLP, with expert capacity 1.25. Each rank trains on its half of every batch
(its loss is its share of the batch mean): the replicated parameters (norm, gate) sum their
gradients over the ranks, as data parallelism does, while each expert's gradient already holds
both ranks' tokens. Both ways print the same losses, to rounding.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.distributed as dist
from torch import nn

import synccl.torch  # noqa: F401 - registers the "synccl" backend
from synccl.moe import MoELayer, capacity

TOKENS, D_MODEL, D_FF, EXPERTS, TOP_K, CAPACITY_FACTOR, RANKS = 64, 16, 64, 4, 2, 1.25, 2


class DenseMoE(nn.Module):
    """The reference: every expert on every token, each output weighted by the token's kept top-k weights (zeros elsewhere).

    ``ranks`` is how many ranks the expert-parallel run splits the tokens over: capacity applies
    to each rank's share (``torch.tensor_split``), as :class:`MoELayer` applies it to its batch.
    """

    def __init__(self, gate: nn.Module, experts: list[nn.Module], *, top_k: int, capacity_factor: float | None, ranks: int) -> None:
        super().__init__()
        self.gate, self.experts = gate, nn.ModuleList(experts)
        self.top_k, self.capacity_factor, self.ranks = top_k, capacity_factor, ranks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, chosen = torch.softmax(self.gate(x), dim=-1).topk(self.top_k, dim=-1)
        kept = torch.cat([self.kept(share) for share in chosen.tensor_split(self.ranks)])
        mask = torch.zeros(len(x), len(self.experts), dtype=x.dtype).scatter_add(1, chosen, weights * kept)  # (T, E)
        return sum(mask[:, e : e + 1] * expert(x) for e, expert in enumerate(self.experts))

    def kept(self, chosen: torch.Tensor) -> torch.Tensor:
        """GShard capacity on one rank's tokens: each expert takes its first ``capacity`` assignments, first choices first."""
        keep = torch.ones(chosen.shape, dtype=torch.bool)
        if self.capacity_factor is None:
            return keep
        limit = capacity(self.capacity_factor, len(chosen), self.top_k, len(self.experts))
        used = [0] * len(self.experts)
        for slot in range(self.top_k):
            for t in range(len(chosen)):
                e = int(chosen[t, slot])
                keep[t, slot] = used[e] < limit
                used[e] += 1
        return keep


class Block(nn.Module):
    """``x + moe(norm(x))``."""

    def __init__(self, moe: nn.Module, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.norm, self.moe = nn.LayerNorm(D_MODEL, dtype=dtype), moe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.moe(self.norm(x))


def block(*, reference: bool = False, dtype: torch.dtype | None = None, overlap_degree: int = 2) -> Block:
    """The block; every rank draws every parameter (all experts) in the same order and keeps its experts."""
    torch.manual_seed(0)
    gate = nn.Linear(D_MODEL, EXPERTS, dtype=dtype)
    experts = [nn.Sequential(nn.Linear(D_MODEL, D_FF, dtype=dtype), nn.GELU(), nn.Linear(D_FF, D_MODEL, dtype=dtype)) for _ in range(EXPERTS)]
    if reference:
        return Block(DenseMoE(gate, experts, top_k=TOP_K, capacity_factor=CAPACITY_FACTOR, ranks=RANKS), dtype)
    per, rank = EXPERTS // dist.get_world_size(), dist.get_rank()
    mine = experts[rank * per : (rank + 1) * per]
    return Block(MoELayer(gate, mine, num_experts=EXPERTS, top_k=TOP_K, overlap_degree=overlap_degree, capacity_factor=CAPACITY_FACTOR), dtype)


def batch(step: int, *, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s whole batch and target, the same on every rank."""
    x = torch.randn(TOKENS, D_MODEL, generator=torch.Generator().manual_seed(step), dtype=dtype)
    return x, torch.sin(x.roll(1, dims=-1))


def train(model: Block, *, steps: int = 20, lr: float = 2.0, sharded: bool = True, dtype: torch.dtype | None = None) -> list[float]:
    """SGD on the mean squared error over the whole batch; a sharded model sees this rank's share. Returns the losses."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    rank, world = (dist.get_rank(), dist.get_world_size()) if sharded else (0, 1)
    replicated = [p for name, p in model.named_parameters() if not name.startswith("moe.experts.")]
    losses = []
    for step in range(steps):
        x, target = batch(step, dtype=dtype)
        start, stop = _share(rank, world)
        loss = (model(x[start:stop]) - target[start:stop]).pow(2).sum() / target.numel()  # this rank's share of the mean
        optimizer.zero_grad()
        loss.backward()
        total = loss.detach().clone()
        if sharded:
            for p in replicated:  # each rank's grad is its tokens' share of the whole batch's
                dist.all_reduce(p.grad)
            dist.all_reduce(total)
        optimizer.step()
        losses.append(total.item())
    return losses


def _share(rank: int, world: int) -> tuple[int, int]:
    """This rank's tokens of a batch: ``torch.tensor_split``'s piece ``rank`` of ``world``."""
    sizes = [TOKENS // world + (r < TOKENS % world) for r in range(world)]
    return sum(sizes[:rank]), sum(sizes[: rank + 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", action="store_true", help="one process, all experts dense")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--json", action="store_true", help='print only {"losses": [...]}')
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(1)

    if args.reference:
        losses, rank = train(block(reference=True, dtype=dtype), steps=args.steps, sharded=False, dtype=dtype), 0
    else:
        dist.init_process_group("synccl")
        if dist.get_world_size() != RANKS:
            raise SystemExit(f"moe_block: run on {RANKS} ranks (the reference splits capacity the same way), got {dist.get_world_size()}")
        losses, rank = train(block(dtype=dtype), steps=args.steps, dtype=dtype), dist.get_rank()
    if rank == 0:
        if args.json:
            print(json.dumps({"losses": losses}))
        else:
            for step, loss in enumerate(losses):
                print(f"[{'reference' if args.reference else 'expert parallel'}] step {step + 1}: loss {loss:.6f}")
    if not args.reference:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
