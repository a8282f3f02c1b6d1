"""The README's benchmark table: synccl (registered and plain buffers) against MPI and gloo.

``python -m synccl.bench.allreduce_table [--out table.md]`` measures, on 2 ranks of this machine,
float32 sum all_reduce from 4 KiB to 64 MiB (x4), then all_gather, reduce_scatter and all_to_all
at 64 MiB, and writes Markdown tables (bus bandwidth and time per backend, with the date, machine
and versions). The ranks' nccl-tests tables go to stderr as they are measured.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import logging
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from synccl.bench._config import BenchConfig
from synccl.bench._launch import launch
from synccl.bench._report import Record
from synccl.collectives import Collective
from synccl.exceptions import SyncclError
from synccl.units import format_size

__all__ = ["COLUMNS", "measure_records", "markdown", "main"]

logger = logging.getLogger(__name__)

#: Table columns: name -> heading. ``synccl-registered`` is synccl with ``comm.empty`` buffers.
COLUMNS = {"synccl-registered": "synccl, registered", "synccl": "synccl, numpy buffers", "mpi": "MPI (mpi4py)", "gloo": "gloo (torch)"}
_SWEEP = (4 << 10, 64 << 20, 4)
_LARGE = 64 << 20
_OTHERS = (Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_TO_ALL)


def measure_records(
    collective: Collective,
    sizes: tuple[int, int, int],
    columns: Sequence[str],
    *,
    nranks: int,
    iters: int,
    warmup: int,
    workdir: Path,
) -> dict[str, list[Record]]:
    """Run one sweep per buffer kind under mpiexec and return each column's records.

    Registered synccl runs in its own job; the other columns share one job.

    Parameters
    ----------
    collective : Collective
        What to measure.
    sizes : (min_bytes, max_bytes, factor)
        The sweep.
    columns : sequence of str
        Names from :data:`COLUMNS`.
    nranks, iters, warmup : int
        Ranks, timed and warm-up iterations.
    workdir : Path
        Where the jobs write their JSON.

    Returns
    -------
    dict of str to list of Record
        Column name -> its records.

    Raises
    ------
    SyncclError
        If a job fails or a result is wrong.
    """
    jobs = [(("synccl",), True)] if "synccl-registered" in columns else []
    plain = tuple(c for c in columns if c != "synccl-registered")
    if plain:
        jobs.append((plain, False))
    found: dict[str, list[Record]] = {}
    for backends, registered in jobs:
        path = workdir / f"{collective.value}-{'registered' if registered else 'plain'}.json"
        config = BenchConfig(collective, *sizes[:2], factor=sizes[2], iters=iters, warmup=warmup, backends=backends, registered=registered, json_path=str(path))
        status = launch(config, nranks, stdout=sys.stderr)
        if status != 0:
            raise SyncclError(f"bench table: the {collective.value} run on {', '.join(backends)} ended with status {status}")
        for data in _read(path):
            name = "synccl-registered" if registered else data.backend
            found.setdefault(name, []).append(data)
    return found


def _read(path: Path) -> list[Record]:
    return [Record(**item) for item in json.loads(path.read_text())]


def _cell(rec: Record | None) -> str:
    return "–" if rec is None else f"{rec.busbw_gbps:.2f} ({_time(rec.time_us)})"


def _time(us: float) -> str:
    return f"{us / 1000:.1f} ms" if us >= 10_000 else f"{us:.0f} µs"


def markdown(
    sweep: dict[str, list[Record]],
    large: dict[Collective, dict[str, list[Record]]],
    columns: Sequence[str],
    *,
    inplace: bool,
    meta: str,
) -> str:
    """The README section: the all_reduce sweep, then the other collectives at the largest size.

    Cells are bus bandwidth in GB/s with the time per call in parentheses; the ratio columns
    divide the first column's bandwidth by MPI's and gloo's.

    Examples
    --------
    >>> rec = lambda b, t: Record(b, "all_reduce", 2, 4096, 1024, "float32", "sum", None, False, t, 4096 / t / 1e3, 4096 / t / 1e3, 0)
    >>> print(markdown({"synccl": [rec("synccl", 10.0)], "mpi": [rec("mpi", 20.0)]}, {}, ["synccl", "mpi"], inplace=False, meta="m"))
    ... # doctest: +NORMALIZE_WHITESPACE
    ### all_reduce, 2 ranks, float32 sum, out of place
    <BLANKLINE>
    busbw GB/s (time per call); m
    <BLANKLINE>
    | size | synccl, numpy buffers | MPI (mpi4py) | synccl, numpy buffers / MPI |
    |---:|---:|---:|---:|
    | 4KiB | 0.41 (10 µs) | 0.20 (20 µs) | 2.00× |
    """
    mode = "in place" if inplace else "out of place"
    first = columns[0]
    baselines = [c for c in ("mpi", "gloo") if c in columns and c != first]

    def pick(records: list[Record], size: int | None = None) -> Record | None:
        chosen = [r for r in records if r.inplace is inplace and (size is None or r.size_bytes == size)]
        return chosen[-1] if chosen else None

    def ratio(records: dict[str, list[Record]], base: str, size: int | None = None) -> str:
        a, b = pick(records.get(first, []), size), pick(records.get(base, []), size)
        return f"{a.busbw_gbps / b.busbw_gbps:.2f}×" if a and b and b.busbw_gbps > 0 else "–"

    heads = [COLUMNS[c] for c in columns] + [f"{COLUMNS[first]} / {COLUMNS[b].split(' ')[0]}" for b in baselines]
    nranks = next(r.nranks for recs in sweep.values() for r in recs)
    lines = [f"### all_reduce, {nranks} ranks, float32 sum, {mode}", "", f"busbw GB/s (time per call); {meta}", ""]
    lines += ["| size | " + " | ".join(heads) + " |", "|---:|" + "---:|" * len(heads)]
    sizes = sorted({r.size_bytes for recs in sweep.values() for r in recs})
    for size in sizes:
        cells = [_cell(pick(sweep.get(c, []), size)) for c in columns] + [ratio(sweep, b, size) for b in baselines]
        lines.append(f"| {format_size(size)} | " + " | ".join(cells) + " |")
    if large:
        lines += ["", f"### Other collectives at {format_size(_LARGE)}, {nranks} ranks, float32, {mode}", ""]
        lines += ["| collective | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
        for collective, records in large.items():
            cells = [_cell(pick(records.get(c, []))) for c in columns] + [ratio(records, b) for b in baselines]
            lines.append(f"| {collective.value} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _meta(iters: int, warmup: int) -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = models[0] if models else cpu
    versions = []
    for package in ("synccl", "numpy", "mpi4py", "mpich", "torch"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    today = datetime.date.today().isoformat()
    return (
        f"measured {today} on {platform.node()} ({os.cpu_count()} × {cpu}, {platform.system()} {platform.release()}), "
        f"Python {platform.python_version()}, {', '.join(versions)}; {iters} iterations after {warmup} warm-up, max over ranks"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and write the tables; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m synccl.bench.allreduce_table", description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="Markdown file to write (default: stdout)")
    parser.add_argument("--nranks", type=int, default=2, help="ranks (default 2)")
    parser.add_argument("-n", "--iters", type=int, default=20, help="timed iterations (default 20)")
    parser.add_argument("-w", "--warmup_iters", type=int, default=5, help="warm-up iterations (default 5)")
    parser.add_argument("--columns", default=",".join(COLUMNS), help=f"comma-separated, from {', '.join(COLUMNS)} (default all)")
    parser.add_argument("--inplace", action="store_true", help="report the in-place calls instead of out-of-place")
    parser.add_argument("--sweep-only", action="store_true", help="skip the other collectives at 64 MiB")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown or not columns:
        parser.error(f"--columns: unknown {', '.join(unknown)!r}; valid: {', '.join(COLUMNS)}")
    options = {"nranks": args.nranks, "iters": args.iters, "warmup": args.warmup_iters}
    try:
        with tempfile.TemporaryDirectory(prefix="synccl-bench-") as tmp:
            work = Path(tmp)
            sweep = measure_records(Collective.ALL_REDUCE, _SWEEP, columns, workdir=work, **options)
            large = {} if args.sweep_only else {c: measure_records(c, (_LARGE, _LARGE, 2), columns, workdir=work, **options) for c in _OTHERS}
    except (SyncclError, ValueError) as err:
        print(f"bench table: error: {err}", file=sys.stderr)
        return 2
    text = markdown(sweep, large, columns, inplace=args.inplace, meta=_meta(args.iters, args.warmup_iters))
    if args.out:
        Path(args.out).write_text(text)
        logger.info("wrote %s", args.out)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
