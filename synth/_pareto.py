"""SCCL's Pareto-optimal search: for each step count, the fewest rounds per chunk.

For ``S`` steps from the hop lower bound upward, candidate ratios ``R/C`` (``C`` up to
``max_chunks``, ``R >= S``) are tried in increasing order, from the bandwidth lower bound
``b*`` up to (excluding) the best ratio found with fewer steps; the first satisfiable one is a
frontier point. Since ``(S, R, C)`` satisfiable implies ``(S, kR, kC)`` satisfiable (cut every
chunk in ``k``), a ratio is refuted by its largest multiple within ``max_chunks``; a satisfiable
ratio is then tried at its smaller multiples for the fewest chunks. A point is proven optimal
(within ``max_chunks``) when every stricter candidate was refuted, i.e. none timed out. The
search stops once a point reaches ``b*``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import networkx as nx

from synccl.collectives import Algorithm, Collective, CollectiveSpec, Step, Transfer, chunk_sources, parse_collective
from synccl.exceptions import CollectiveError, SolverTimeout
from synccl.synth import _smt
from synccl.synth._bounds import _CAPACITY, _all_to_all_ratio, _max_rate
from synccl.topologies import Topology

__all__ = ["Attempt", "ParetoPoint", "ParetoResult", "pareto_frontier", "rounds_per_chunk_bound", "verdict"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One satisfiability check: ``sat`` is ``None`` when it timed out."""

    steps: int
    rounds: int
    chunks: int
    sat: bool | None
    solve_s: float


@dataclass(frozen=True, slots=True)
class ParetoPoint:
    """A frontier point; ``proven`` unless a stricter candidate with as many steps timed out."""

    steps: int
    rounds: int
    chunks: int
    solve_s: float
    proven: bool
    algorithm: Algorithm


@dataclass(frozen=True, slots=True)
class ParetoResult:
    """The frontier, the candidates that timed out, every check made and the total time."""

    collective: Collective
    topology: str
    points: tuple[ParetoPoint, ...]
    unproven: tuple[Attempt, ...]
    trail: tuple[Attempt, ...]
    total_s: float


def _lanes_graph(topology: Topology, *, reverse: bool) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(topology.graph.nodes)
    for link in topology.links():
        a, b = (link.dst, link.src) if reverse else (link.src, link.dst)
        graph.add_edge(a, b, **{_CAPACITY: Fraction(link.lanes)})
    return graph


def rounds_per_chunk_bound(collective: Collective | str, topology: Topology, *, root: int = 0) -> Fraction:
    """Fewest rounds per chunk ``R/C`` any algorithm needs when a link carries ``lanes`` chunks per round.

    The cut bounds of :mod:`synccl.synth._bounds` with lanes as capacities.

    Examples
    --------
    >>> from synccl.topologies import get_topology
    >>> rounds_per_chunk_bound("all_gather", get_topology("dgx1"))
    Fraction(7, 6)
    """
    coll = parse_collective(collective)
    n = topology.nranks
    if n == 1:
        return Fraction(0)
    if coll is Collective.ALL_REDUCE:
        return rounds_per_chunk_bound(Collective.REDUCE_SCATTER, topology) + rounds_per_chunk_bound(Collective.ALL_GATHER, topology)
    reverse = coll in (Collective.REDUCE_SCATTER, Collective.REDUCE, Collective.SCATTER)
    graph = _lanes_graph(topology, reverse=reverse)
    if coll is Collective.ALL_TO_ALL:
        return _all_to_all_ratio(topology, graph)
    ranks = range(n)
    if coll in (Collective.ALL_GATHER, Collective.REDUCE_SCATTER):
        demands = [(u, [v for v in ranks if v != u]) for u in ranks]
    elif coll in (Collective.BROADCAST, Collective.REDUCE):
        demands = [(u, [root]) for u in ranks if u != root]
    else:  # GATHER, SCATTER
        demands = [(root, [v for v in ranks if v != root])]
    return 1 / _max_rate(graph, demands)


def _candidates(bound: Fraction, below: Fraction | None, steps: int, max_chunks: int, cap: Fraction) -> list[Fraction]:
    """Ratios ``R/C`` in ``[bound, below)`` (``[bound, cap]`` without ``below``) with ``C <= max_chunks`` and ``R >= S``."""
    ratios = set()
    for c in range(1, max_chunks + 1):
        r = max(steps, math.ceil(bound * c))
        while Fraction(r, c) < below if below is not None else Fraction(r, c) <= cap:
            ratios.add(Fraction(r, c))
            r += 1
    return sorted(ratios)


def pareto_frontier(
    collective: Collective | str,
    topology: Topology,
    *,
    max_steps: int | None = None,
    max_chunks: int = 6,
    root: int = 0,
    time_limit: float | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
) -> ParetoResult:
    """SCCL's latency-bandwidth frontier of ``collective`` on ``topology`` (module docstring).

    Parameters
    ----------
    collective : Collective or str
        all_gather, broadcast, gather, scatter, all_to_all, or their duals reduce_scatter and
        reduce; all_reduce is the best composition reduce_scatter + all_gather of their frontiers.
    topology : Topology
        A connected, switchless topology.
    max_steps : int, optional
        Last step count tried; default the hop lower bound plus 3.
    max_chunks : int
        Largest chunk factor tried.
    root : int
        Root of rooted collectives.
    time_limit : float, optional
        Seconds per satisfiability check; a check that times out is recorded in ``unproven``.
    on_attempt : callable, optional
        Called with every :class:`Attempt` as soon as it is decided (progress reports).

    Returns
    -------
    ParetoResult
        Points in increasing steps (strictly decreasing rounds per chunk).

    Raises
    ------
    CollectiveError
        For a bad ``max_steps``/``max_chunks``.
    Infeasible, TopologyError
        As :func:`synthesize`.

    Examples
    --------
    >>> from synccl.topologies import get_topology
    >>> result = pareto_frontier("all_gather", get_topology("ring:4"), max_chunks=2)
    >>> [(p.steps, p.rounds, p.chunks) for p in result.points]
    [(2, 3, 2)]
    """
    started = time.perf_counter()
    coll = parse_collective(collective)
    if coll is Collective.ALL_REDUCE:
        halves = [
            pareto_frontier(half, topology, max_steps=max_steps, max_chunks=max_chunks, time_limit=time_limit, on_attempt=on_attempt)
            for half in (Collective.REDUCE_SCATTER, Collective.ALL_GATHER)
        ]
        return _composed_all_reduce(topology, *halves, started=started)
    _smt._check_topology(topology, f"{coll.value} on {topology.name!r}")
    first = _smt.steps_lower_bound(coll, topology, root=root)
    last = first + 3 if max_steps is None else max_steps
    for name, value in (("max_chunks", max_chunks), ("max_steps", last)):
        _smt._check_positive(name, value, "pareto_frontier")
    dual = _smt._DUAL.get(coll)
    base, graph = (dual, topology.reversed()) if dual else (coll, topology)
    bound = rounds_per_chunk_bound(coll, topology, root=root)
    label = f"{coll.value} on {topology.name!r}"
    base_root = root if base.is_rooted else None
    per_factor = len(chunk_sources(CollectiveSpec(base, topology.nranks, root=base_root)))  # global chunks per unit of chunk factor
    points: list[ParetoPoint] = []
    trail: list[Attempt] = []
    best: Fraction | None = None
    for steps in range(max(first, 1), last + 1):
        if best is not None and best <= bound:
            break
        ratios = _candidates(bound, best, steps, max_chunks, Fraction(steps * per_factor))

        def check(rounds: int, chunks: int, steps: int = steps) -> _smt.Plan | None:
            spec = CollectiveSpec(base, topology.nranks, chunk_factor=chunks, root=base_root)
            t0 = time.perf_counter()
            enc = _smt.encode(_smt._instance(spec, graph, steps, label).instance, rounds)
            try:
                model = _smt.solve(enc, time_limit=time_limit)
            except SolverTimeout:
                model = None
                trail.append(Attempt(steps, rounds, chunks, None, time.perf_counter() - t0))
            else:
                trail.append(Attempt(steps, rounds, chunks, model is not None, time.perf_counter() - t0))
            logger.info(
                "%s: %d step(s) %d round(s) %d chunk(s): %s in %.2f s",
                label,
                steps,
                rounds,
                chunks,
                verdict(trail[-1].sat),
                trail[-1].solve_s,
            )
            if on_attempt is not None:
                on_attempt(trail[-1])
            return _smt.decode(enc, model) if model is not None else None

        timed_out = False
        for ratio in ratios:
            multiples = [k for k in range(1, max_chunks // ratio.denominator + 1) if k * ratio.numerator >= steps]
            plan = check(multiples[-1] * ratio.numerator, multiples[-1] * ratio.denominator)
            if plan is None:
                timed_out = timed_out or trail[-1].sat is None
                continue
            chosen = multiples[-1]
            for k in multiples[:-1]:
                smaller = check(k * ratio.numerator, k * ratio.denominator)
                if smaller is not None:
                    plan, chosen = smaller, k
                    break
            spec = CollectiveSpec(coll, topology.nranks, chunk_factor=chosen * ratio.denominator, root=root if coll.is_rooted else None)
            algorithm = _smt._algorithm(spec, topology, _smt._reversed(plan) if dual else plan)
            rounds, chunks = chosen * ratio.numerator, chosen * ratio.denominator
            solve_s = next(a.solve_s for a in reversed(trail) if (a.steps, a.rounds, a.chunks) == (steps, rounds, chunks))
            points.append(ParetoPoint(steps, rounds, chunks, solve_s, not timed_out, algorithm))
            best = ratio
            break
    unproven = tuple(a for a in trail if a.sat is None)
    return ParetoResult(coll, topology.name, tuple(points), unproven, tuple(trail), time.perf_counter() - started)


def _composed_all_reduce(topology: Topology, scatter: ParetoResult, gather: ParetoResult, *, started: float) -> ParetoResult:
    """all_reduce's frontier within reduce_scatter + all_gather algorithms, from the halves' frontiers.

    For ``S`` total steps the best ratio is the minimum over splits ``S = s1 + s2`` of the best
    reduce-scatter ratio within ``s1`` steps plus the best allgather ratio within ``s2``; a point
    is kept where that improves on fewer steps, and is proven when both halves are.
    """

    def best_within(result: ParetoResult, steps: int) -> ParetoPoint | None:
        fitting = [p for p in result.points if p.steps <= steps]
        return min(fitting, key=lambda p: Fraction(p.rounds, p.chunks)) if fitting else None

    if not scatter.points or not gather.points:
        raise CollectiveError(f"pareto_frontier: all_reduce on {topology.name!r}: a half has no frontier point within the step limit")
    lowest = scatter.points[0].steps + gather.points[0].steps
    highest = scatter.points[-1].steps + gather.points[-1].steps
    points: list[ParetoPoint] = []
    best: Fraction | None = None
    for total in range(lowest, highest + 1):
        pairs = []
        for s1 in range(1, total):
            a, b = best_within(scatter, s1), best_within(gather, total - s1)
            if a is not None and b is not None:
                pairs.append((Fraction(a.rounds, a.chunks) + Fraction(b.rounds, b.chunks), a, b))
        if not pairs:
            continue
        ratio, a, b = min(pairs, key=lambda t: t[0])
        if best is not None and ratio >= best:
            continue
        chunks = math.lcm(a.chunks, b.chunks)
        steps = _scaled(a.algorithm, chunks // a.chunks) + _scaled(b.algorithm, chunks // b.chunks)
        spec = CollectiveSpec(Collective.ALL_REDUCE, topology.nranks, chunk_factor=topology.nranks * chunks)
        rounds = sum(step.rounds for step in steps)
        algorithm = Algorithm(f"smt-all_reduce-{topology.name}-s{len(steps)}-r{rounds}-c{spec.chunk_factor}", spec, steps, topology=topology.name)
        algorithm.to_program()  # verified like every synthesized algorithm
        points.append(ParetoPoint(len(steps), rounds, chunks, a.solve_s + b.solve_s, a.proven and b.proven, algorithm))
        best = ratio
    trail = scatter.trail + gather.trail
    return ParetoResult(Collective.ALL_REDUCE, topology.name, tuple(points), scatter.unproven + gather.unproven, trail, time.perf_counter() - started)


def _scaled(algorithm: Algorithm, factor: int) -> tuple[Step, ...]:
    """The steps of ``algorithm`` with every chunk cut in ``factor`` (global chunk ``g`` becomes ``g*factor + j``)."""
    return tuple(
        Step(tuple(Transfer(t.chunk * factor + j, t.src, t.dst, t.reduce) for t in step.transfers for j in range(factor)), step.rounds * factor)
        for step in algorithm.steps
    )


def verdict(sat: bool | None) -> str:
    """``'SAT'``, ``'UNSAT'`` or ``'TIMEOUT'`` for :attr:`Attempt.sat`.

    >>> verdict(None)
    'TIMEOUT'
    """
    return "TIMEOUT" if sat is None else "SAT" if sat else "UNSAT"
