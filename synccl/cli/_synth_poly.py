"""``synccl synth --method trees|flow``: the polynomial synthesizers, with progress, certificate and simulation."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from synccl.cli._format import print_json, table
from synccl.collectives import Collective, Program, XmlError, save_msccl_xml
from synccl.exceptions import CollectiveError
from synccl.sim import simulate
from synccl.synth import MAX_CHUNKS, TreePacking, install, pack_trees
from synccl.topologies import Topology
from synccl.units import format_size

__all__ = ["run_polynomial", "SIM_SIZES", "SIM_RANKS"]

#: Message sizes at which synthesized Programs are simulated.
SIM_SIZES = (1 << 10, 1 << 20, 64 << 20)
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
    """Run tree packing (or the all-to-all LP), then print, write and install what it found."""
    if method != "trees":
        raise CollectiveError(f"synth: unknown method {method!r}")
    with _progress(not args.quiet):
        packing = pack_trees(collective, topo, root=args.root, method=args.hierarchy, time_limit=args.time_limit, max_chunks=args.max_chunks or MAX_CHUNKS)
    record = _tree_record(packing)
    wanted = bool(args.output or args.install) or topo.nranks <= SIM_RANKS
    program = packing.to_program() if wanted else None
    if program is not None and topo.nranks <= SIM_RANKS:
        for size in SIM_SIZES:
            record[f"busbw_gbps_{format_size(size)}"] = round(simulate(program, topo, size).busbw_gbps, 3)
    if args.output:
        _save(packing, program, Path(args.output))
    if args.install and program is not None:
        for outcome in install([program], topo):
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
    note = "" if sims else f"; not simulated ({topo.nranks} ranks > {SIM_RANKS})"
    print(f"{collective.value} on {topo.name}: {packing.certificate.describe()}; bandwidth terms exact, busbw simulated (GB/s){note}")
    return 0


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
    }


def _save(packing: TreePacking, program: Program | None, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".xml" and program is not None:
        try:
            save_msccl_xml(program, path)
        except XmlError as err:  # MSCCL's executor caps steps per thread block: try without pipelining
            print(f"synth: {err}; writing the unpipelined Program instead", file=sys.stderr)
            save_msccl_xml(packing.to_program(pipeline=1), path)
        return
    if suffix != ".json":
        raise CollectiveError(f"synth: output must end in .json or .xml, got {str(path)!r}")
    payload = {
        **_tree_record(packing),
        "phases": [
            {"direction": p.direction, "trees": [{"root": t.root, "chunks": t.chunks, "parent": list(t.parent)} for t in p.trees]}
            for p in packing.phases
        ],
    }
    path.write_text(json.dumps(payload) + "\n", encoding="utf-8")
