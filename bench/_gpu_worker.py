"""One rank of :mod:`synccl.bench.gpu_check`: ``python -m synccl.bench._gpu_worker PHASE [ARG]``.

Started with torchrun's variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``;
no MPI needed). Each phase prints one line ``GPUCHECK <json>`` per rank: its cases, failures and
seconds (and, for ``bandwidth``, its timings). Phases:

- ``collectives [MAX_BYTES]``: every collective on CuPy arrays against numpy (:func:`matrix`);
- ``corpus FILE,FILE,...``: MSCCL XML files, each run in its own mode on 1 MiB;
- ``torch``: the torch backend "synccl" on CUDA tensors;
- ``bandwidth``: all_reduce times of synccl and, with a GPU per rank, of torch's NCCL;
- ``dead``: rank 1 dies after one call; the others must raise CommError soon (for the tests).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from synccl.bench._apply import call_collective

KiB, MiB = 1 << 10, 1 << 20
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "reduce", "gather", "scatter")
COMBINING = ("all_reduce", "reduce_scatter", "reduce")
SPLIT_INPUT = ("reduce_scatter", "all_to_all", "scatter")
#: Message sizes of the float32 sum cases (the larger buffer's bytes, as nccl-tests count).
SIZES = (1 * KiB, 64 * KiB, 1 * MiB, 16 * MiB, 64 * MiB)
MARK = "GPUCHECK "
Case = tuple[str, str, str, int, bool]  # collective, dtype, op, bytes, in place


def cases(max_bytes: int) -> list[Case]:
    """The matrix: float32 sums at every size up to ``max_bytes``, other dtypes and ops at 64 KiB, in place at 1 MiB.

    >>> len(cases(64 << 10)) > 40
    True
    """
    out: list[Case] = []
    for coll in COLLECTIVES:
        out += [(coll, "float32", "sum", size, False) for size in SIZES if size <= max_bytes and (size <= 16 * MiB or coll not in ("all_to_all", "gather", "scatter", "reduce"))]
        out += [(coll, dtype, "sum", 64 * KiB, False) for dtype in ("float16", "float64", "int32", "int8", "uint8")]
        if coll in COMBINING:
            out += [(coll, "float32", op, 64 * KiB, False) for op in ("prod", "min", "max", "avg")]
            out.append((coll, "int32", "avg", 64 * KiB, False))
        if coll not in ("gather", "scatter") and 1 * MiB <= max_bytes:
            out.append((coll, "float32", "sum", 1 * MiB, True))
    return out


def data(seed: int, rank: int, count: int, dtype: np.dtype, op: str) -> np.ndarray:
    """A rank's input: small integers, exact in every dtype and every order of reduction."""
    rng = np.random.default_rng([seed, rank])
    low, high = (1, 3) if op == "prod" else (0, 4) if dtype == np.uint8 else (-3, 4)
    return rng.integers(low, high, size=count).astype(dtype)


def close(got: np.ndarray, want: np.ndarray) -> bool:
    if np.issubdtype(want.dtype, np.integer):
        return np.array_equal(got, want)
    return np.allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=1e-2, atol=1e-2)


def run_case(comm: Any, xp: Any, case: Case, seed: int, *, root: int | None = None) -> str | None:
    """Run one case on arrays of ``xp`` (CuPy); the failure's description, or ``None``."""
    from synccl.collectives import expected_outputs

    coll, dtype_name, op, nbytes, inplace = case
    n, r = comm.size, comm.rank
    dtype = np.dtype(dtype_name)
    count = max(1, nbytes // dtype.itemsize // (n if coll in SPLIT_INPUT + ("all_gather", "gather") else 1))
    size = count * n if coll in SPLIT_INPUT else count
    root = seed % n if root is None else root
    inputs = [data(seed, k, size, dtype, op) for k in range(n)]
    want = expected_outputs(coll, inputs, op=op, root=root)[r]
    if op == "avg" and want is not None:  # the runtime divides the sum by the rank count in the buffer's dtype
        total = expected_outputs(coll, inputs, op="sum", root=root)[r]
        want = np.floor_divide(total, n) if np.issubdtype(dtype, np.integer) else (total / n).astype(dtype)
    mine = xp.asarray(inputs[r])
    got = call_collective(comm, lambda k: xp.empty(k, mine.dtype), coll, mine, count, op=op, inplace=inplace, root=root)
    comm.synchronize()
    if want is None:
        return None
    host = xp.asnumpy(got)
    if not close(host, want):
        wrong = int(np.count_nonzero(~np.isclose(np.asarray(host, np.float64), np.asarray(want, np.float64), rtol=1e-2, atol=1e-2)))
        return f"{coll} {dtype_name} {op} {nbytes} B {'in place' if inplace else 'out of place'}: rank {r}: {wrong} of {want.size} wrong, got {host[:4]} want {want[:4]}"
    return None


def matrix(comm: Any, max_bytes: int) -> tuple[list[str], dict[str, Any]]:
    """Every case of :func:`cases` up to ``max_bytes`` on CuPy arrays; stops at a failure that breaks the communicator."""
    import cupy

    failures = []
    todo = cases(max_bytes)
    for seed, case in enumerate(todo):
        try:
            failure = run_case(comm, cupy, case, seed)
        except Exception as err:  # noqa: BLE001 - every failure is reported with its case
            failure = f"{case}: rank {comm.rank} raised {type(err).__name__}: {err}"
            if comm.world.broken:
                failures.append(failure)
                break
        if failure:
            failures.append(failure)
    return failures, {"cases": len(todo)}


def corpus(comm: Any, paths: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Each MSCCL XML file registered and run in its own mode (in place or not, its root) on 1 MiB of float32."""
    import cupy

    import synccl
    from synccl._xml_run import element_count

    failures = []
    for seed, path in enumerate(paths):
        program = synccl.load_xml(path, min_bytes=0, max_bytes=1 << 50)
        coll = program.collective.value
        count = element_count(program, 1 * MiB, 4)
        nbytes = count * 4 * (comm.size if coll in SPLIT_INPUT + ("all_gather", "gather") else 1)
        try:
            failure = run_case(comm, cupy, (coll, "float32", "sum", nbytes, program.spec.inplace), seed, root=program.spec.root or 0)
        except Exception as err:  # noqa: BLE001
            failure = f"{os.path.basename(path)}: rank {comm.rank} raised {type(err).__name__}: {err}"
        if failure:
            failures.append(f"{os.path.basename(path)}: {failure}")
    return failures, {"cases": len(paths)}


def torch_backend() -> tuple[list[str], dict[str, Any]]:
    """The torch backend on CUDA tensors: the collectives DDP and FSDP use, checked on the host."""
    import torch
    import torch.distributed as dist

    import synccl.torch  # noqa: F401 - registers the backend "synccl"

    dist.init_process_group("synccl")
    n, r = dist.get_world_size(), dist.get_rank()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", r)) % torch.cuda.device_count())
    torch.cuda.set_device(device)
    failures = []

    def expect(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
        if not torch.allclose(got.float().cpu(), want.float().cpu(), rtol=1e-2, atol=1e-2):
            failures.append(f"torch {name}: rank {r} got {got.flatten()[:4].tolist()} want {want.flatten()[:4].tolist()}")

    base = torch.arange(4096, dtype=torch.float32, device=device)
    t = base * (r + 1)
    dist.all_reduce(t)
    expect("all_reduce", t, base * (n * (n + 1) // 2))
    b = torch.full((5000,), float(r + 1), dtype=torch.bfloat16, device=device)
    dist.all_reduce(b, op=dist.ReduceOp.AVG)
    expect("all_reduce bfloat16 avg", b, torch.full((5000,), (n + 1) / 2))
    out = torch.empty(n * 1000, device=device)
    dist.all_gather_into_tensor(out, torch.full((1000,), float(r), device=device))
    expect("all_gather_into_tensor", out, torch.arange(n, dtype=torch.float32).repeat_interleave(1000))
    shard = torch.empty(1000, device=device)
    dist.reduce_scatter_tensor(shard, torch.arange(n * 1000, dtype=torch.float32, device=device))
    expect("reduce_scatter_tensor", shard, n * torch.arange(r * 1000, (r + 1) * 1000, dtype=torch.float32))
    x = torch.full((777,), float(r), device=device)
    dist.broadcast(x, src=n - 1)
    expect("broadcast", x, torch.full((777,), float(n - 1)))
    a2a = torch.empty(n * 10, device=device)
    dist.all_to_all_single(a2a, torch.arange(n * 10, dtype=torch.float32, device=device) + 100 * r)
    expect("all_to_all_single", a2a, torch.cat([torch.arange(r * 10, (r + 1) * 10, dtype=torch.float32) + 100 * k for k in range(n)]))
    y = base.clone()
    work = dist.all_reduce(y, async_op=True)
    y.mul_(2)  # queued after the collective on the same stream, as with NCCL
    work.wait()
    expect("async all_reduce then mul", y, base * 2 * n)
    dist.destroy_process_group()
    return failures, {"cases": 7}


def bandwidth(comm: Any, sizes: tuple[int, ...], iters: int) -> tuple[list[str], dict[str, Any]]:
    """Seconds per all_reduce (float32, out of place) for synccl and, with a GPU per rank, NCCL."""
    import cupy
    import torch
    import torch.distributed as dist

    times: dict[str, list[float | None]] = {"synccl": [], "nccl": []}
    for size in sizes:
        x, y = cupy.ones(size // 4, np.float32), cupy.empty(size // 4, np.float32)
        comm.allreduce(x, y)  # prepared and warm
        comm.synchronize()
        comm.barrier()
        start = time.perf_counter()
        for _ in range(iters):
            comm.allreduce(x, y)
        comm.synchronize()
        times["synccl"].append((time.perf_counter() - start) / iters)
    if torch.cuda.device_count() >= comm.size:
        # synccl's rendezvous already holds MASTER_PORT: NCCL's group meets in a prefix of its store.
        store = dist.PrefixStore("nccl-bandwidth", comm.world.rendezvous.store)
        dist.init_process_group("nccl", store=store, rank=comm.rank, world_size=comm.size, device_id=torch.device("cuda", comm.rank))
        for size in sizes:
            t = torch.ones(size // 4, device="cuda")
            dist.all_reduce(t)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(iters):
                dist.all_reduce(t)
            torch.cuda.synchronize()
            times["nccl"].append((time.perf_counter() - start) / iters)
        dist.destroy_process_group()
    else:
        times["nccl"] = [None] * len(sizes)
    return [], {"sizes": list(sizes), "times": times}


def dead(comm: Any) -> tuple[list[str], dict[str, Any]]:
    """Rank 1 dies after its first call; every other rank must raise CommError (returns what went wrong)."""
    import signal

    import cupy

    from synccl.exceptions import CommError

    x = cupy.ones(1 << 20, np.float32)
    comm.allreduce(x)
    comm.synchronize()
    if comm.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(1.0)
    start = time.perf_counter()
    try:
        comm.allreduce(x)
        comm.synchronize()
    except CommError as err:
        seconds = round(time.perf_counter() - start, 2)
        named = "rank 1" in str(err)
        return ([] if named else [f"rank {comm.rank}: the error does not name rank 1: {err}"]), {"cases": 1, "raised_after_s": seconds, "error": str(err)}
    return [f"rank {comm.rank}: no CommError after rank 1 died"], {"cases": 1}


def report(phase: str, run: Callable[[], tuple[list[str], dict[str, Any]]]) -> int:
    """Run a phase and print this rank's line; the exit status (1 on a failure)."""
    start = time.perf_counter()
    try:
        failures, extra = run()
    except Exception:  # noqa: BLE001 - a crash is this rank's failure, reported with its traceback
        failures, extra = [f"rank {os.environ['RANK']} raised:\n{traceback.format_exc(limit=8)}"], {}
    line = {"phase": phase, "rank": int(os.environ["RANK"]), "failures": failures[:8], "nfailures": len(failures), "seconds": round(time.perf_counter() - start, 2), **extra}
    print(MARK + json.dumps(line), flush=True)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    phase = args[0]
    if phase == "torch":
        return report(phase, torch_backend)
    import cupy

    import synccl

    cupy.cuda.Device(int(os.environ.get("LOCAL_RANK", os.environ["RANK"])) % cupy.cuda.runtime.getDeviceCount()).use()
    comm = synccl.init()
    phases: dict[str, Callable[[], tuple[list[str], dict[str, Any]]]] = {
        "collectives": lambda: matrix(comm, int(args[1]) if len(args) > 1 else SIZES[-1]),
        "corpus": lambda: corpus(comm, args[1].split(",")),
        "bandwidth": lambda: bandwidth(comm, tuple(int(s) for s in args[1].split(",")), int(args[2])),
        "dead": lambda: dead(comm),
    }
    if phase not in phases:
        raise ValueError(f"gpu check worker: unknown phase {phase!r}; one of torch, {', '.join(phases)}")
    try:
        return report(phase, phases[phase])
    finally:
        comm.close()


if __name__ == "__main__":
    sys.exit(main())
