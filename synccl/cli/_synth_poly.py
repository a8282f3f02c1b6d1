"""``synccl synth --method trees|flow``: the polynomial synthesizers, with progress, certificate and simulation.

``flow`` is the all-to-all LP; ``--traffic FILE`` (``.npy`` or text) gives it an alltoallv
traffic matrix: the schedule is planned for it, and its Program (written as XML or JSON, or
installed) runs with each call's counts through ``comm.alltoallv(..., program=)``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from synccl._files import read_limited
from synccl.cli._format import print_json, table
from synccl.collectives import Collective, Program, XmlError, to_msccl_xml
from synccl.exceptions import CollectiveError
from synccl.sim import simulate
from synccl.synth import MAX_CHUNKS, TREE_COLLECTIVES, FlowSchedule, TreePacking, flow_all_to_all, install, pack_trees
from synccl.topologies import Topology
from synccl.units import format_size

__all__ = ["run_polynomial", "SIM_SIZES", "SIM_RANKS"]

#: Message sizes at which synthesized Programs are simulated.
SIM_SIZES = (1 << 10, 1 << 20, 64 << 20)
#: The largest ``--traffic`` file read (a 1024 x 1024 float64 matrix is 8 MiB).
MAX_TRAFFIC_BYTES = 64 << 20
#: Programs of more ranks are not lowered or simulated unless written out or installed.
SIM_RANKS = 64


@contextmanager
def _progress(enabled: bool) -> Iterator[None]:
    """Show the synthesizers' INFO progress lines on stderr while solving."""
    logger = logging.getLogger("synccl.synth")
    if not enabled:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def run_polynomial(args: argparse.Namespace, method: str, collective: Collective, topo: Topology) -> int:
    """Run tree packing or the all-to-all LP, then print, write and install what it found."""
    if method == "flow" and collective is not Collective.ALL_TO_ALL:
        raise CollectiveError(f"synth: --method flow synthesizes all_to_all, not {collective.value}")
    if method == "trees" and collective not in TREE_COLLECTIVES:
        raise CollectiveError(f"synth: --method trees synthesizes {', '.join(c.value for c in TREE_COLLECTIVES)}, not {collective.value}")
    if args.traffic and method != "flow":
        raise CollectiveError("synth: --traffic is for all_to_all (--method flow)")
    with _progress(not args.quiet):
        if method == "flow":
            result: TreePacking | FlowSchedule = flow_all_to_all(
                topo, _traffic(args.traffic), chunks=args.chunks_per_pair, time_limit=args.time_limit, method=args.hierarchy
            )
        else:
            result = pack_trees(
                collective,
                topo,
                root=args.root,
                method=args.hierarchy,
                time_limit=args.time_limit,
                max_chunks=MAX_CHUNKS if args.max_chunks is None else args.max_chunks,
            )
    record = _flow_record(result) if isinstance(result, FlowSchedule) else _tree_record(result)
    wanted = bool(args.output or args.install) or topo.nranks <= SIM_RANKS
    program = result.to_program() if wanted else None
    timed = not isinstance(result, FlowSchedule) or result.uniform  # the simulator times equal blocks only
    if program is not None and timed and topo.nranks <= SIM_RANKS:
        for size in SIM_SIZES:
            record[f"busbw_gbps_{format_size(size)}"] = round(simulate(program, topo, size).busbw_gbps, 3)
    exported = None  # (Program, MSCCL XML), exported once for -o x.xml and --install
    if program is not None and (args.install or str(args.output).lower().endswith(".xml")):
        exported = _exportable(result, program, quiet=args.quiet)
    if args.output:
        _save(result, exported, Path(args.output))
    if args.install and exported is not None:
        for outcome in install([exported[0]], topo):
            print(f"{outcome.program}: {outcome.reason}" + (f" ({outcome.path})" if outcome.path else ""), file=sys.stderr)
    if args.json:
        print_json(record)
        return 0
    headers = ["method", "ranks", "chunks/root", "trees", "solve s", "algbw GB/s", "bound GB/s", "gap"]
    row = [
        record["method"],
        record["nranks"],
        record["chunks_per_root"],
        record["trees"],
        record["solve_s"],
        record["algbw_gbps"],
        record["bound_algbw_gbps"],
        f"{100 * record['gap']:.4f}%",
    ]
    sims = [f"busbw {format_size(x)}" for x in SIM_SIZES if f"busbw_gbps_{format_size(x)}" in record]
    print(table(headers + sims, [row + [record[f"busbw_gbps_{h.split()[1]}"] for h in sims]]))
    if sims:
        note = "; busbw simulated (GB/s)"
    else:
        note = f"; not simulated ({topo.nranks} ranks > {SIM_RANKS})" if timed else ""
    print(f"{collective.value} on {topo.name}: {record['summary']}{note}")
    return 0


def _traffic(path: str | None) -> np.ndarray | None:
    """A traffic matrix from ``.npy`` or whitespace/comma-separated text (None: uniform all-to-all)."""
    if path is None:
        return None
    data = read_limited(path, limit=MAX_TRAFFIC_BYTES, what="traffic matrix", error=CollectiveError)
    try:
        if path.endswith(".npy"):
            return np.load(io.BytesIO(data))
        return np.loadtxt(io.StringIO(data.decode("utf-8")), delimiter="," if path.endswith(".csv") else None, ndmin=2)
    except (OSError, ValueError) as err:
        raise CollectiveError(f"synth: cannot read traffic matrix {path!r}: {err}") from None


def _flow_record(schedule: FlowSchedule) -> dict[str, Any]:
    size = 1 << 20
    achieved, bound = size / (schedule.time_us(size) * 1e3), size / (schedule.bound_us(size) * 1e3)
    kind = "LP" if schedule.bound_kind == "lp" else "cut"
    return {
        "collective": "all_to_all" if schedule.uniform else "all_to_allv",
        "topology": schedule.topology.name,
        "method": f"flow/{schedule.method}",
        "nranks": schedule.nranks,
        "chunks_per_root": schedule.chunks,
        "trees": "-",
        "solve_s": round(schedule.solve_seconds, 3),
        "algbw_gbps": round(achieved, 6),
        "bound_algbw_gbps": round(bound, 6),
        "bound_kind": schedule.bound_kind,
        "gap": max(schedule.gap, 0.0),
        "summary": f"algbw {achieved:.6g} GB/s of the {kind} bound {bound:.6g} GB/s (gap {100 * max(schedule.gap, 0.0):.4f}%)"
        + ("" if schedule.uniform else "; skewed traffic: run its Program with comm.alltoallv(..., program=)"),
    }


def _tree_record(packing: TreePacking) -> dict[str, Any]:
    cert = packing.certificate
    return {
        "collective": packing.collective.value,
        "topology": packing.topology.name,
        "method": f"trees/{packing.method}",
        "nranks": packing.topology.nranks,
        "root": packing.root,
        "chunks_per_root": packing.chunks_per_root,
        "trees": sum(len(p.trees) for p in packing.phases),
        "solve_s": round(packing.seconds, 3),
        "algbw_gbps": round(cert.achieved_algbw_gbps, 6),
        "bound_algbw_gbps": round(cert.bound_algbw_gbps, 6),
        "gap": cert.gap,
        "lp_optimal": cert.lp_optimal,
        "achieved_us_per_byte": str(cert.achieved_us_per_byte),
        "bound_us_per_byte": str(cert.bound_us_per_byte),
        "summary": f"{cert.describe()}, bandwidth terms exact",
    }


def _exportable(result: TreePacking | FlowSchedule, program: Program, *, quiet: bool) -> tuple[Program, str]:
    """``program`` and its MSCCL XML, or the unpipelined tree Program's when XML (steps per thread block) cannot hold it."""
    try:
        return program, to_msccl_xml(program)
    except XmlError as err:
        if isinstance(result, FlowSchedule) or result.default_pipeline() == 1:
            raise  # nothing fewer pieces could fix: the error names the limit
        if not quiet:
            print(f"synth: {err}; using the unpipelined Program instead", file=sys.stderr)
        unpipelined = result.to_program(pipeline=1)
        return unpipelined, to_msccl_xml(unpipelined)


def _save(result: TreePacking | FlowSchedule, exported: tuple[Program, str] | None, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".xml":
        path.write_text(exported[1], encoding="utf-8")
        return
    if suffix != ".json":
        raise CollectiveError(f"synth: output must end in .json or .xml, got {str(path)!r}")
    if isinstance(result, FlowSchedule):
        routes = [
            {"src": s, "dst": d, "paths": [{"ranks": list(p), "chunks": k} for p, k in paths]}
            for (s, d), paths in result.chunk_routes.items()
        ]
        path.write_text(json.dumps({**_flow_record(result), "routes": routes}) + "\n", encoding="utf-8")
        return
    packing = result
    payload = {
        **_tree_record(packing),
        "phases": [
            {"direction": p.direction, "trees": [{"root": t.root, "chunks": t.chunks, "parent": list(t.parent)} for t in p.trees]}
            for p in packing.phases
        ],
    }
    path.write_text(json.dumps(payload) + "\n", encoding="utf-8")
