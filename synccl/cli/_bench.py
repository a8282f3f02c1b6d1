"""``synccl bench``: time collectives like nccl-tests, on synccl and, for comparison, gloo and MPI.

With ``--nranks N`` the command starts N ranks itself under mpiexec; without it, it runs as one
rank of whatever MPI job started it (``mpiexec -n 4 synccl bench all_reduce``), rank 0 printing.
"""

from __future__ import annotations

import argparse
import sys

from synccl.bench import BACKENDS, DEVICES, BenchConfig, launch, run_bench
from synccl.units import parse_size

_AVERAGES = {0: "rank0", 1: "avg", 2: "min", 3: "max"}


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="benchmark a collective like nccl-tests",
        description="Sweep a collective over message sizes and print nccl-tests' table; optionally compare with gloo and MPI.",
    )
    bench.add_argument("collective", help="allreduce, allgather, reduce_scatter, alltoall or broadcast (all_reduce etc. too)")
    bench.add_argument("-b", "--minbytes", default="32M", help="smallest size, e.g. 8, 4K, 1M (default 32M)")
    bench.add_argument("-e", "--maxbytes", default="32M", help="largest size (default 32M)")
    bench.add_argument("-f", "--stepfactor", type=int, default=2, help="size multiplier between steps (default 2)")
    bench.add_argument("-n", "--iters", type=int, default=20, help="timed iterations per size (default 20)")
    bench.add_argument("-w", "--warmup_iters", type=int, default=5, help="untimed iterations before timing (default 5)")
    bench.add_argument("-c", "--check", type=int, choices=(0, 1), default=1, help="validate results (default 1)")
    bench.add_argument("-d", "--datatype", default="float", help="float, half, bfloat16, double, int8, int32, int64 or numpy names (default float)")
    bench.add_argument("-o", "--op", default="sum", choices=("sum", "prod", "min", "max", "avg"), help="reduction (default sum)")
    bench.add_argument("-r", "--root", type=int, default=0, help="broadcast root (default 0)")
    bench.add_argument("-a", "--average", type=int, choices=tuple(_AVERAGES), default=3, help="combine rank times: 0 rank 0, 1 mean, 2 min, 3 max (default 3)")
    bench.add_argument("--algorithm", help="synccl library algorithm, e.g. ring, one_shot (default: chosen by size)")
    bench.add_argument("--xml", metavar="FILE", help="MSCCL XML file the synccl backend loads (synccl.load_xml) first; its Program runs the calls it matches (its mode: in place or out of place)")
    memory = bench.add_mutually_exclusive_group()
    memory.add_argument("--registered", dest="registered", action="store_true", default=False, help="synccl buffers from comm.empty (registered shared memory)")
    memory.add_argument("--unregistered", dest="registered", action="store_false", help="synccl buffers are plain numpy arrays (default)")
    bench.add_argument("--nranks", type=int, help="start this many ranks under mpiexec (default: run as a rank of the current MPI job)")
    bench.add_argument("--backends", default="synccl", help=f"comma-separated backends to run, from {', '.join(BACKENDS)} (default synccl)")
    bench.add_argument("--compare", default="", help="more backends to run after --backends and compare with the first, e.g. gloo,mpi")
    bench.add_argument("--torch", action="store_true", help="measure synccl through the torch.distributed API (backend 'torch-synccl') instead of directly")
    bench.add_argument("--device", choices=DEVICES, default="cpu", help="where the buffers live: cpu, or cuda (GPU <local rank> per rank; backends synccl, torch-synccl, nccl) (default cpu)")
    bench.add_argument("--repeat", type=int, default=1, metavar="R", help="run the whole sweep R times, backends taking turns within each; tables show medians, then a summary of min, max and ratios (default 1)")
    bench.add_argument("--json", metavar="PATH", help="write every measurement as a JSON list")
    bench.add_argument("--plot", metavar="PATH", help="draw busbw against size, one line per backend (PNG, SVG, PDF)")
    progress = bench.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="show the size being measured on stderr (default: if a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    bench.set_defaults(func=_run)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _run(args: argparse.Namespace) -> int:
    config = BenchConfig(
        args.collective,
        min_bytes=parse_size(args.minbytes),
        max_bytes=parse_size(args.maxbytes),
        factor=args.stepfactor,
        iters=args.iters,
        warmup=args.warmup_iters,
        dtype=args.datatype,
        op=args.op,
        root=args.root,
        algorithm=args.algorithm,
        xml=args.xml,
        registered=args.registered,
        check=bool(args.check),
        average=_AVERAGES[args.average],
        backends=tuple([("torch-synccl" if args.torch and b == "synccl" else b) for b in _names(args.backends)] + _names(args.compare)),
        json_path=args.json,
        plot_path=args.plot,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
        repeat=args.repeat,
        device=args.device,
    )
    if args.nranks is not None:
        return launch(config, args.nranks)
    records = run_bench(config)
    return 1 if any(r.wrong for r in records) else 0
