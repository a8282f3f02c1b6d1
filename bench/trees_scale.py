"""Tree packing at scale: synthesis, lowering, verification and MSCCL export, up to 1024 ranks.

``python -m synccl.bench.trees_scale [--quick] [--repeat N] [--out table.md]`` runs each case
``N`` times, each time in a fresh process (so that its peak resident memory is its own), and
prints a Markdown table: topology, ranks, collective, method; the wall time of
:func:`~synccl.synth.pack_trees` (bound and certificate included) and, for cases marked
``lower``, of lowering the packing to a Program, verifying it and exporting MSCCL XML (or the
executor limit that export refuses, in one line); the total as median (min-max) over the runs;
the median CPU time of those stages (both cores', where lowering and verification fork a helper); the
largest peak RSS, and the helper's; achieved and optimal algorithm bandwidth and the gap.
The targets (issue 15): 128 x DGX-A100 (1024 ranks) all_gather and all_reduce synthesized,
lowered, verified and exported in <= 60 s and <= 8 GiB; 128 ranks verified in < 0.7 s and
< 1 GiB. ForestColl's public generator took 10.4 s on 2 x 8 A100 (346.67 GB/s).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: (topology, collective, method, lower-and-verify?)
CASES = [
    ("dgx-a100:2", "all_gather", "flat", True),
    ("dgx-a100:2", "all_gather", "hierarchical", True),
    ("mi250:2", "all_gather", "flat", True),
    ("dgx1", "all_reduce", "flat", True),
    ("dgx-a100:16", "all_gather", "hierarchical", True),
    ("dgx-a100:16", "all_reduce", "hierarchical", True),
    ("dgx-a100:32", "all_reduce", "hierarchical", True),
    ("dgx-a100:128", "all_gather", "hierarchical", True),
    ("dgx-a100:128", "all_reduce", "hierarchical", True),
]
QUICK = [CASES[0], CASES[1], CASES[3]]
#: The stages each run times, in seconds.
STAGES = ("synth_s", "lower_s", "verify_s", "export_s")


def run_case(topology: str, collective: str, method: str, lower: bool) -> dict[str, object]:
    """Synthesize one case in this process and describe it (times in seconds, memory in MiB)."""
    from synccl.collectives import XmlError, to_msccl_xml, verify
    from synccl.synth import pack_trees
    from synccl.topologies import get_topology

    topo = get_topology(topology)
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    packing = pack_trees(collective, topo, method=method)
    record: dict[str, object] = {
        "topology": topology,
        "ranks": topo.nranks,
        "collective": collective,
        "method": packing.method,
        "synth_s": round(time.perf_counter() - started, 3),
        "chunks_per_root": packing.chunks_per_root,
        "trees": sum(len(p.trees) for p in packing.phases),
        "algbw_gbps": round(packing.certificate.achieved_algbw_gbps, 3),
        "bound_gbps": round(packing.certificate.bound_algbw_gbps, 3),
        "gap": packing.certificate.gap,
    }
    if lower:
        started = time.perf_counter()
        program = packing.to_program(pipeline=1, check=False)
        record["lower_s"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        verify(program)
        record["verify_s"] = round(time.perf_counter() - started, 3)
        record["instructions"] = program.num_instructions()
        started = time.perf_counter()
        try:
            record["xml_mb"] = round(len(to_msccl_xml(program)) / 1e6, 1)  # MSCCL's executor format, as synccl synth -o writes it
            record["export_s"] = round(time.perf_counter() - started, 3)
        except XmlError as err:  # a limit of MSCCL's executor the schedule exceeds, said in one line
            record["xml_mb"], record["export_s"], record["export_refused"] = "-", "refused", str(err)
    record["cpu_s"] = round(_cpu_seconds() - cpu_before, 1)
    record["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    # Lowering and verification fork a helper on two cores (synccl._beside): its peak, most of it
    # pages shared with this process, so the sum bounds the memory in use from above.
    record["helper_rss_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    return record


def _cpu_seconds() -> float:
    """CPU time of this process and of the helpers it has forked and reaped."""
    me, helpers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + helpers.ru_utime + helpers.ru_stime


def summarize(runs: list[dict[str, object]]) -> dict[str, object]:
    """One case's runs as one row: each stage's median, the total's median, min and max, the median CPU time, the largest peak RSS (own and helper's)."""
    row = dict(runs[-1])
    for stage in STAGES:
        times = [r[stage] for r in runs if isinstance(r.get(stage), float | int)]
        if times:
            row[stage] = round(statistics.median(times), 2)
    totals = [sum(r[stage] for stage in STAGES if isinstance(r.get(stage), float | int)) for r in runs]
    row["total_s"] = (round(statistics.median(totals), 1), round(min(totals), 1), round(max(totals), 1))
    for memory in ("peak_rss_mib", "helper_rss_mib"):
        row[memory] = max(r[memory] for r in runs)
    row["cpu_s"] = round(statistics.median(r["cpu_s"] for r in runs), 1)
    row["runs"] = len(runs)
    return row


def markdown(rows: list[dict[str, object]]) -> str:
    """The README table (one row per case, from :func:`summarize`)."""
    head = f"Tree packing, {datetime.date.today().isoformat()}, {platform.machine()} {platform.processor() or ''} ({_cpus()} cores), Python {platform.python_version()}"
    lines = [
        head.strip(),
        "",
        "| topology | ranks | collective | method | runs | synth s | lower s | verify s | export s | total s, median (min-max) | CPU s | peak RSS MiB (+ helper) | instructions | XML MB | algbw GB/s | bound GB/s | gap |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        median, low, high = r["total_s"]
        lowered = [r.get("lower_s", "-"), r.get("verify_s", "-"), r.get("export_s", "-")]
        lines.append(
            f"| {r['topology']} | {r['ranks']} | {r['collective']} | {r['method']} | {r['runs']} | {r['synth_s']} | "
            + " | ".join(str(x) for x in lowered)
            + f" | {median} ({low}-{high}) | {r['cpu_s']} | {r['peak_rss_mib']}{_helper(r)} | {r.get('instructions', '-')} | {r.get('xml_mb', '-')} | "
            f"{r['algbw_gbps']} | {r['bound_gbps']} | {100 * float(r['gap']):.4f}% |"
        )
    refusals = [f"* {r['topology']} {r['collective']} ({r['method']}): export refused: {r['export_refused']}" for r in rows if "export_refused" in r]
    return "\n".join(lines + ([""] + refusals if refusals else []))


def _helper(row: dict[str, object]) -> str:
    """`` (+ N)`` for a case whose run forked a helper, else nothing."""
    return f" (+ {row['helper_rss_mib']})" if row["helper_rss_mib"] else ""


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def main(argv: list[str] | None = None) -> int:
    """Run every case in its own process and print (or write) the table."""
    parser = argparse.ArgumentParser(prog="python -m synccl.bench.trees_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small cases")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case, each in a fresh process (default 1)")
    parser.add_argument("--out", help="also write the Markdown table to this file")
    parser.add_argument("--case", nargs=4, metavar=("TOPOLOGY", "COLLECTIVE", "METHOD", "LOWER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.case:
        topology, collective, method, lower = args.case
        print(json.dumps(run_case(topology, collective, method, lower == "1")))
        return 0
    rows = []
    for topology, collective, method, lower in QUICK if args.quick else CASES:
        command = [sys.executable, "-m", "synccl.bench.trees_scale", "--case", topology, collective, method, "1" if lower else "0"]
        runs = []
        for _ in range(args.repeat):
            runs.append(json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout))
            print(json.dumps(runs[-1]), file=sys.stderr)
        rows.append(summarize(runs))
    table = markdown(rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
