"""One rank of the MoELayer checks, under ``torchrun --nproc-per-node 2``.

Every rank builds the same gate and all experts from one seed and draws every rank's tokens, so
each computes the dense one-process reference (every expert on every token, masked by the top-k
and GShard's capacity, written the slow obvious way) for the whole group alone. It then runs
its MoELayer at pipeline degrees 1, 2, 3 over uniform, zipf-skewed and degenerate routing, token
counts that differ by rank (one rank with none), with and without capacity, both weightings,
in float64 and float32, and records forward and gradient errors; trains examples/moe_block.py
both ways; checks that pipelined exchanges overlap the experts; collects the errors bad input
raises. Writes ``OUT_DIR/rank<r>.json`` (``python _layer_worker.py OUT_DIR``); the test compares.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import synccl.moe._layer as layer_module
import synccl.torch  # noqa: F401 - registers the "synccl" backend
from synccl.exceptions import CommError
from synccl.moe import MoELayer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "moe_block.py"
HIDDEN, FFN, EXPERTS, K = 8, 12, 4, 2
COUNTS = ((13, 0), (6, 21))  # tokens of rank 0 and rank 1
KINDS = ("uniform", "zipf", "degenerate")
FACTORS = (None, 1.0)
DEGREES = (1, 2, 3)


def modules(kind: str, dtype: torch.dtype) -> tuple[nn.Linear, list[nn.Module]]:
    """The gate (its bias skewing the routing by ``kind``) and all the experts, the same on every rank."""
    torch.manual_seed(0)
    gate = nn.Linear(HIDDEN, EXPERTS, dtype=dtype)
    experts = [nn.Sequential(nn.Linear(HIDDEN, FFN, dtype=dtype), nn.Tanh(), nn.Linear(FFN, HIDDEN, dtype=dtype)) for _ in range(EXPERTS)]
    with torch.no_grad():
        if kind == "zipf":  # low experts far more likely
            gate.bias -= 2.0 * torch.log1p(torch.arange(EXPERTS, dtype=dtype))
        elif kind == "degenerate":  # expert 0 is everyone's first choice
            gate.bias[0] += 8.0
    return gate, experts


def tokens(seed: int, rank: int, count: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s tokens and the gradient of the loss with respect to its output."""
    g = torch.Generator().manual_seed(100 * seed + rank)
    return torch.randn(count, HIDDEN, generator=g, dtype=dtype), torch.randn(count, HIDDEN, generator=g, dtype=dtype)


def kept_reference(idx: torch.Tensor, factor: float | None) -> torch.Tensor:
    """GShard capacity, slot-major, tokens in order (as tests/moe/_worker.py)."""
    kept = torch.ones(idx.shape, dtype=torch.bool)
    if factor is None or not len(idx):
        return kept
    limit = math.ceil(factor * len(idx) * K / EXPERTS)
    used = [0] * EXPERTS
    for s in range(K):
        for t in range(len(idx)):
            e = int(idx[t, s])
            kept[t, s] = used[e] < limit
            used[e] += 1
    return kept


def dense(gate: nn.Module, experts: list[nn.Module], x: torch.Tensor, normalize: bool, factor: float | None) -> tuple[torch.Tensor, int]:
    """One rank's tokens through every expert, weighted by the kept top-k weights; and how many assignments capacity dropped."""
    w, idx = torch.softmax(gate(x), dim=-1).topk(K, dim=-1)
    if normalize:
        w = w / w.sum(dim=-1, keepdim=True)
    kept = kept_reference(idx, factor)
    mask = (nn.functional.one_hot(idx, EXPERTS).to(x.dtype) * (w * kept).unsqueeze(-1)).sum(dim=1)  # (T, E)
    return sum(mask[:, e : e + 1] * expert(x) for e, expert in enumerate(experts)), int((~kept).sum())


def _amax(t: torch.Tensor) -> float:
    """max |t|, 0 for an empty tensor."""
    return float(t.abs().max()) if t.numel() else 0.0


def _error(got: torch.Tensor | None, want: torch.Tensor) -> list[float]:
    """[max |got - want|, max |want|]; a missing gradient counts as zeros."""
    return [_amax(want if got is None else got - want), _amax(want)]


def case(rank: int, p: int, seed: int, kind: str, counts: tuple[int, int], factor: float | None, normalize: bool, dtype: torch.dtype) -> dict[str, Any]:
    gate, experts = modules(kind, dtype)
    per = EXPERTS // p
    data = [tokens(seed, r, counts[r], dtype) for r in range(p)]
    # The reference: every rank's tokens (its own gate copy collects that rank's gate gradient), experts shared.
    ref_gates, ref_experts = [copy.deepcopy(gate) for _ in range(p)], copy.deepcopy(experts)
    ref_x = [x.clone().requires_grad_(True) for x, _ in data]
    outs = [dense(ref_gates[r], ref_experts, ref_x[r], normalize, factor) for r in range(p)]
    sum((y * g).sum() for (y, _), (_, g) in zip(outs, data, strict=True)).backward()
    want_y = outs[rank][0].detach()
    result: dict[str, Any] = {"dropped": sum(d for _, d in outs), "forward": {}, "gradients": {}, "versus_d1": {}}
    first: dict[str, torch.Tensor] = {}
    for degree in DEGREES:
        layer = MoELayer(copy.deepcopy(gate), [copy.deepcopy(e) for e in experts[rank * per : (rank + 1) * per]], num_experts=EXPERTS, top_k=K, overlap_degree=degree, normalize=normalize, capacity_factor=factor)
        x = data[rank][0].clone().requires_grad_(True)
        y = layer(x)
        (y * data[rank][1]).sum().backward()
        pairs = {"x": (x.grad, ref_x[rank].grad)}
        pairs.update({f"gate.{n}": (q.grad, dict(ref_gates[rank].named_parameters())[n].grad) for n, q in layer.gate.named_parameters()})
        for j, expert in enumerate(layer.experts):
            ref = dict(ref_experts[rank * per + j].named_parameters())
            pairs.update({f"expert{rank * per + j}.{n}": (q.grad, ref[n].grad) for n, q in expert.named_parameters()})
        result["forward"][degree] = _error(y.detach(), want_y)
        result["gradients"][degree] = {n: _error(g, r) for n, (g, r) in pairs.items()}
        mine = {"y": y.detach(), **{n: torch.zeros(0) if g is None else g for n, (g, _) in pairs.items()}}
        if degree == DEGREES[0]:
            first = mine
        else:  # [max |y - y(d=1)|, max over gradients of |g - g(d=1)| / max |g(d=1)|]
            grads = [_amax(mine[n] - first[n]) / _amax(first[n]) for n in first if n != "y" and _amax(first[n]) > 0]
            result["versus_d1"][degree] = [_amax(mine["y"] - first["y"]), max(grads, default=0.0)]
    return result


def auto_degree(rank: int, p: int) -> dict[str, Any]:
    """overlap_degree='auto' gives the same output as 1 part (or the error that says why it cannot run)."""
    gate, experts = modules("uniform", torch.float64)
    x, _ = tokens(7, rank, (5, 40)[rank], torch.float64)
    outs = {}
    for degree in ("auto", 1):
        layer = MoELayer(copy.deepcopy(gate), [copy.deepcopy(e) for e in experts[rank * 2 : rank * 2 + 2]], num_experts=EXPERTS, top_k=K, overlap_degree=degree)
        try:
            outs[degree] = layer(x)
        except CommError as err:
            return {"error": str(err)}
    return {"difference": float((outs["auto"] - outs[1]).abs().max())}


class _Slow(nn.Module):
    """An expert that sleeps (releasing the GIL, as a real expert's kernels would) and records when it ran."""

    def __init__(self, spans: list[tuple[str, float, float]]) -> None:
        super().__init__()
        self.linear, self.spans = nn.Linear(HIDDEN, HIDDEN, dtype=torch.float64), spans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        time.sleep(0.03)
        self.spans.append(("expert", start, time.perf_counter()))
        return self.linear(x)


def overlap(rank: int, p: int) -> dict[str, Any]:
    """Run 3 parts with slow experts, timing each exchange (on the lane's thread) and each expert."""
    spans: list[tuple[str, float, float]] = []
    threads: set[str] = set()
    plain_dispatch, plain_combine = layer_module.dispatch, layer_module.combine

    def timed(name: str, fn: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            spans.append((name, start, time.perf_counter()))
            threads.add(threading.current_thread().name)
            return out

        return run

    torch.manual_seed(0)
    layer = MoELayer(nn.Linear(HIDDEN, EXPERTS, dtype=torch.float64), [_Slow(spans) for _ in range(2)], num_experts=EXPERTS, top_k=K, overlap_degree=3)
    x, _ = tokens(11, rank, 30, torch.float64)
    layer_module.dispatch, layer_module.combine = timed("dispatch", plain_dispatch), timed("combine", plain_combine)
    try:
        layer(x)
    finally:
        layer_module.dispatch, layer_module.combine = plain_dispatch, plain_combine
    exchanges = [(a, b) for name, a, b in spans if name != "expert"]
    experts = [(a, b) for name, a, b in spans if name == "expert"]
    hidden = sum(max(0.0, min(b, d) - max(a, c)) for a, b in exchanges for c, d in experts)  # exchange time inside expert time
    return {"exchanges": len(exchanges), "exchange_s": sum(b - a for a, b in exchanges), "hidden_s": hidden, "lane_threads": sorted(threads)}


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("moe_block_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def errors(rank: int, p: int) -> dict[str, str]:
    """The message each bad input raises (every rank makes the same calls, so nothing waits on a peer)."""
    gate, experts = modules("uniform", torch.float32)
    mine = experts[rank * 2 : rank * 2 + 2]
    good = MoELayer(gate, mine, num_experts=EXPERTS, top_k=K, overlap_degree=1)
    calls = {
        "top_k 5": lambda: MoELayer(gate, mine, num_experts=EXPERTS, top_k=5),
        "num_experts 3": lambda: MoELayer(gate, mine, num_experts=3, top_k=K),
        "3 local experts": lambda: MoELayer(gate, experts[:3], num_experts=EXPERTS, top_k=K),
        "overlap_degree 0": lambda: MoELayer(gate, mine, num_experts=EXPERTS, top_k=K, overlap_degree=0),
        "x 3-D": lambda: good(torch.ones(2, 3, HIDDEN)),
        "hidden 6": lambda: good(torch.ones(3, 6)),
        "gate output": lambda: MoELayer(nn.Linear(HIDDEN, 3), mine, num_experts=EXPERTS, top_k=K, overlap_degree=2)(torch.ones(3, HIDDEN)),
    }
    found = {}
    for name, call in calls.items():
        try:
            call()
            found[name] = "no error"
        except CommError as err:
            found[name] = str(err)
    found["after"] = str(tuple(good(torch.ones(3, HIDDEN)).shape))  # the group still works
    return found


def refused_on_one_rank(rank: int) -> dict[str, Any]:
    """Rank 1 passes a bad x, rank 0 a good one: rank 0 must raise at once, naming rank 1 (the last thing the job does)."""
    gate, experts = modules("uniform", torch.float32)
    layer = MoELayer(gate, experts[rank * 2 : rank * 2 + 2], num_experts=EXPERTS, top_k=K, overlap_degree=2)
    start = time.perf_counter()
    try:
        layer(torch.ones(4, 6 if rank == 1 else HIDDEN))
        message = "no error"
    except CommError as err:
        message = str(err)
    return {"message": message, "seconds": time.perf_counter() - start}


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("synccl")
    rank, p = dist.get_rank(), dist.get_world_size()
    started = time.perf_counter()
    result: dict[str, Any] = {"cases": {}}
    seed = 0
    for dtype in (torch.float64, torch.float32):
        for kind in KINDS:
            for counts in COUNTS:
                for factor in FACTORS:
                    for normalize in (False, True):
                        seed += 1
                        name = f"{dtype} {kind} T={counts} capacity={factor} normalize={normalize}"
                        result["cases"][name] = case(rank, p, seed, kind, counts, factor, normalize, dtype)
    result["cases_s"] = time.perf_counter() - started
    result["auto"] = auto_degree(rank, p)
    result["overlap"] = overlap(rank, p)
    ex = load_example()
    result["losses"] = {}
    for dtype in (torch.float64, torch.float32):
        result["losses"][f"expert parallel {dtype}"] = ex.train(ex.block(dtype=dtype), dtype=dtype)
        result["losses"][f"reference {dtype}"] = ex.train(ex.block(reference=True, dtype=dtype), sharded=False, dtype=dtype)
    result["errors"] = errors(rank, p)
    result["refused"] = refused_on_one_rank(rank)
    result["seconds"] = time.perf_counter() - started
    (Path(sys.argv[1]) / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
