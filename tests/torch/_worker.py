"""Worker for the torch backend tests: ``python _worker.py SCENARIO`` under torchrun or mpiexec.

Each scenario compares the "synccl" backend with gloo on the same inputs, in the same job.
Prints "PASS <rank> <checks>" or "FAIL <rank> <what>" lines; exits 1 on any failure.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

import synccl.torch  # noqa: F401 - registers the backend

FAILURES: list[str] = []
CHECKS = [0]


def same(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    CHECKS[0] += 1
    if got.dtype.is_floating_point:
        ok = torch.allclose(got.double(), want.double(), rtol=1e-2, atol=1e-2)
    else:
        ok = torch.equal(got, want)
    if not ok:
        FAILURES.append(f"{name}: got {got.flatten()[:6].tolist()} want {want.flatten()[:6].tolist()}")


def inputs(shape, dtype, rank, salt=0):
    g = torch.Generator().manual_seed(1000 * salt + rank)
    base = torch.randint(-3, 4, shape, generator=g)
    if dtype == torch.bool:
        return base > 0
    if dtype == torch.uint8:
        return base.abs().to(dtype)
    return base.to(dtype)


def ops(gloo) -> None:
    r, n = dist.get_rank(), dist.get_world_size()
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int32, torch.int64, torch.uint8]
    reduce_ops = {
        "SUM": dist.ReduceOp.SUM,
        "PRODUCT": dist.ReduceOp.PRODUCT,
        "MIN": dist.ReduceOp.MIN,
        "MAX": dist.ReduceOp.MAX,
        "BAND": dist.ReduceOp.BAND,
        "BOR": dist.ReduceOp.BOR,
        "BXOR": dist.ReduceOp.BXOR,
    }
    for salt, dtype in enumerate(dtypes):
        for name, op in reduce_ops.items():
            if name in ("BAND", "BOR", "BXOR") and dtype.is_floating_point:
                continue
            a, b = inputs((6, 5), dtype, r, salt), inputs((6, 5), dtype, r, salt)
            dist.all_reduce(a, op=op)
            dist.all_reduce(b, op=op, group=gloo)
            same(f"all_reduce {dtype} {name}", a, b)
    avg = inputs((8,), torch.float32, r, 99)
    dist.all_reduce(avg, op=dist.ReduceOp.AVG)
    total = sum(inputs((8,), torch.float32, k, 99) for k in range(n))
    same("all_reduce AVG", avg, total / n)
    # Non-contiguous tensors.
    a = inputs((4, 6), torch.float32, r, 7).t()
    b = a.clone()
    dist.all_reduce(a)
    dist.all_reduce(b, group=gloo)
    same("all_reduce non-contiguous", a, b)
    for root in range(n):
        a, b = inputs((5,), torch.int32, r, 20 + root), inputs((5,), torch.int32, r, 20 + root)
        dist.broadcast(a, src=root)
        dist.broadcast(b, src=root, group=gloo)
        same(f"broadcast root {root}", a, b)
        a, b = inputs((5,), torch.float32, r, 30 + root), inputs((5,), torch.float32, r, 30 + root)
        dist.reduce(a, dst=root)
        dist.reduce(b, dst=root, group=gloo)
        if r == root:
            same(f"reduce root {root}", a, b)
        x = inputs((3,), torch.float32, r, 40 + root)
        ga = [torch.empty(3) for _ in range(n)] if r == root else None
        gb = [torch.empty(3) for _ in range(n)] if r == root else None
        dist.gather(x, ga, dst=root)
        dist.gather(x, gb, dst=root, group=gloo)
        if r == root:
            same(f"gather root {root}", torch.stack(ga), torch.stack(gb))
        parts = [inputs((3,), torch.float32, k, 50 + root) for k in range(n)] if r == root else None
        sa, sb = torch.empty(3), torch.empty(3)
        dist.scatter(sa, parts, src=root)
        dist.scatter(sb, parts, src=root, group=gloo)
        same(f"scatter root {root}", sa, sb)
    x = inputs((4,), torch.float32, r, 60)
    la, lb = [torch.empty(4) for _ in range(n)], [torch.empty(4) for _ in range(n)]
    dist.all_gather(la, x)
    dist.all_gather(lb, x, group=gloo)
    same("all_gather", torch.stack(la), torch.stack(lb))
    ta, tb = torch.empty(4 * n), torch.empty(4 * n)
    dist.all_gather_into_tensor(ta, x)
    dist.all_gather_into_tensor(tb, x, group=gloo)
    same("all_gather_into_tensor", ta, tb)
    y = inputs((4 * n,), torch.float32, r, 61)
    ra, rb = torch.empty(4), torch.empty(4)
    dist.reduce_scatter_tensor(ra, y)
    dist.reduce_scatter_tensor(rb, y, group=gloo)
    same("reduce_scatter_tensor", ra, rb)
    lists = [inputs((4,), torch.float32, r, 62 + k) for k in range(n)]
    ra, rb = torch.empty(4), torch.empty(4)
    dist.reduce_scatter(ra, lists)
    same("reduce_scatter", ra, sum(inputs((4,), torch.float32, k, 62 + r) for k in range(n)))
    z = inputs((2 * n,), torch.float32, r, 63)
    aa, ab = torch.empty(2 * n), torch.empty(2 * n)
    dist.all_to_all_single(aa, z)
    dist.all_to_all_single(ab, z, group=gloo)
    same("all_to_all_single", aa, ab)
    splits_in = [(r + k) % 3 + 1 for k in range(n)]
    splits_out = [(k + r) % 3 + 1 for k in range(n)]
    zz = inputs((sum(splits_in),), torch.float32, r, 64)
    ua, ub = torch.empty(sum(splits_out)), torch.empty(sum(splits_out))
    dist.all_to_all_single(ua, zz, splits_out, splits_in)
    dist.all_to_all_single(ub, zz, splits_out, splits_in, group=gloo)
    same("all_to_all_single uneven", ua, ub)
    outs_a, outs_b = [torch.empty(2) for _ in range(n)], [torch.empty(2) for _ in range(n)]
    dist.all_to_all(outs_a, [inputs((2,), torch.float32, r, 65 + k) for k in range(n)])
    dist.all_to_all(outs_b, [inputs((2,), torch.float32, r, 65 + k) for k in range(n)], group=gloo)
    same("all_to_all", torch.stack(outs_a), torch.stack(outs_b))
    dist.barrier()
    if n >= 2:
        if r == 0:
            dist.send(torch.arange(7.0), dst=1)
        elif r == 1:
            got = torch.empty(7)
            dist.recv(got, src=0)
            same("send/recv", got, torch.arange(7.0))
    try:
        dist.all_reduce(torch.ones(2), op=dist.ReduceOp.BAND)
        FAILURES.append("BAND on float did not raise")
    except Exception as err:  # noqa: BLE001 - the message is what is checked
        CHECKS[0] += 1
        if "band" not in str(err).lower():
            FAILURES.append(f"BAND on float raised an unclear error: {err}")


def async_ops(gloo) -> None:
    r, n = dist.get_rank(), dist.get_world_size()
    tensors = [torch.full((1000,), float(r + k)) for k in range(6)]
    works = [dist.all_reduce(t, async_op=True) for t in tensors]
    for k in reversed(range(6)):
        works[k].wait()
        same(f"async {k}", tensors[k], torch.full((1000,), float(sum(range(n)) + n * k)))
        CHECKS[0] += 1
        if not works[k].is_completed():
            FAILURES.append("is_completed() false after wait()")
    fut = dist.all_reduce(torch.ones(3), async_op=True).get_future()
    same("future value", fut.wait()[0], torch.full((3,), float(n)))


def functional(gloo) -> None:
    import torch.distributed._functional_collectives as fc

    r, n = dist.get_rank(), dist.get_world_size()
    same("fc.all_reduce", fc.all_reduce(torch.full((4,), float(r)), "sum", group=dist.group.WORLD), torch.full((4,), float(sum(range(n)))))
    same("fc.all_gather_tensor", fc.all_gather_tensor(torch.full((2,), float(r)), 0, group=dist.group.WORLD), torch.arange(n).repeat_interleave(2).float())
    same("fc.reduce_scatter_tensor", fc.reduce_scatter_tensor(torch.arange(2.0 * n), "sum", 0, group=dist.group.WORLD), torch.arange(2.0 * n)[2 * r : 2 * r + 2] * n)


def subgroups(gloo) -> None:
    r, n = dist.get_rank(), dist.get_world_size()
    members = list(range(0, n, 2))
    group = dist.new_group(members)
    t = torch.full((3,), float(r))
    if r in members:
        dist.all_reduce(t, group=group)
        same("new_group allreduce", t, torch.full((3,), float(sum(members))))


def ddp(gloo) -> None:
    from torch.nn.parallel import DistributedDataParallel

    r = dist.get_rank()
    losses = {}
    for label, group in (("synccl", None), ("gloo", gloo)):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
        wrapped = DistributedDataParallel(model, process_group=group)
        opt = torch.optim.SGD(wrapped.parameters(), lr=0.05)
        g = torch.Generator().manual_seed(r)
        losses[label] = []
        for _ in range(20):
            x = torch.randn(8, 16, generator=g)
            loss = (wrapped(x) - x.sum(dim=1, keepdim=True)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[label].append(loss.item())
    same("DDP losses", torch.tensor(losses["synccl"]), torch.tensor(losses["gloo"]))


def fsdp(gloo) -> None:
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    for layer in model:
        fully_shard(layer)
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(dist.get_rank()))
    loss = model(x).sum()
    loss.backward()
    opt.step()
    CHECKS[0] += 1
    if not torch.isfinite(loss):
        FAILURES.append("FSDP2 loss not finite")


SCENARIOS = {"ops": ops, "async": async_ops, "functional": functional, "subgroups": subgroups, "ddp": ddp, "fsdp": fsdp}


def main(names: list[str]) -> int:
    dist.init_process_group("synccl")  # under mpiexec, synccl.torch agrees on MASTER_ADDR/MASTER_PORT over MPI here
    gloo = dist.new_group(backend="gloo")
    for name in names:
        SCENARIOS[name](gloo)
    dist.barrier()
    rank = dist.get_rank()
    for f in FAILURES:
        print(f"FAIL {rank} {f}", flush=True)
    print(f"PASS {rank} {CHECKS[0]}" if not FAILURES else f"FAILED {rank}", flush=True)
    dist.destroy_process_group()
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(SCENARIOS)))
