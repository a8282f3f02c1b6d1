"""``synccl synth COLLECTIVE --topology T [--method auto|smt|trees|flow]``: synthesis from the command line.

``smt`` takes ``--steps S --rounds R --chunks C`` or ``--pareto``; ``trees`` and ``flow`` (the
polynomial methods, :mod:`synccl.cli._synth_poly`) need only the topology. ``auto`` picks SMT
when SMT options are given, else the all-to-all LP for all_to_all, tree packing for the
collectives built from trees, and SMT's Pareto search for gather and scatter up to
:data:`SMT_AUTO_RANKS` ranks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

from synccl.cli._format import print_json, table
from synccl.cli._synth_poly import SIM_SIZES, run_polynomial
from synccl.collectives import Algorithm, Collective, parse_collective, save_msccl_xml
from synccl.exceptions import CollectiveError, Infeasible, SolverTimeout
from synccl.sim import simulate
from synccl.synth import TREE_COLLECTIVES, Attempt, install, pareto_frontier, rounds_per_chunk_bound, steps_lower_bound, synthesize, verdict
from synccl.topologies import Topology, get_topology
from synccl.units import format_size


def register(sub: argparse._SubParsersAction) -> None:
    syn = sub.add_parser("synth", help="synthesize an algorithm: SMT (SCCL's Pareto frontier), tree packing or the all-to-all LP")
    syn.add_argument("collective", help="e.g. all_gather, broadcast, reduce_scatter, all_reduce, all_to_all")
    syn.add_argument("--topology", required=True, help="a named topology, e.g. dgx1, ring:4, dgx-a100:128, or a .json file")
    syn.add_argument(
        "--method", choices=("auto", "smt", "trees", "flow"), default="auto", help="synthesizer (default auto: see synccl synth --help)"
    )
    syn.add_argument(
        "--hierarchy",
        choices=("auto", "flat", "hierarchical"),
        default="auto",
        help="trees/flow: solve the whole topology (flat) or host by host (hierarchical); default auto",
    )
    syn.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    syn.add_argument("--traffic", help="flow: N x N traffic matrix (.npy, .csv or whitespace text) for an alltoallv; default uniform")
    syn.add_argument(
        "--chunks-per-pair", type=int, help="flow: chunks each pair's block is cut into (default: the fewest within 1%% of the routes)"
    )
    syn.add_argument("--steps", type=int, help="steps of the algorithm")
    syn.add_argument("--rounds", type=int, help="total rounds (bandwidth cost)")
    syn.add_argument("--chunks", type=int, help="chunks per rank share (chunk factor)")
    syn.add_argument("--pareto", action="store_true", help="search the steps/rounds-per-chunk frontier instead")
    syn.add_argument("--max-steps", type=int, help="with --pareto: last step count tried")
    syn.add_argument(
        "--max-chunks", type=int, help="with --pareto: largest chunk factor tried (default 6); trees: most chunks per root (default 256)"
    )
    syn.add_argument("--root", type=int, default=0, help="root of rooted collectives (default 0)")
    syn.add_argument(
        "--time-limit", type=float, help="smt: seconds per solver call; trees/flow: seconds of solving, then the best found so far"
    )
    syn.add_argument("-o", "--output", help="write the synthesized algorithm (single instance) to FILE.json or FILE.xml (MSCCL)")
    syn.add_argument(
        "--install",
        action="store_true",
        help="install the results for the sizes where the simulator says they beat the library (used by the runtime when SYNCCL_TOPOLOGY names this topology)",
    )
    syn.add_argument("--json", action="store_true", help="print JSON")
    syn.set_defaults(func=_run)


def _progress(attempt: Attempt) -> None:
    print(
        f"steps={attempt.steps} rounds={attempt.rounds} chunks={attempt.chunks}: {verdict(attempt.sat)} in {attempt.solve_s:.2f} s",
        file=sys.stderr,
    )


#: ``--pareto``'s largest chunk factor unless ``--max-chunks`` says otherwise.
PARETO_MAX_CHUNKS = 6
#: ``--method auto`` runs SMT's Pareto search for gather and scatter up to this many ranks.
SMT_AUTO_RANKS = 16


def choose_method(collective: Collective, nranks: int, *, smt_options: bool) -> str:
    """The synthesizer ``--method auto`` runs (module docstring).

    >>> choose_method(Collective.ALL_TO_ALL, 32, smt_options=False), choose_method(Collective.ALL_GATHER, 1024, smt_options=False)
    ('flow', 'trees')
    """
    if smt_options:
        return "smt"
    if collective is Collective.ALL_TO_ALL:
        return "flow"
    if collective in TREE_COLLECTIVES:
        return "trees"
    if nranks <= SMT_AUTO_RANKS:
        return "smt"
    raise CollectiveError(
        f"synth: no polynomial method synthesizes {collective.value}, and {nranks} ranks is past SMT's reach ({SMT_AUTO_RANKS}); give --method smt with --steps/--rounds/--chunks to try anyway"
    )


def _run(args: argparse.Namespace) -> int:
    collective = parse_collective(args.collective)
    topo = get_topology(args.topology)
    smt_options = args.pareto or any(v is not None for v in (args.steps, args.rounds, args.chunks))
    method = choose_method(collective, topo.nranks, smt_options=smt_options) if args.method == "auto" else args.method
    if method == "smt" and not smt_options:
        args.pareto = True
    if method != "smt":
        if smt_options:
            raise CollectiveError(f"synth: --steps/--rounds/--chunks/--pareto are SMT options, not for --method {method}")
        return run_polynomial(args, method, collective, topo)
    return _run_smt(args, collective, topo)


def _run_smt(args: argparse.Namespace, collective: Collective, topo: Topology) -> int:
    fixed = (args.steps, args.rounds, args.chunks)
    if args.pareto == any(v is not None for v in fixed) or (not args.pareto and None in fixed):
        raise CollectiveError("synth: give either --pareto or all of --steps, --rounds and --chunks")
    if args.pareto and args.output:
        raise CollectiveError("synth: -o writes a single instance; drop --pareto or -o")
    started = time.perf_counter()
    if args.pareto:
        result = pareto_frontier(
            collective,
            topo,
            max_steps=args.max_steps,
            max_chunks=PARETO_MAX_CHUNKS if args.max_chunks is None else args.max_chunks,
            root=args.root,
            time_limit=args.time_limit,
            on_attempt=_progress,
        )
        frontier = [(p.steps, p.rounds, p.chunks, p.solve_s, "proven" if p.proven else "unproven") for p in result.points]
        found = [p.algorithm for p in result.points]
        if result.unproven:
            print(
                f"unproven (solver time limit): {', '.join(f'({a.steps}, {a.rounds}, {a.chunks})' for a in result.unproven)}",
                file=sys.stderr,
            )
    else:
        try:
            alg = synthesize(
                collective, topo, steps=args.steps, rounds=args.rounds, chunks=args.chunks, root=args.root, time_limit=args.time_limit
            )
        except (Infeasible, SolverTimeout) as err:
            _progress(
                Attempt(
                    args.steps, args.rounds, args.chunks, None if isinstance(err, SolverTimeout) else False, time.perf_counter() - started
                )
            )
            raise
        _progress(Attempt(args.steps, args.rounds, args.chunks, True, time.perf_counter() - started))
        frontier = [(args.steps, args.rounds, args.chunks, time.perf_counter() - started, "-")]
        found = [alg]
        if args.output:
            _save(alg, Path(args.output))
    total = time.perf_counter() - started
    if args.install:
        for outcome in install([a.to_program() for a in found], topo):
            print(f"{outcome.program}: {outcome.reason}" + (f" ({outcome.path})" if outcome.path else ""), file=sys.stderr)
    step_bound = steps_lower_bound(collective, topo, root=args.root)
    ratio_bound = rounds_per_chunk_bound(collective, topo, root=args.root)
    rows = []
    for (s, r, c, t, status), alg in zip(frontier, found, strict=True):
        program = alg.to_program()
        sims = {size: simulate(program, topo, size) for size in SIM_SIZES}
        rows.append(
            {
                "steps": s,
                "rounds": r,
                "chunks": c,
                "solve_s": round(t, 3),
                "optimal": status,
                "steps_gap": s - step_bound,
                "rounds_per_chunk_gap": float(Fraction(r, c) / ratio_bound - 1) if ratio_bound else 0.0,
                **{f"time_us_{format_size(size)}": round(res.time_us, 3) for size, res in sims.items()},
                **{f"busbw_gbps_{format_size(size)}": round(res.busbw_gbps, 3) for size, res in sims.items()},
            }
        )
    if args.json:
        print_json(
            {
                "collective": collective.value,
                "topology": topo.name,
                "frontier": rows,
                "total_s": round(total, 3),
                "steps_bound": step_bound,
                "rounds_per_chunk_bound": str(ratio_bound),
            }
        )
    else:
        headers = ["steps", "rounds", "chunks", "rounds/chunk", "gap to bounds", "solve_s", "optimal"] + [
            f"busbw {format_size(x)}" for x in SIM_SIZES
        ]
        print(
            table(
                headers,
                [
                    [
                        row["steps"],
                        row["rounds"],
                        row["chunks"],
                        f"{row['rounds']}/{row['chunks']}",
                        f"+{row['steps_gap']} steps, +{100 * row['rounds_per_chunk_gap']:.0f}% rounds/chunk",
                        row["solve_s"],
                        row["optimal"],
                    ]
                    + [row[f"busbw_gbps_{format_size(x)}"] for x in SIM_SIZES]
                    for row in rows
                ],
            )
        )
        print(f"lower bounds: {step_bound} steps, {ratio_bound} rounds/chunk; busbw simulated on {topo.name} (GB/s); total {total:.2f} s")
    return 0


def _save(alg: Algorithm, path: Path) -> None:
    if path.suffix.lower() == ".xml":
        save_msccl_xml(alg.to_program(), path)
        return
    if path.suffix.lower() != ".json":
        raise CollectiveError(f"synth: output must end in .json or .xml, got {str(path)!r}")
    payload = {
        "name": alg.name,
        "collective": alg.spec.collective.value,
        "nranks": alg.spec.nranks,
        "chunk_factor": alg.spec.chunk_factor,
        "root": alg.spec.root,
        "topology": alg.topology,
        "steps": [{"rounds": s.rounds, "transfers": [[t.chunk, t.src, t.dst, t.reduce] for t in s.transfers]} for s in alg.steps],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
