"""``synccl sim``: simulate algorithms on a topology and compare them with the lower bound.

One size (the default) times every applicable library algorithm; ``--compare`` sweeps message
sizes and puts library, installed, imported (``--xml``) and synthesized algorithms side by side
with the bound, as a table, JSON records or a plot.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from synccl.cli import _sim_overlap as overlap
from synccl.cli._format import print_json, table
from synccl.collectives import Collective, CollectiveSpec, Program, library, load_msccl_xml, parse_collective
from synccl.exceptions import CollectiveError, Infeasible, SolverTimeout, TopologyError
from synccl.sim import SimResult, busbw_factor, compare, plot_busbw, simulate, size_range
from synccl.synth import TREE_COLLECTIVES, Bound, flow_all_to_all, installed, lower_bound, pack_trees
from synccl.topologies import Topology, get_topology
from synccl.units import format_size, parse_size

_BUILD_OPTIONS = ("channels", "chunks", "root", "inplace", "bidirectional")
#: ``--compare`` sweeps ``-b``..``-e`` in ``-f`` steps, as nccl-tests does; these are the defaults.
_SWEEP_DEFAULTS = {"min_size": "1KiB", "max_size": "1GiB", "factor": 4}


def register(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser("sim", help="simulate algorithms on a topology (--compare: side by side over message sizes)")
    sim.add_argument("--topology", "-t", required=True, help="e.g. ring:8, dgx1, dgx-a100:4, or a .json file")
    sim.add_argument(
        "--collective", "-c", help="all_reduce, all_gather, reduce_scatter, all_to_all, broadcast, reduce, gather, scatter (required but with --overlap)"
    )
    sim.add_argument("--algorithm", "-a", help="library algorithm (default: every one that applies)")
    sim.add_argument("--size", "-s", default="64MiB", help="message size as nccl-tests counts it, e.g. 4096, 1M, 64MiB (default 64MiB)")
    sim.add_argument("--channels", type=int, help="parallel rings (ring algorithms)")
    sim.add_argument("--chunks", type=int, help="pipeline depth (tree algorithms)")
    sim.add_argument("--root", type=int, help="root rank (rooted collectives)")
    sim.add_argument("--inplace", action="store_true", default=None, help="in-place variant")
    sim.add_argument("--bidirectional", action="store_true", default=None, help="alternate ring directions (ring algorithms)")
    sim.add_argument("--json", action="store_true", help="print JSON (an object with --algorithm, else a list)")
    comp = sim.add_argument_group("comparison over message sizes")
    comp.add_argument(
        "--compare",
        action="store_true",
        help="busbw of library, installed, --xml and synthesized algorithms and the lower bound at every size of a sweep",
    )
    comp.add_argument("--min-size", "-b", help="with --compare: first size (default 1KiB)")
    comp.add_argument("--max-size", "-e", help="with --compare: last size (default 1GiB)")
    comp.add_argument("--factor", "-f", type=int, help="with --compare: size step factor (default 4)")
    comp.add_argument("--xml", action="append", metavar="FILE", help="with --compare: also an MSCCL XML program (repeatable)")
    comp.add_argument("--no-synth", action="store_true", help="with --compare: skip synthesis (tree packing, all-to-all LP)")
    comp.add_argument("--plot", metavar="FILE", help="with --compare: also draw busbw against size to FILE (.png, .svg, .pdf)")
    overlap.add_arguments(sim)
    sim.set_defaults(func=_run)


def local_size_of(topo: Topology) -> int:
    """Ranks per machine of ``topo`` (all of them on a single machine)."""
    sizes = {len(topo.ranks_on_host(h)) for h in {topo.host_of(r) for r in topo.ranks}}
    if len(sizes) != 1:
        raise TopologyError(f"sim: topology {topo.name!r} has machines of different sizes {sorted(sizes)}")
    return sizes.pop()


def record(topo: Topology, program: Program, algorithm: str, size: int) -> dict[str, Any]:
    """One simulation as the stable JSON record of ``synccl sim``."""
    return _record(simulate(program, topo, size), lower_bound(topo, program.spec, size), algorithm)


def _record(result: SimResult, bound: Bound, algorithm: str) -> dict[str, Any]:
    return {
        "topology": result.topology,
        "collective": result.collective.value,
        "algorithm": algorithm,
        "nranks": result.nranks,
        "size_bytes": result.size_bytes,
        "time_us": result.time_us,
        "algbw_gbps": result.algbw_gbps,
        "busbw_gbps": result.busbw_gbps,
        "lower_bound_us": bound.time_us,
        "latency_bound_us": bound.latency_us,
        "bandwidth_bound_us": bound.bandwidth_us,
        "efficiency": bound.time_us / result.time_us if result.time_us > 0 else 1.0,
        "messages": result.messages,
    }


def _library(args: argparse.Namespace, topo: Topology, collective: Collective) -> dict[str, Program]:
    """The library algorithms to simulate, built with the options given: ``--algorithm``'s, or every applicable one."""
    local_size = local_size_of(topo)
    given = {k: getattr(args, k) for k in _BUILD_OPTIONS if getattr(args, k) is not None}
    if args.algorithm:
        infos = [library.get(args.algorithm, collective)]
    else:
        infos = library.applicable(collective, topo.nranks, local_size=local_size)
    programs = {}
    for info in infos:
        options = given if args.algorithm else {k: v for k, v in given.items() if k in info.options}
        programs[info.name] = library.build(info.name, collective, topo.nranks, local_size=local_size, **options)
    return programs


def _run(args: argparse.Namespace) -> int:
    if args.overlap:
        return overlap.run_overlap(args)
    given = [f"--{name}" for name in overlap.OVERLAP_ONLY if getattr(args, name) is not None]
    if given:
        raise CollectiveError(f"sim: {', '.join(given)} need --overlap")
    if not args.collective:
        raise CollectiveError("sim: --collective is required (or --overlap KIND)")
    if args.compare:
        return _run_compare(args)
    sweep_only = [
        flag
        for flag, value in (
            ("--min-size", args.min_size),
            ("--max-size", args.max_size),
            ("--factor", args.factor),
            ("--xml", args.xml),
            ("--no-synth", args.no_synth),
            ("--plot", args.plot),
        )
        if value
    ]
    if sweep_only:
        raise CollectiveError(f"sim: {', '.join(sweep_only)} need --compare")
    topo = get_topology(args.topology)
    collective = parse_collective(args.collective)
    size = parse_size(args.size)
    records = [record(topo, program, name, size) for name, program in _library(args, topo, collective).items()]
    if args.json:
        print_json(records[0] if args.algorithm else records)
        return 0
    print(f"{collective.value} of {format_size(size)} on {topo.name} ({topo.nranks} ranks)")
    rows = [
        [r["algorithm"], r["time_us"], r["algbw_gbps"], r["busbw_gbps"], r["lower_bound_us"], f"{100 * r['efficiency']:.1f}%"]
        for r in sorted(records, key=lambda r: r["time_us"])
    ]
    print(table(["algorithm", "time us", "algbw GB/s", "busbw GB/s", "bound us", "of bound"], rows))
    return 0


# -- --compare ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A Program to compare, where it came from (library, installed, xml, synth) and an optional note."""

    label: str
    source: str
    program: Program
    note: str | None = None


def _synthesized(collective: Collective, topo: Topology, root: int | None) -> list[_Candidate]:
    """The synthesizers that apply to ``collective``: tree packing, or the all-to-all LP.

    A synthesizer that finds no schedule (``Infeasible``) or runs out of time is skipped with a
    note on stderr.
    """
    found = []
    try:
        if collective in TREE_COLLECTIVES:
            packing = pack_trees(collective, topo, root=0 if root is None else root)
            found.append(
                _Candidate("trees", "synth", packing.to_program(), f"tree packing: certificate gap {packing.certificate.gap:.1%} (all_reduce: to the two-phase bound)")
            )
        elif collective is Collective.ALL_TO_ALL:
            schedule = flow_all_to_all(topo)
            bound = "LP optimum" if schedule.bound_kind == "lp" else "cut bound"
            found.append(_Candidate("flow", "synth", schedule.to_program(), f"all-to-all flow LP within {schedule.gap:.1%} of its {bound}"))
    except (Infeasible, SolverTimeout) as err:
        print(f"synccl sim: skipping synthesis of {collective.value} on {topo.name}: {err}", file=sys.stderr)
    return found


def _candidates(args: argparse.Namespace, topo: Topology, collective: Collective, root: int | None) -> list[_Candidate]:
    """Library algorithms, then those installed for ``topo``, then ``--xml`` files, then synthesized ones."""
    found = [_Candidate(name, "library", program) for name, program in _library(args, topo, collective).items()]
    for program in installed(topo):
        if program.collective is collective and program.nranks == topo.nranks and program.spec.root == root:
            found.append(_Candidate(f"{program.name} (installed)", "installed", program))
    for path in args.xml or ():
        program = load_msccl_xml(path)
        if program.collective is not collective or program.nranks != topo.nranks or program.spec.root != root:
            raise CollectiveError(
                f"sim: {path!r} is {program.spec.describe()}, expected {collective.value} on {topo.nranks} ranks"
                + (f" with root {root}" if root is not None else "")
            )
        found.append(_Candidate(program.name, "xml", program))
    if not args.no_synth:
        found.extend(_synthesized(collective, topo, root))
    labels: set[str] = set()
    unique = []
    for cand in found:
        label, k = cand.label, 2
        while label in labels:
            label, k = f"{cand.label} #{k}", k + 1
        labels.add(label)
        unique.append(_Candidate(label, cand.source, cand.program, cand.note))
    return unique


def _bound_busbw(bound: Bound, collective: Collective, nranks: int) -> float | None:
    """The bus bandwidth (GB/s) an algorithm taking exactly the bound's time would reach (None for a zero bound)."""
    if bound.time_us <= 0:
        return None
    return bound.size_bytes / bound.time_us / 1e3 * busbw_factor(collective, nranks)


def _gbps(value: float) -> str:
    """Three significant digits, never in exponent form above 100 GB/s."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _run_compare(args: argparse.Namespace) -> int:
    topo = get_topology(args.topology)
    collective = parse_collective(args.collective)
    opts = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in _SWEEP_DEFAULTS.items()}
    sizes = size_range(parse_size(opts["min_size"]), parse_size(opts["max_size"]), factor=opts["factor"])
    root = (args.root if args.root is not None else 0) if collective.is_rooted else None
    candidates = _candidates(args, topo, collective, root)
    if not candidates:
        raise CollectiveError(f"sim: nothing to compare for {collective.value} on {topo.name}")
    results = compare({c.label: c.program for c in candidates}, topo, sizes)
    spec = CollectiveSpec(collective, topo.nranks, root=root)
    bounds = [lower_bound(topo, spec, size) for size in sizes]
    bound_busbw = [_bound_busbw(b, collective, topo.nranks) for b in bounds]
    best = [max(results[c.label][i].busbw_gbps for c in candidates) for i in range(len(sizes))]
    records = []
    for cand in candidates:
        for i, res in enumerate(results[cand.label]):
            rec = _record(res, bounds[i], cand.label)
            rec.update(
                source=cand.source, program=cand.program.name, bound_busbw_gbps=bound_busbw[i], best=res.busbw_gbps >= best[i] * (1 - 1e-9)
            )
            records.append(rec)
    if args.plot:
        plotted_bound = None if None in bound_busbw else bound_busbw
        plot_busbw(
            results,
            args.plot,
            bound_busbw=plotted_bound,
            title=f"{collective.value} on {topo.name} ({topo.nranks} ranks): simulated bus bandwidth",
        )
    if args.json:
        print_json(records)
        return 0
    print(f"{collective.value} on {topo.name} ({topo.nranks} ranks): simulated busbw GB/s, * = best at that size")
    rows = []
    for cand in candidates:
        cells = [f"{_gbps(r['busbw_gbps'])}{'*' if r['best'] else ''}" for r in records if r["algorithm"] == cand.label]
        rows.append([cand.label, *cells])
    rows.append(["lower bound", *("-" if b is None else _gbps(b) for b in bound_busbw)])
    print(table(["algorithm", *(format_size(s) for s in sizes)], rows))
    for cand in candidates:
        if cand.note:
            print(f"{cand.label}: {cand.note}")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0
