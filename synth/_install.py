"""Installing synthesized Programs for the message sizes where they beat the library.

Every candidate and every applicable library algorithm is simulated on the topology over a size
sweep; a candidate is installed for the contiguous run of sizes where it is fastest, as MSCCL
XML in the topology's folder of the algorithm cache (:mod:`synccl.cache`), which the runtime
reads at ``init`` when the job names that topology (``SYNCCL_TOPOLOGY``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from synccl.cache import algorithms_dir, installed_files
from synccl.collectives import Program, library, load_msccl_xml, save_msccl_xml
from synccl.sim import simulate, size_range
from synccl.topologies import Topology

__all__ = ["InstallResult", "install", "installed"]

#: The sizes compared when deciding where a Program wins (bytes, nccl-tests' sweep in x4 steps).
DEFAULT_SIZES = tuple(size_range(1 << 10, 1 << 30, factor=4))


@dataclass(frozen=True, slots=True)
class InstallResult:
    """What happened to one candidate: installed at ``path`` for ``[min_bytes, max_bytes)``, or why not."""

    program: str
    collective: str
    path: Path | None
    min_bytes: int | None
    max_bytes: int | None
    reason: str


def install(
    programs: Sequence[Program],
    topology: Topology,
    *,
    sizes: Sequence[int] = DEFAULT_SIZES,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[InstallResult]:
    """Install each Program for the sizes where the simulator says it is the fastest choice.

    >>> import tempfile
    >>> from synccl.synth import synthesize
    >>> from synccl.topologies import get_topology
    >>> ring = get_topology("ring:4")
    >>> both_ways = synthesize("all_gather", ring, steps=2, rounds=2, chunks=1).to_program()
    >>> install([both_ways], ring, sizes=[1 << 20], cache_dir=tempfile.mkdtemp())[0].reason
    'installed for 0 B and up'
    """
    folder = algorithms_dir(topology.fingerprint(), cache_dir=cache_dir)
    results = []
    for program in programs:
        rivals = {
            info.name: library.build(info.name, program.collective, topology.nranks, local_size=topology.nranks)
            for info in library.applicable(program.collective, topology.nranks, local_size=topology.nranks)
        }
        wins = []
        for size in sizes:
            mine = simulate(program, topology, size).time_us
            best_rival = min((simulate(p, topology, size).time_us for name, p in rivals.items() if p.name != program.name), default=float("inf"))
            wins.append(mine <= best_rival)
        run = _longest_run(wins)
        if run is None:
            results.append(InstallResult(program.name, program.collective.value, None, None, None, "not installed: a library algorithm is faster at every size"))
            continue
        first, last = run
        lo = 0 if first == 0 else sizes[first]
        hi = None if last == len(sizes) - 1 else sizes[last + 1]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{program.collective.value}-{program.name}.xml"
        save_msccl_xml(replace(program, min_bytes=lo, max_bytes=hi), path)
        span = f"{lo} B and up" if hi is None else f"{lo} to {hi} B"
        results.append(InstallResult(program.name, program.collective.value, path, lo, hi, f"installed for {span}"))
    return results


def _longest_run(wins: list[bool]) -> tuple[int, int] | None:
    best: tuple[int, int] | None = None
    start = None
    for k, win in enumerate([*wins, False]):
        if win and start is None:
            start = k
        elif not win and start is not None:
            if best is None or k - 1 - start > best[1] - best[0]:
                best = (start, k - 1)
            start = None
    return best


def installed(topology: Topology, *, cache_dir: str | os.PathLike[str] | None = None) -> list[Program]:
    """The Programs installed for ``topology`` (each with its byte range)."""
    return [load_msccl_xml(path) for path in installed_files(topology.fingerprint(), cache_dir=cache_dir)]
