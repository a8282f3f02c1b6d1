"""All-to-all from the flow LP: solve time, bound, lowered Program's simulated time, gap.

``python -m synccl.bench.all_to_all_lp [--quick] [--size 256M] [--out table.md]`` runs
:func:`~synccl.synth._flow.flow_all_to_all` on each case and prints a Markdown table:
topology, ranks, traffic (uniform all_to_all or a skewed MoE matrix), method, solve time,
lowering time (Program built and verified), the bound at the message size (flat LP optimum,
or the cut bound for the hierarchical construction), the bandwidth time of the chunk routes,
the simulated time of the lowered Program (:func:`synccl.sim.simulate`), and the gaps.
Skewed traffic has no all_to_all Program (its blocks differ), so it has no simulated time.

The issue's targets: ``dgx2:2`` and ``ndv2:4`` (32 GPUs each) solved and lowered in <= 60 s
on 2 cores, simulated time within 10% of the LP bound at 256 MiB.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import numpy as np

from synccl.sim import simulate
from synccl.synth._flow import flow_all_to_all
from synccl.topologies import get_topology
from synccl.units import parse_size

#: (topology, traffic, method, lower and simulate?)
CASES = [
    ("ring:8", "uniform", "auto", True),
    ("dgx1", "uniform", "auto", True),
    ("dgx2:2", "uniform", "flat", True),
    ("dgx2:2", "uniform", "hierarchical", True),
    ("ndv2:4", "uniform", "flat", True),
    ("ndv2:4", "uniform", "hierarchical", True),
    ("dgx2:2", "moe", "flat", False),
    ("ndv2:4", "moe", "flat", False),
    ("dgx-a100:8", "uniform", "flat", True),
    ("dgx-a100:8", "uniform", "hierarchical", True),
    ("dgx-a100:8", "moe", "flat", False),
    ("dgx-a100:8", "moe", "hierarchical", False),
    ("ndv2:16", "uniform", "hierarchical", True),
    ("dgx-a100:32", "uniform", "hierarchical", True),
]
QUICK = CASES[:8]


def moe_traffic(n: int, *, seed: int = 0, alpha: float = 1.2) -> np.ndarray:
    """A skewed MoE dispatch: rank ``s`` sends ``tokens[s] * p[d]`` to expert rank ``d``, ``p`` zipf(alpha) in random order.

    Scaled so that the mean off-diagonal entry is 1: the same bytes in all as a uniform
    all_to_all of the same size.
    """
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n + 1) ** alpha
    traffic = np.outer(rng.uniform(0.5, 1.5, n), popularity[rng.permutation(n)])
    np.fill_diagonal(traffic, 0.0)
    return traffic * (n * (n - 1) / traffic.sum())


def run_case(
    topology: str, traffic: str, method: str, lower: bool, size: int, flat_bounds: dict[tuple[str, str], float]
) -> dict[str, object]:
    """Synthesize, lower and simulate one case; times in seconds and microseconds."""
    topo = get_topology(topology)
    matrix = moe_traffic(topo.nranks) if traffic == "moe" else None
    started = time.perf_counter()
    plan = flow_all_to_all(topo, matrix, method=method)
    record: dict[str, object] = {
        "topology": topology,
        "ranks": topo.nranks,
        "traffic": traffic,
        "method": plan.method,
        "chunks": plan.chunks,
        "solve_s": time.perf_counter() - started,
        "bound_kind": plan.bound_kind,
        "bound_us": plan.bound_us(size),
        "achieved_us": plan.time_us(size),
        "gap": plan.gap,
    }
    if plan.bound_kind == "lp":
        flat_bounds[topology, traffic] = plan.bound_us(size)
    elif (topology, traffic) in flat_bounds:
        record["flat_gap"] = plan.time_us(size) / flat_bounds[topology, traffic] - 1
    if lower:
        started = time.perf_counter()
        program = plan.to_program()
        record["lower_s"] = time.perf_counter() - started
        result = simulate(program, topo, size)
        record["sim_us"] = result.time_us
        record["sim_gap"] = result.time_us / plan.bound_us(size) - 1
    return record


def _percent(x: object) -> str:
    """A gap in percent; float noise below 1e-6 shows as zero."""
    value = float(x)  # type: ignore[arg-type]
    return f"{100 * (value if abs(value) > 1e-6 else 0.0):.2f}%"


def markdown(records: list[dict[str, object]], size: int) -> str:
    """The table, one row per case."""
    head = (
        "| topology | ranks | traffic | method | chunks | solve s | lower+verify s | bound µs | bound | "
        "routes µs (gap) | simulated µs | sim gap | gap to flat LP |"
    )
    lines = [
        f"all_to_all at {size >> 20} MiB per rank buffer; {platform.processor() or platform.machine()}, {datetime.date.today()}",
        "",
        head,
    ]
    lines.append("|" + "---|" * (head.count("|") - 1))
    for r in records:
        sim = f"{r['sim_us']:.1f}" if "sim_us" in r else "no Program (skewed)" if r["traffic"] == "moe" else "—"
        sim_gap = _percent(r["sim_gap"]) if "sim_gap" in r else "—"
        flat_gap = _percent(r["flat_gap"]) if "flat_gap" in r else "—"
        lower = f"{r['lower_s']:.1f}" if "lower_s" in r else "—"
        lines.append(
            f"| {r['topology']} | {r['ranks']} | {r['traffic']} | {r['method']} | {r['chunks']} | {r['solve_s']:.1f} | {lower} | "
            f"{r['bound_us']:.1f} | {r['bound_kind']} | {r['achieved_us']:.1f} ({_percent(r['gap'])}) | {sim} | {sim_gap} | {flat_gap} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the cases and print (and optionally write) the table."""
    parser = argparse.ArgumentParser(prog="python -m synccl.bench.all_to_all_lp", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the cases up to 32 ranks")
    parser.add_argument("--size", default="256M", help="message size (nccl-tests all_to_all size), default 256M")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    records: list[dict[str, object]] = []
    flat_bounds: dict[tuple[str, str], float] = {}
    for case in QUICK if args.quick else CASES:
        records.append(run_case(*case, size, flat_bounds))
        print(markdown(records[-1:], size).splitlines()[-1], flush=True)
    table = markdown(records, size)
    print()
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
