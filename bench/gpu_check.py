"""``python -m synccl.bench.gpu_check``: the GPU engine end to end on this machine's GPU, in a few minutes.

For a machine with a CUDA GPU, CuPy and torch; no MPI library is needed (ranks get torchrun's
variables, ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, and meet through torch's
TCPStore). In order, it:

1. prints the device (and refuses a GPU in an exclusive compute mode: ranks share one GPU here);
2. compiles the executor for it with NVRTC, as ``synccl kernels --arch sm_XY`` does (registers, spills);
3. runs every collective at 2 and 4 ranks on CuPy arrays against numpy: float32 sums from 1 KiB
   to 64 MiB (4 MiB at 4 ranks sharing fewer GPUs), five more dtypes and four more ops at 64 KiB, in place at 1 MiB
   (:mod:`synccl.bench._gpu_worker` is what each rank runs);
4. runs a few MSCCL XML files of ``../shared/msccl-xml`` (or ``$SYNCCL_MSCCL_CORPUS``) when present;
5. runs the torch backend "synccl" on CUDA tensors (2 ranks);
6. kills one of 2 ranks between calls: the other must raise naming it within 2 s;
7. times all_reduce of synccl, and of torch's NCCL where there is a GPU per rank (NCCL refuses
   two ranks on one GPU), from 1 MiB to 256 MiB.

It prints one summary table and exits with status 1 if anything failed (2 without a usable GPU).
Each phase has a time limit; the whole check is meant to end within 8 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synccl.bench._gpu_worker import MARK, MiB

__all__ = ["Phase", "main", "run_phase"]

#: The MSCCL XML corpus beside the repository (as tests/conftest.py finds it).
CORPUS = Path(os.environ.get("SYNCCL_MSCCL_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "msccl-xml")
BANDWIDTH_SIZES = (1 * MiB, 4 * MiB, 16 * MiB, 64 * MiB, 256 * MiB)
PHASE_LIMIT_S = 150  # per phase; the slowest (the 4-rank matrix) should need well under half of it
_CORPUS_FILES = 3  # per rank count


@dataclass
class Phase:
    """One phase's outcome, over all of its ranks."""

    name: str
    ranks: int
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    lines: list[dict[str, Any]] = field(default_factory=list)  # each rank's report

    @property
    def ok(self) -> bool:
        return not self.failures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_phase(name: str, nranks: int, *args: str, title: str | None = None, env: dict[str, str] | None = None, limit_s: float = PHASE_LIMIT_S) -> Phase:
    """Run worker phase ``name`` on ``nranks`` new processes and gather their reports.

    Parameters
    ----------
    name : str
        A phase of :mod:`synccl.bench._gpu_worker` (``collectives``, ``corpus``, ``torch``, ...).
    nranks : int
        Ranks to start (torchrun's variables, one process each).
    args : str
        The phase's arguments.
    title : str, optional
        What the summary calls it (default ``name``).
    env : dict, optional
        Variables added to this process's environment.
    limit_s : float
        The ranks still running after this long are killed and the phase fails.

    Returns
    -------
    Phase
        Cases, failures (a rank that printed no report, or exited nonzero, is one) and wall time.
    """
    port = _free_port()
    start = time.perf_counter()
    procs = []
    for rank in range(nranks):
        # Modules load at context creation, not lazily while an executor spins (a lazy load can wait for it).
        rank_env = {"CUDA_MODULE_LOADING": "EAGER", **os.environ, **(env or {}), "RANK": str(rank), "WORLD_SIZE": str(nranks), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(nranks), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        command = [sys.executable, "-m", "synccl.bench._gpu_worker", name, *args]
        procs.append(subprocess.Popen(command, env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # noqa: S603 - fixed argv
    phase = Phase(title or name, nranks)
    deadline = time.monotonic() + limit_s
    for rank, proc in enumerate(procs):
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            out, err = proc.communicate()
            phase.failures.append(f"rank {rank}: still running after {limit_s:g} s (killed)")
        reports = [json.loads(line[len(MARK) :]) for line in out.splitlines() if line.startswith(MARK)]
        if not reports:
            phase.failures.append(f"rank {rank}: exit status {proc.returncode} and no report; stderr: {err.strip()[-1500:]}")
            continue
        report = reports[-1]
        phase.lines.append(report)
        phase.cases = max(phase.cases, report.get("cases", 0))
        phase.failures += report["failures"]
        if report["nfailures"] > len(report["failures"]):
            phase.failures.append(f"rank {rank}: {report['nfailures'] - len(report['failures'])} more failures")
        if proc.returncode not in (0, 1):
            phase.failures.append(f"rank {rank}: exit status {proc.returncode}; stderr: {err.strip()[-1500:]}")
    phase.seconds = round(time.perf_counter() - start, 1)
    return phase


def _device() -> tuple[str, str, list[str]]:
    """(description, architecture, problems) of device 0."""
    import cupy

    from synccl.runtime._cuda import device_arch

    runtime = cupy.cuda.runtime
    props = runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    mode = runtime.deviceGetAttribute(runtime.cudaDevAttrComputeMode, 0)
    arch = device_arch(0)
    problems = [] if mode == 0 else [f"compute mode {mode} is not the default (0): ranks cannot share the GPU"]
    count = runtime.getDeviceCount()
    import torch

    text = (
        f"{count} x {name}, {arch}, {props['totalGlobalMem'] / 2**30:.0f} GiB, compute mode {mode}; "
        f"driver {runtime.driverGetVersion()}, CuPy {cupy.__version__} (CUDA runtime {runtime.runtimeGetVersion()}), torch {torch.__version__}"
    )
    return text, arch, problems


def _killed_rank() -> Phase:
    """Rank 1 of 2 is killed between calls; rank 0's next call must raise naming it within 2 s."""
    phase = run_phase("dead", 2, env={"SYNCCL_TIMEOUT": "20"}, title="killed rank", limit_s=120)
    phase.failures = [f for f in phase.failures if not f.startswith("rank 1: ")]  # its missing report is the scenario
    survivor = next((line for line in phase.lines if line["rank"] == 0), {})
    raised_after = survivor.get("raised_after_s")
    if raised_after is None or raised_after >= 2.0:
        phase.failures.append(f"rank 0 raised after {raised_after} s (want < 2 s): {survivor.get('error')}")
    print(f"killed rank: the survivor raised after {raised_after} s: {survivor.get('error')}", flush=True)
    return phase


def _kernels(arch: str) -> Phase:
    """Compile the executor for this GPU, as ``synccl kernels --arch`` does: registers and spills.

    Through the library, not the command line: the CLI loads the synthesizers, whose solvers
    (z3, HiGHS) a GPU machine's Python may lack.
    """
    from synccl.exceptions import KernelBuildError
    from synccl.runtime._nvrtc import compiled_executor, nvrtc_version

    phase = Phase("executor kernel (NVRTC)", 1, cases=1)
    start = time.perf_counter()
    try:
        kernel = compiled_executor(arch)
    except KernelBuildError as err:
        phase.failures.append(f"compiling the executor for {arch}: {err}")
    else:
        version = ".".join(map(str, nvrtc_version()))
        print(f"executor for {arch} (NVRTC {version}): {kernel.registers} registers/thread, spills {kernel.spill_store_bytes} B stored / {kernel.spill_load_bytes} B loaded, cubin {len(kernel.cubin)} B", flush=True)
        if kernel.spills:
            phase.failures.append(f"the executor spills registers on {arch}")
    phase.seconds = round(time.perf_counter() - start, 1)
    return phase


def _corpus_files(nranks: int) -> tuple[list[str], int]:
    """A few corpus files for ``nranks`` ranks, of distinct collectives, and the lanes they need."""
    from synccl._xml_run import lanes_needed
    from synccl.collectives import load_msccl_xml

    picked: dict[str, str] = {}
    lanes = 1
    for line in (CORPUS / "MANIFEST.tsv").read_text().splitlines()[1:]:
        file, collective, ranks = line.split("\t")[:3]
        if int(ranks) == nranks and collective not in picked and len(picked) < _CORPUS_FILES:
            path = CORPUS / file
            picked[collective] = str(path)
            lanes = max(lanes, lanes_needed(load_msccl_xml(str(path))))
    return list(picked.values()), lanes


def _bandwidth_rows(phase: Phase) -> list[list[str]]:
    report = next((line for line in phase.lines if line["rank"] == 0 and "times" in line), None)
    if report is None:
        return []
    n = phase.ranks
    rows = []
    for k, size in enumerate(report["sizes"]):
        cells = [f"{size // MiB} MiB"]
        for backend in ("synccl", "nccl"):
            seconds = report["times"][backend][k]
            # all_reduce moves 2(n-1)/n of the buffer per rank (nccl-tests' bus bandwidth).
            cells.append("n/a" if seconds is None else f"{seconds * 1e6:.0f} us, {size / seconds / 1e9 * 2 * (n - 1) / n:.1f} GB/s")
        rows.append(cells)
    return rows


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; the exit status: 0 all passed, 1 something failed, 2 no usable GPU."""
    parser = argparse.ArgumentParser(prog="python -m synccl.bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--max-bytes", type=int, default=64 * MiB, help="largest message of the collective matrix (default 64 MiB)")
    parser.add_argument("--iters", type=int, default=10, help="timed all_reduce calls per size (default 10)")
    args = parser.parse_args(argv)
    from synccl.runtime._cuda import cuda_available

    reason = cuda_available()
    if reason is not None:
        print(f"gpu check: no usable GPU: {reason}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    description, arch, problems = _device()
    print(f"device: {description}", flush=True)
    if problems:
        print(f"gpu check: {'; '.join(problems)}", file=sys.stderr)
        return 1
    phases = [_kernels(arch)]
    import cupy

    gpus = cupy.cuda.runtime.getDeviceCount()
    for n in (2, 4):
        # Ranks sharing one GPU without MPS take turns in time slices, and each FIFO hand-off may wait
        # for one: 4 ranks stop at 4 MiB so that the phase fits its time limit.
        largest = args.max_bytes if n == 2 or gpus >= n else min(args.max_bytes, 4 * MiB)
        phases.append(run_phase("collectives", n, str(largest), title="collectives (CuPy)"))
        print(f"collectives at {n} ranks: {phases[-1].cases} cases, {len(phases[-1].failures)} failures, {phases[-1].seconds} s", flush=True)
    if (CORPUS / "MANIFEST.tsv").is_file():
        for n in (2, 4):
            files, lanes = _corpus_files(n)
            if files:
                phases.append(run_phase("corpus", n, ",".join(files), title="MSCCL XML corpus", env={"SYNCCL_MAX_LANES": str(max(8, lanes))}))
    else:
        print(f"corpus: skipped, no {CORPUS / 'MANIFEST.tsv'}", flush=True)
    phases.append(run_phase("torch", 2, title="torch backend (CUDA tensors)"))
    phases.append(_killed_rank())
    bandwidth = run_phase("bandwidth", 2, ",".join(str(s) for s in BANDWIDTH_SIZES), str(args.iters), title="all_reduce timing")
    phases.append(bandwidth)
    print()
    print(_table(["check", "ranks", "cases", "failures", "seconds"], [[p.name, p.ranks, p.cases, len(p.failures), p.seconds] for p in phases]))
    rows = _bandwidth_rows(bandwidth)
    if rows:
        print()
        print("all_reduce float32, 2 ranks (time per call, bus bandwidth; NCCL is n/a without a GPU per rank: it refuses two ranks on one GPU)")
        print(_table(["size", "synccl", "nccl"], rows))
    failed = [p for p in phases if not p.ok]
    for p in failed:
        print(f"\nFAILED {p.name} at {p.ranks} ranks:", file=sys.stderr)
        for failure in p.failures[:10]:
            print(f"  {failure}", file=sys.stderr)
    print(f"\ngpu check: {'FAILED' if failed else 'passed'} in {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
