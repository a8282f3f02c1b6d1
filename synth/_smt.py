"""SMT synthesis of chunk-level collective algorithms (SCCL's model, encoded for Z3).

The model: a switchless topology whose link ``u -> v`` carries ``lanes(u, v)`` chunks per
round; an algorithm of ``S`` steps, step ``s`` taking ``r_s >= 1`` rounds with
``sum(r_s) = R``; every rank's share of the data cut into ``C`` chunks (the spec's chunk
factor). Non-combining collectives (all_gather, broadcast, gather, scatter, all_to_all) are
encoded directly:

* ``has[c, n, s]`` -- rank ``n`` holds chunk ``c`` after step ``s`` (step 0 is the start);
* ``send[c, u, v, s]`` -- chunk ``c`` crosses link ``u -> v`` in step ``s``;
* ``extra[s, k]`` -- step ``s`` takes at least ``k + 1`` rounds (rounds in unary, so that the
  whole encoding is Boolean with cardinality constraints).

Constraints, one function each: sources hold their chunks at step 0 and nobody else does
(precondition), destinations hold them after step ``S`` (postcondition), holding is monotone,
a rank sends only a chunk it held before the step, a rank gains a chunk only by receiving it
and receives each chunk at most once, ``sum_c send[c, u, v, s] <= lanes(u, v) * r_s`` and
``sum_s r_s = R``. Variables that the hop distances make constant are never created.
The total of rounds is a hard constraint rather than an assumption, and interchangeable chunks
are left unordered: on DGX-1 both lexicographic symmetry breaking and assumption-based reuse
of one solver across totals made Z3 slower on the satisfiable instances (which dominate).

Combining collectives come from duality: reduce_scatter is all_gather on the reversed
topology run backwards (every transfer turned around, steps in reverse order, as reductions);
reduce is broadcast's dual; all_reduce is reduce_scatter followed by all_gather.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx
import z3

from synccl.collectives import Algorithm, Collective, CollectiveSpec, Step, Transfer, chunk_destinations, chunk_sources, parse_collective
from synccl.exceptions import CollectiveError, Infeasible, SolverTimeout, TopologyError
from synccl.topologies import Topology

__all__ = ["synthesize", "steps_lower_bound"]

logger = logging.getLogger(__name__)

#: The non-combining collective whose reversed schedule is each combining collective.
_DUAL = {Collective.REDUCE_SCATTER: Collective.ALL_GATHER, Collective.REDUCE: Collective.BROADCAST}

#: A decoded schedule: per step, its transfers and its rounds.
Plan = tuple[tuple[tuple[Transfer, ...], int], ...]


@dataclass(frozen=True, slots=True)
class _Instance:
    """One non-combining synthesis problem, free of Z3 and of the topology object."""

    label: str
    nranks: int
    links: tuple[tuple[int, int, int], ...]  # (src, dst, lanes)
    sources: Mapping[int, frozenset[int]]  # chunk -> ranks holding it at the start
    destinations: Mapping[int, frozenset[int]]  # chunk -> ranks that must hold it at the end
    hops: Mapping[int, Mapping[int, int]]  # hops[u][v]: fewest links from u to v
    steps: int


class _Encoding:
    """The Z3 variables and solver of one :class:`_Instance` with ``rounds`` rounds in all."""

    def __init__(self, instance: _Instance, rounds: int) -> None:
        self.instance = instance
        self.rounds = rounds
        self.solver = z3.Solver()
        self.has = _has_vars(instance)
        self.send = _send_vars(instance)
        self.extra = _extra_round_vars(instance, rounds)

    def holds(self, c: int, n: int, s: int) -> z3.BoolRef:
        """``has[c, n, s]``, or the constant ``False`` where the hop distance rules it out."""
        return self.has.get((c, n, s), z3.BoolVal(False))


# -- variables ------------------------------------------------------------------------------------


def _distance(instance: _Instance, ranks: frozenset[int], target: int) -> float:
    return min((instance.hops[r].get(target, float("inf")) for r in ranks), default=float("inf"))


def _has_vars(instance: _Instance) -> dict[tuple[int, int, int], z3.BoolRef]:
    """``has[c, n, s]`` for ``s >= 1`` where ``n`` is within ``s`` hops of a source of ``c``, and not a source."""
    out = {}
    for c, sources in instance.sources.items():
        for n in range(instance.nranks):
            if n in sources:
                continue
            first = max(1, int(min(_distance(instance, sources, n), instance.steps + 1)))
            for s in range(first, instance.steps + 1):
                out[c, n, s] = z3.Bool(f"has_c{c}_r{n}_s{s}")
    return out


def _send_vars(instance: _Instance) -> dict[tuple[int, int, int, int], z3.BoolRef]:
    """``send[c, u, v, s]`` where ``u`` can hold ``c`` before step ``s``, ``v`` is no source and ``v`` reaches a destination in time."""
    out = {}
    for c, sources in instance.sources.items():
        dests = instance.destinations[c]
        for u, v, _ in instance.links:
            if v in sources:
                continue
            earliest = int(min(_distance(instance, sources, u), instance.steps)) + 1
            to_dest = min(instance.hops[v].get(d, instance.steps + 1) for d in dests)
            for s in range(earliest, instance.steps - to_dest + 1):
                out[c, u, v, s] = z3.Bool(f"send_c{c}_{u}to{v}_s{s}")
    return out


def _extra_round_vars(instance: _Instance, rounds: int) -> list[list[z3.BoolRef]]:
    """``extra[s][k]``: step ``s + 1`` takes at least ``k + 2`` rounds (``r_s`` in unary, ``r_s >= 1`` implicit)."""
    spare = rounds - instance.steps
    return [[z3.Bool(f"rounds_s{s}_ge{k + 2}") for k in range(spare)] for s in range(1, instance.steps + 1)]


# -- constraints -----------------------------------------------------------------------------------


def _postcondition(enc: _Encoding) -> list[z3.BoolRef]:
    """Every destination holds its chunk after the last step (sources hold theirs from step 0)."""
    inst = enc.instance
    return [enc.holds(c, d, inst.steps) for c, dests in inst.destinations.items() for d in dests if d not in inst.sources[c]]


def _monotone(enc: _Encoding) -> list[z3.BoolRef]:
    """A rank keeps what it holds."""
    return [z3.Implies(var, enc.holds(c, n, s + 1)) for (c, n, s), var in enc.has.items() if s < enc.instance.steps]


def _send_needs_chunk(enc: _Encoding) -> list[z3.BoolRef]:
    """A rank sends a chunk only if it held it before the step, to a rank that did not and then does."""
    out = []
    for (c, u, v, s), var in enc.send.items():
        held = z3.BoolVal(True) if u in enc.instance.sources[c] else enc.holds(c, u, s - 1)
        out.append(z3.Implies(var, z3.And(held, enc.holds(c, v, s), z3.Not(enc.holds(c, v, s - 1)))))
    return out


def _receive_justified(enc: _Encoding) -> list[z3.BoolRef]:
    """A rank gains a chunk in step ``s`` only by receiving it in step ``s``."""
    incoming: dict[tuple[int, int, int], list[z3.BoolRef]] = {}
    for (c, _, v, s), var in enc.send.items():
        incoming.setdefault((c, v, s), []).append(var)
    return [z3.Implies(var, z3.Or(enc.holds(c, n, s - 1), *incoming.get((c, n, s), []))) for (c, n, s), var in enc.has.items()]


def _receive_once(enc: _Encoding) -> list[z3.BoolRef]:
    """A rank receives each chunk at most once."""
    incoming: dict[tuple[int, int], list[z3.BoolRef]] = {}
    for (c, _, v, _), var in enc.send.items():
        incoming.setdefault((c, v), []).append(var)
    return [z3.AtMost(*lits, 1) for lits in incoming.values() if len(lits) > 1]


def _bandwidth(enc: _Encoding) -> list[z3.BoolRef]:
    """At most ``lanes(u, v) * r_s`` chunks cross link ``u -> v`` in step ``s``: ``r_s <= k`` caps them at ``lanes * k``."""
    per_link: dict[tuple[int, int, int], list[z3.BoolRef]] = {}
    for (_, u, v, s), var in enc.send.items():
        per_link.setdefault((u, v, s), []).append(var)
    lanes = {(u, v): k for u, v, k in enc.instance.links}
    out = []
    for (u, v, s), lits in per_link.items():
        extra = enc.extra[s - 1]
        for k in range(1, len(extra) + 2):
            cap = lanes[u, v] * k
            if len(lits) <= cap:
                break
            at_most = z3.AtMost(*lits, cap)
            out.append(z3.Or(extra[k - 1], at_most) if k <= len(extra) else at_most)
    return out


def _rounds_unary(enc: _Encoding) -> list[z3.BoolRef]:
    """``r_s >= k + 1`` implies ``r_s >= k``."""
    return [z3.Implies(row[k + 1], row[k]) for row in enc.extra for k in range(len(row) - 1)]


def _rounds_total(enc: _Encoding) -> list[z3.BoolRef]:
    """``sum(r_s) = R``: exactly ``R - S`` extra rounds."""
    extras = [x for row in enc.extra for x in row]
    return [z3.PbEq([(x, 1) for x in extras], enc.rounds - enc.instance.steps)] if extras else []


def encode(instance: _Instance, rounds: int) -> _Encoding:
    """All constraints of ``instance`` with ``rounds`` rounds in all (``rounds >= steps``)."""
    enc = _Encoding(instance, rounds)
    for family in (
        _postcondition,
        _monotone,
        _send_needs_chunk,
        _receive_justified,
        _receive_once,
        _bandwidth,
        _rounds_unary,
        _rounds_total,
    ):
        enc.solver.add(*family(enc))
    return enc


# -- solve / decode ---------------------------------------------------------------------------------


def solve(enc: _Encoding, *, time_limit: float | None = None) -> z3.ModelRef | None:
    """A model of the encoding, ``None`` if there is none.

    Raises
    ------
    SolverTimeout
        If Z3 gives up (``time_limit`` in seconds) before deciding.
    """
    enc.solver.set("timeout", int(time_limit * 1000) if time_limit is not None else 4294967295)
    started = time.perf_counter()
    result = enc.solver.check()
    elapsed = time.perf_counter() - started
    logger.debug("%s in %d step(s), %d round(s): %s in %.3f s", enc.instance.label, enc.instance.steps, enc.rounds, result, elapsed)
    if result == z3.unknown:
        raise SolverTimeout(
            f"{enc.instance.label}: no answer for {enc.instance.steps} step(s), {enc.rounds} round(s) within {time_limit} s ({enc.solver.reason_unknown()})"
        )
    return enc.solver.model() if result == z3.sat else None


def decode(enc: _Encoding, model: z3.ModelRef) -> Plan:
    """Per step: the transfers and the rounds of a model."""
    transfers: list[list[Transfer]] = [[] for _ in range(enc.instance.steps)]
    for (c, u, v, s), var in sorted(enc.send.items()):
        if z3.is_true(model.eval(var, model_completion=True)):
            transfers[s - 1].append(Transfer(c, u, v))
    rounds = [1 + sum(z3.is_true(model.eval(x, model_completion=True)) for x in row) for row in enc.extra]
    return tuple((tuple(ts), r) for ts, r in zip(transfers, rounds, strict=True))


# -- instances -------------------------------------------------------------------------------------


def _check_topology(topology: Topology, op: str) -> None:
    if topology.switches:
        raise TopologyError(
            f"{op}: topology {topology.name!r} has switch vertices {list(topology.switches)!r}; SMT synthesis supports switchless topologies only"
        )


def _hops(topology: Topology) -> dict[int, dict[int, int]]:
    return {u: dict(d) for u, d in nx.all_pairs_shortest_path_length(topology.graph)}


def steps_lower_bound(collective: Collective | str, topology: Topology, *, root: int = 0) -> int:
    """Fewest steps any algorithm needs: the most links a needed chunk must cross.

    Parameters
    ----------
    collective : Collective or str
        The collective.
    topology : Topology
        A switchless topology.
    root : int
        Root of rooted collectives.

    Returns
    -------
    int
        The bound (twice the all_gather bound for all_reduce, which is synthesized as
        reduce_scatter followed by all_gather).

    Raises
    ------
    Infeasible
        If a needed pair of ranks has no path.
    TopologyError
        If the topology has switch vertices.

    Examples
    --------
    >>> from synccl.topologies import get_topology
    >>> steps_lower_bound("all_gather", get_topology("ring:4")), steps_lower_bound("all_reduce", get_topology("ring:4"))
    (2, 4)
    """
    coll = parse_collective(collective)
    _check_topology(topology, "synthesize")
    if coll is Collective.ALL_REDUCE:
        return steps_lower_bound(Collective.REDUCE_SCATTER, topology) + steps_lower_bound(Collective.ALL_GATHER, topology)
    if coll in _DUAL:
        return steps_lower_bound(_DUAL[coll], topology.reversed(), root=root)
    spec = CollectiveSpec(coll, topology.nranks, root=root if coll.is_rooted else None)
    return _instance(spec, topology, 1).bound


@dataclass(frozen=True, slots=True)
class _Built:
    instance: _Instance
    bound: int


def _instance(spec: CollectiveSpec, topology: Topology, steps: int, label: str | None = None) -> _Built:
    """The non-combining instance of ``spec`` on ``topology`` and its hop bound; raises :class:`Infeasible` if disconnected."""
    hops = _hops(topology)
    sources = {c: frozenset(r for r, _ in places) for c, places in chunk_sources(spec).items()}
    destinations = {c: frozenset(r for r, _ in places) for c, places in chunk_destinations(spec).items()}
    label = label or f"{spec.collective.value} on {topology.name!r}"
    bound = 0
    for c, dests in destinations.items():
        for d in dests:
            far = min((hops[r].get(d) for r in sources[c] if d in hops[r]), default=None)
            if far is None:
                raise Infeasible(f"{label}: rank {d} cannot be reached from rank {min(sources[c])}")
            bound = max(bound, far)
    links = tuple((link.src, link.dst, link.lanes) for link in topology.links())
    return _Built(_Instance(label, topology.nranks, links, sources, destinations, hops, steps), bound)


# -- the public entry point ---------------------------------------------------------------------------


def _check_positive(name: str, value: object, op: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CollectiveError(f"{op}: {name} must be an integer >= 1, got {value!r}")


def _copy_schedule(spec: CollectiveSpec, topology: Topology, steps: int, rounds: int, time_limit: float | None, label: str) -> Plan:
    """Steps of a non-combining ``spec``; raises :class:`Infeasible` when there is none."""
    built = _instance(spec, topology, steps, label)
    if steps < built.bound:
        raise Infeasible(f"{label}: no algorithm in {steps} step(s): some chunk must cross {built.bound} links")
    enc = encode(built.instance, rounds)
    model = solve(enc, time_limit=time_limit)
    if model is None:
        raise Infeasible(f"{label}: no algorithm in {steps} step(s) and {rounds} round(s) with {spec.chunk_factor} chunk(s)")
    return decode(enc, model)


def synthesize(
    collective: Collective | str,
    topology: Topology,
    *,
    steps: int,
    rounds: int,
    chunks: int,
    root: int = 0,
    time_limit: float | None = None,
) -> Algorithm:
    """An algorithm for ``collective`` on ``topology`` with exactly the given steps, rounds and chunks.

    Parameters
    ----------
    collective : Collective or str
        Any collective; combining ones are synthesized through duality (module docstring).
    topology : Topology
        A connected, switchless topology; link lanes are chunks per round.
    steps : int
        Number of steps ``S >= 1``.
    rounds : int
        Total rounds ``R >= S`` (each step takes at least one).
    chunks : int
        Chunks per rank share (the spec's chunk factor). all_reduce runs reduce_scatter and
        all_gather with this factor, so its Algorithm's spec has chunk factor ``nranks * chunks``.
    root : int
        Root of rooted collectives (ignored by the others).
    time_limit : float, optional
        Seconds Z3 may spend on each satisfiability check.

    Returns
    -------
    Algorithm
        A schedule whose ``to_program()`` verifies.

    Raises
    ------
    Infeasible
        If no such algorithm exists (message names the instance), or the topology is disconnected.
    SolverTimeout
        If Z3 hits ``time_limit``.
    CollectiveError
        For non-positive steps, rounds or chunks, or ``rounds < steps``.
    TopologyError
        If the topology has switch vertices.

    Examples
    --------
    >>> from synccl.topologies import get_topology
    >>> alg = synthesize("all_gather", get_topology("ring:4"), steps=2, rounds=3, chunks=2)
    >>> len(alg.steps), alg.total_rounds, alg.spec.chunk_factor
    (2, 3, 2)
    >>> alg.to_program().num_instructions() > 0
    True
    """
    coll = parse_collective(collective)
    op = f"{coll.value} on {topology.name!r}"
    for name, value in (("steps", steps), ("rounds", rounds), ("chunks", chunks)):
        _check_positive(name, value, op)
    if rounds < steps:
        raise CollectiveError(f"{op}: rounds must be >= steps (every step takes a round), got rounds={rounds} < steps={steps}")
    _check_topology(topology, op)
    root = root if coll.is_rooted else None
    if coll is Collective.ALL_REDUCE:
        return _all_reduce(topology, steps, rounds, chunks, time_limit)
    if coll in _DUAL:
        spec = CollectiveSpec(coll, topology.nranks, chunk_factor=chunks, root=root)
        dual = CollectiveSpec(_DUAL[coll], topology.nranks, chunk_factor=chunks, root=root)
        plan = _reversed(_copy_schedule(dual, topology.reversed(), steps, rounds, time_limit, op))
    else:
        spec = CollectiveSpec(coll, topology.nranks, chunk_factor=chunks, root=root)
        plan = _copy_schedule(spec, topology, steps, rounds, time_limit, op)
    return _algorithm(spec, topology, plan)


def _reversed(plan: Plan) -> Plan:
    """The dual of a copy schedule on the reversed topology: transfers turned around into reductions, steps reversed."""
    return tuple((tuple(Transfer(t.chunk, t.dst, t.src, reduce=True) for t in transfers), r) for transfers, r in reversed(plan))


def _algorithm(spec: CollectiveSpec, topology: Topology, plan: Plan) -> Algorithm:
    """Wrap ``plan`` as an Algorithm, checking that it lowers to a verified Program."""
    total = sum(r for _, r in plan)
    name = f"smt-{spec.collective.value}-{topology.name}-s{len(plan)}-r{total}-c{spec.chunk_factor}"
    alg = Algorithm(name, spec, tuple(Step(transfers, r) for transfers, r in plan), topology=topology.name)
    alg.to_program()  # raises VerificationError if the encoding were ever wrong
    return alg


def _all_reduce(topology: Topology, steps: int, rounds: int, chunks: int, time_limit: float | None) -> Algorithm:
    """reduce_scatter then all_gather, trying every split of steps and rounds, balanced splits first."""
    op = f"all_reduce on {topology.name!r}"
    n = topology.nranks
    if steps < 2:
        raise Infeasible(f"{op}: no algorithm in {steps} step(s): reduce_scatter + all_gather takes at least 2")
    gather = CollectiveSpec(Collective.ALL_GATHER, n, chunk_factor=chunks)
    splits = sorted(
        ((s1, r1) for s1 in range(1, steps) for r1 in range(s1, rounds - (steps - s1) + 1)),
        key=lambda sr: (abs(2 * sr[0] - steps), abs(2 * sr[1] - rounds), sr),
    )
    for s1, r1 in splits:
        try:
            first = _reversed(_copy_schedule(gather, topology.reversed(), s1, r1, time_limit, op))
            second = _copy_schedule(gather, topology, steps - s1, rounds - r1, time_limit, op)
        except Infeasible:
            continue
        spec = CollectiveSpec(Collective.ALL_REDUCE, n, chunk_factor=n * chunks)
        return _algorithm(spec, topology, first + second)
    raise Infeasible(f"{op}: no reduce_scatter + all_gather algorithm in {steps} step(s) and {rounds} round(s) with {chunks} chunk(s)")
