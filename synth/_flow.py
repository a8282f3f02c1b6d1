"""All-to-all synthesis as a multicommodity flow LP (TE-CCL's class), solved with HiGHS.

Model
-----
The ranks exchange ``traffic[s, d]`` bytes per *unit* (uniform all-to-all: one unit is one
block, ``size_bytes / nranks`` bytes). Data moves along the *logical edges* of
:func:`~synccl.synth._routes.logical_network` -- rank-to-rank routes that cross no other
rank -- and is charged to every physical link of the route, exactly as the simulator
charges it. Relaying through a rank is explicit: the rank receives into scratch and sends
again.

Flat LP (source-aggregated multicommodity flow, one commodity per source)::

    minimise    T
    subject to  sum_in x[s, e] - sum_out x[s, e] = traffic[s, v]   every source s, rank v != s
                sum_{s, e crossing l} x[s, e] <= capacity[l] * T    every physical link l
                x >= 0, no flow of s enters s

``T`` is the best time per unit over every routing that stores and forwards at ranks
(per-pair commodities would give the same value: flows of one source are interchangeable).
A second solve keeps ``T`` within ``1e-6`` of the optimum and minimises the total hops, so
that no flow makes needless detours. Flows are then split into paths
(:func:`~synccl.synth._flow_lowering.decompose`), rounded to whole chunks and ordered into
steps (:mod:`synccl.synth._flow_lowering`).

Hierarchical construction (multi-host topologies)
--------------------------------------------------
Every pair on different hosts takes exactly one inter-host logical edge ``g -> g'``
(gateways), with intra-host legs ``s ~> g`` and ``g' ~> d``:

1. *Gateway LP*: one variable per inter-host logical edge, the traffic of every host pair
   spread over the edges between the two hosts, minimising the busiest physical link the
   inter-host edges load (NIC, PCIe, fabric); a second solve keeps that optimum and
   minimises the traffic that must change rank inside a host.
2. *Gateway assignment*: per host pair, sources fill their own gateway first (and
   gateways deliver to themselves first), the rest in order; every pair's share of every
   gateway edge follows, and with it the intra-host legs.
3. *Intra-host LPs*: per host, the flat LP over its own ranks and logical edges for its
   intra-host traffic plus the legs, with the gateway loads already on its links.
4. Composition: leg paths, gateway edge, leg paths.

Its time is compared with the best cut bound (the flat LP is what it avoids solving).

``method="auto"`` solves the flat LP when the topology has one host or the LP has at most
``FLAT_VARIABLES_LIMIT`` (40 000) flow variables, sources x logical edges (``dgx2:2``:
17 408, ``ndv2:4``: 28 672), and builds the hierarchical schedule otherwise
(``dgx-a100:8``: 57 344; ``dgx-a100:32`` with 256 ranks: 2.5 million).

Skewed traffic and Programs
---------------------------
Any non-negative traffic matrix (e.g. MoE dispatch with zipf expert loads) is planned and
scheduled: routes, chunk routes (each pair's block cut into ``chunks`` equal pieces, so
chunk sizes differ between pairs) and steps form an exact alltoallv schedule, with its
bandwidth time. It lowers to the same all_to_all :class:`Program` shape as uniform traffic
-- chunk ``d*chunks + k`` of rank ``s`` is the k-th piece of its block for ``d`` -- whose
routes and relays were chosen for this traffic; the sizes are bound when it runs:
``comm.alltoallv(..., program=schedule.to_program())`` moves each pair's block at its size in
that call (:class:`synccl.runtime._plan.TrafficLayout`), so the Program is verified once, for
any sizes. Its metadata records the traffic it was planned for.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Literal

import highspy
import numpy as np

from synccl.collectives import Algorithm, CollectiveSpec, Program, Step
from synccl.exceptions import CollectiveError, Infeasible, SolverTimeout, TopologyError
from synccl.synth._bounds import bandwidth_bound
from synccl.synth._flow_lowering import (
    BYTES_PER_US_PER_GBPS,
    ChunkRoutes,
    Path,
    Routes,
    assign_gateways,
    build_program,
    choose_chunks,
    chunk_items,
    compose_routes,
    decompose,
    path_loads,
    schedule_steps,
    time_per_unit,
)
from synccl.synth._highs import silent_highs
from synccl.synth._routes import LogicalNetwork, logical_network
from synccl.topologies import Topology

__all__ = ["FlowSchedule", "flow_all_to_all", "FLAT_VARIABLES_LIMIT"]

logger = logging.getLogger(__name__)

#: ``method="auto"`` solves the flat LP when it has at most this many flow variables
#: (sources x logical edges) or the topology has one host, the hierarchical construction otherwise.
FLAT_VARIABLES_LIMIT = 40_000
#: Relative slack on the optimal time allowed while the second solve removes detours.
_SLACK = 1e-6

Method = Literal["auto", "flat", "hierarchical"]


@dataclass(frozen=True, slots=True, eq=False)
class FlowSchedule:
    """An all-to-all schedule from the flow LP: routes, chunk routes, times and the bound.

    Times are in microseconds *per unit*: to move ``traffic[s, d]`` bytes for every pair.
    :meth:`bound_us` and :meth:`time_us` scale them to a message size.

    Attributes
    ----------
    topology : Topology
        The network planned on.
    traffic : numpy.ndarray
        ``nranks x nranks`` relative bytes ``src -> dst`` (read-only, zero diagonal).
    method : {'flat', 'hierarchical'}
        Which construction produced the routes.
    chunks : int
        Chunks every pair's block is cut into (its chunk factor).
    bound : float
        The lower bound the schedule is measured against: the flat LP optimum
        (``bound_kind='lp'``, the best time of any routing over the logical edges that
        stores and forwards at ranks), or for the hierarchical construction the best cut
        bound (``'cut'``).
    bound_kind : {'lp', 'cut'}
        Where ``bound`` comes from.
    route_time : float
        Time of the fractional routes (busiest physical link); equals the LP optimum for
        the flat method up to solver tolerance.
    achieved : float
        Time of the chunk routes: the bandwidth time of the lowered schedule.
    routes : mapping
        ``(src, dst) -> ((path, fraction), ...)``; a path lists the ranks visited,
        relays included, and the fractions of a pair sum to 1.
    chunk_routes : mapping
        ``(src, dst) -> ((path, chunks), ...)`` after rounding, counts summing to ``chunks``.
    solve_seconds : float
        Wall time of the LP solves and the path decompositions.
    """

    topology: Topology
    traffic: np.ndarray
    method: Literal["flat", "hierarchical"]
    chunks: int
    bound: float
    bound_kind: Literal["lp", "cut"]
    route_time: float
    achieved: float
    routes: Routes
    chunk_routes: ChunkRoutes
    solve_seconds: float

    @property
    def nranks(self) -> int:
        """Number of ranks."""
        return self.topology.nranks

    @property
    def uniform(self) -> bool:
        """Whether every pair exchanges the same amount (only then is there a Program)."""
        return _is_uniform(self.traffic)

    @property
    def gap(self) -> float:
        """``achieved / bound - 1``: how far the lowered schedule's bandwidth time is from the bound."""
        return self.achieved / self.bound - 1.0 if self.bound > 0 else 0.0

    def bound_us(self, size_bytes: int) -> float:
        """The bound in µs when one unit of traffic is ``size_bytes / nranks`` bytes (nccl-tests' all_to_all size)."""
        return self.bound * size_bytes / self.nranks

    def time_us(self, size_bytes: int) -> float:
        """The achieved bandwidth time in µs when one unit is ``size_bytes / nranks`` bytes."""
        return self.achieved * size_bytes / self.nranks

    def link_loads(self) -> np.ndarray:
        """Bytes per unit on every physical link (``logical_network(topology).links`` order) of the chunk routes."""
        net = logical_network(self.topology)
        return path_loads(net, chunk_items(self.traffic, self.chunk_routes, self.chunks))

    def steps(self) -> tuple[Step, ...]:
        """The chunk schedule: hops ordered into steps (see :func:`~synccl.synth._flow_lowering.schedule_steps`).

        Chunk ``(s*n + d)*chunks + k`` is the ``k``-th of the ``chunks`` equal pieces of
        pair ``(s, d)``'s block, ``traffic[s, d] / chunks`` units. For skewed traffic this is
        an alltoallv schedule: chunk sizes differ between pairs.
        """
        return schedule_steps(self.chunk_routes, self.nranks, self.chunks)

    def to_algorithm(self) -> Algorithm:
        """The chunk-level all_to_all Algorithm (for skewed traffic, an alltoallv's: see the module docstring)."""
        spec = CollectiveSpec("all_to_all", self.nranks, chunk_factor=self.chunks)
        return Algorithm(f"flow_all_to_all_{self.method}", spec, self.steps(), topology=self.topology.name)

    def to_program(self) -> Program:
        """Lower to a verified all_to_all Program; for skewed traffic, run it with ``comm.alltoallv(..., program=)``.

        The Program runs :meth:`steps` with one channel per connection end (see
        :func:`~synccl.synth._flow_lowering.build_program`), so relays forward as chunks
        arrive; ``to_algorithm().to_program()`` is the generic lowering of the same steps.

        Examples
        --------
        >>> from synccl.topologies import get_topology
        >>> flow_all_to_all(get_topology("line:3")).to_program().nranks
        3
        """
        algorithm = self.to_algorithm()
        program = build_program(algorithm.name, self.chunk_routes, algorithm.steps, self.nranks, self.chunks)
        if self.uniform:
            return program
        planned_for = json.dumps([[float(v) for v in row] for row in self.traffic])
        return replace(program, name=program.name.replace("all_to_all", "all_to_allv"), metadata=(*program.metadata, ("traffic", planned_for)))


def flow_all_to_all(
    topology: Topology,
    traffic: np.ndarray | Sequence[Sequence[float]] | None = None,
    *,
    chunks: int | None = None,
    time_limit: float | None = None,
    method: Method = "auto",
) -> FlowSchedule:
    """Synthesize an all-to-all (or alltoallv) schedule from the multicommodity flow LP.

    Parameters
    ----------
    topology : Topology
        The network; every rank must reach every rank it sends to.
    traffic : array_like, optional
        ``nranks x nranks`` non-negative relative bytes ``src -> dst`` (the diagonal is
        ignored); default uniform (every off-diagonal entry 1: all_to_all). Skewed matrices
        (e.g. MoE expert loads) give an alltoallv schedule: its Program runs with the call's
        counts (``comm.alltoallv(..., program=)``).
    chunks : int, optional
        Chunks per pair block. Default: the smallest of 1, 2, 3, 4, 6, 8, 12, 16 whose
        rounding stays within 1% of the fractional routes' time, with at most 16384 chunks
        in all (at least one per pair); the best of those tried if none does.
    time_limit : float, optional
        Seconds HiGHS may spend in all.
    method : {'auto', 'flat', 'hierarchical'}
        ``'flat'`` solves the whole LP; ``'hierarchical'`` composes gateway and per-host
        LPs (multi-host topologies). ``'auto'``: flat when the topology has one host or the
        flat LP has at most ``FLAT_VARIABLES_LIMIT`` flow variables (sources x logical
        edges), hierarchical otherwise.

    Returns
    -------
    FlowSchedule
        Routes, chunk routes, bound and achieved times; ``to_program()`` lowers uniform
        traffic to a verified Program.

    Raises
    ------
    CollectiveError
        If ``traffic``, ``chunks``, ``time_limit`` or ``method`` is malformed.
    Infeasible
        If some rank cannot reach a rank it sends to, or a link has zero bandwidth.
    SolverTimeout
        If HiGHS does not reach the LP optimum within ``time_limit``.

    Examples
    --------
    On a bidirectional ring of 4 ranks the LP meets the cut bound (two ranks on each side
    of a cut of two links):

    >>> from synccl.synth import bandwidth_bound
    >>> from synccl.topologies import get_topology
    >>> ring = get_topology("ring:4")
    >>> plan = flow_all_to_all(ring)
    >>> round(plan.bound_us(4_000_000) / bandwidth_bound(ring, "all_to_all", 4_000_000), 6), plan.gap
    (1.0, 0.0)
    """
    matrix = _check_traffic(topology, traffic)
    _check_options(chunks, time_limit, method)
    deadline = None if time_limit is None else time.monotonic() + time_limit
    net = _network(topology)
    chosen = _choose_method(topology, net, method)
    started = time.monotonic()
    if not (matrix > 0).any():
        routes: dict[tuple[int, int], tuple[tuple[Path, float], ...]] = {}
        bound, kind = 0.0, "lp"
    elif chosen == "flat":
        routes, lp_value = _flat_routes(net, matrix, deadline)
        bound, kind = lp_value, "lp"
    else:
        routes = _hierarchical_routes(net, matrix, deadline)
        bound, kind = _cut_bound(topology, net, matrix), "cut"
    solve_seconds = time.monotonic() - started
    weight = {pair: float(matrix[pair]) for pair in routes}
    route_time = time_per_unit(net, path_loads(net, ((p, f * weight[pair]) for pair, paths in routes.items() for p, f in paths)))
    count, chunk_routes, achieved = choose_chunks(net, matrix, routes, chunks, route_time)
    logger.info(
        "flow_all_to_all on %r (%s): bound %.6g us/unit (%s), routes %.6g, %d chunk(s) %.6g, %.2fs",
        topology.name, chosen, bound, kind, route_time, count, achieved, solve_seconds,
    )  # fmt: skip
    return FlowSchedule(
        topology=topology,
        traffic=matrix,
        method=chosen,
        chunks=count,
        bound=bound,
        bound_kind=kind,
        route_time=route_time,
        achieved=achieved,
        routes=MappingProxyType(routes),
        chunk_routes=MappingProxyType(chunk_routes),
        solve_seconds=solve_seconds,
    )


# -- checks ----------------------------------------------------------------------------------------


def _check_traffic(topology: Topology, traffic: object) -> np.ndarray:
    n = topology.nranks
    if traffic is None:
        matrix = np.ones((n, n))
    else:
        try:
            matrix = np.array(traffic, dtype=float)
        except (TypeError, ValueError):
            raise CollectiveError(f"flow_all_to_all: traffic must be an {n} x {n} numeric matrix, got {traffic!r}") from None
        if matrix.shape != (n, n):
            raise CollectiveError(f"flow_all_to_all: traffic must be {n} x {n} for topology {topology.name!r}, got shape {matrix.shape}")
        if not np.isfinite(matrix).all() or (matrix < 0).any():
            raise CollectiveError("flow_all_to_all: traffic entries must be finite and >= 0")
    np.fill_diagonal(matrix, 0.0)
    matrix.setflags(write=False)
    return matrix


def _check_options(chunks: object, time_limit: object, method: object) -> None:
    if chunks is not None and (not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 1):
        raise CollectiveError(f"flow_all_to_all: chunks must be an integer >= 1, got {chunks!r}")
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, int | float) or not time_limit > 0):
        raise CollectiveError(f"flow_all_to_all: time_limit must be a number of seconds > 0, got {time_limit!r}")
    if method not in ("auto", "flat", "hierarchical"):
        raise CollectiveError(f"flow_all_to_all: method must be 'auto', 'flat' or 'hierarchical', got {method!r}")


def _network(topology: Topology) -> LogicalNetwork:
    try:
        return logical_network(topology)
    except Infeasible as exc:
        raise Infeasible(f"flow_all_to_all on {topology.name!r}: {exc}") from None


def _choose_method(topology: Topology, net: LogicalNetwork, method: Method) -> Literal["flat", "hierarchical"]:
    if method == "flat":
        return "flat"
    if method == "hierarchical":
        if topology.nhosts < 2:
            raise TopologyError(
                f"flow_all_to_all: method='hierarchical' needs a topology that spans several hosts; {topology.name!r} has one"
            )
        return "hierarchical"
    small = topology.nranks * len(net.edges) <= FLAT_VARIABLES_LIMIT
    return "flat" if small or topology.nhosts < 2 else "hierarchical"


def _is_uniform(matrix: np.ndarray) -> bool:
    off = matrix[~np.eye(len(matrix), dtype=bool)]
    return off.size == 0 or (off.min() > 0 and off.max() - off.min() <= 1e-12 * off.max())


# -- the multicommodity flow LP: problem, encoding, solving, decoding --------------------------------------


@dataclass(frozen=True, slots=True)
class _Commodities:
    """A source-aggregated multicommodity flow problem over some ranks, free of HiGHS.

    Capacities, background loads and demands share one unit (scaled so the LP is well
    conditioned); ``T`` is load over capacity in that unit.
    """

    label: str
    vertices: tuple[int, ...]
    sources: tuple[int, ...]
    demand: np.ndarray  # len(sources) x len(vertices)
    edges: tuple[tuple[int, int], ...]
    edge_links: tuple[tuple[int, ...], ...]
    capacity: np.ndarray  # per physical link of the network
    background: np.ndarray  # load already on each link


@dataclass(frozen=True, slots=True)
class _Encoded:
    lp: highspy.HighsLp
    column_source: np.ndarray  # commodity index of each flow column (column 0 is T)
    column_edge: np.ndarray  # edge index of each flow column


def _encode(problem: _Commodities) -> _Encoded:
    """Columns: ``T`` then ``x[s, e]`` per commodity; rows: conservation per (commodity, vertex), then one per loaded link."""
    nv, nk = len(problem.vertices), len(problem.sources)
    where = {v: i for i, v in enumerate(problem.vertices)}
    used = sorted({link for links in problem.edge_links for link in links})
    link_row = {link: nk * nv + i for i, link in enumerate(used)}
    src = np.array([where[u] for u, _ in problem.edges], dtype=np.int64)
    dst = np.array([where[v] for _, v in problem.edges], dtype=np.int64)
    per_edge = [
        np.array([d, s] + [link_row[x] for x in links], dtype=np.int64) for s, d, links in zip(src, dst, problem.edge_links, strict=True)
    ]
    sizes = np.array([len(e) for e in per_edge], dtype=np.int64)
    template = np.concatenate(per_edge)
    is_vertex = np.concatenate([np.arange(len(e)) < 2 for e in per_edge])
    template_value = np.concatenate([np.array([1.0, -1.0] + [1.0] * (len(e) - 2)) for e in per_edge])
    starts, index, value, col_k, col_e = [np.array([0], dtype=np.int64)], [], [], [], []
    used_arr = np.array(used, dtype=np.int64)
    index.append(nk * nv + np.arange(len(used), dtype=np.int64))
    value.append(-problem.capacity[used_arr])
    filled = len(used)
    starts.append(np.array([filled], dtype=np.int64))
    for k, source in enumerate(problem.sources):
        allowed = dst != where[source]
        chosen = np.repeat(allowed, sizes)
        index.append(np.where(is_vertex[chosen], template[chosen] + k * nv, template[chosen]))
        value.append(template_value[chosen])
        starts.append(filled + np.cumsum(sizes[allowed]))
        filled += int(sizes[allowed].sum())
        col_k.append(np.full(int(allowed.sum()), k, dtype=np.int64))
        col_e.append(np.flatnonzero(allowed))
    ncols = 1 + sum(len(c) for c in col_k)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = ncols, nk * nv + len(used)
    lp.col_cost_ = np.concatenate([[1.0], np.zeros(ncols - 1)])
    lp.col_lower_, lp.col_upper_ = np.zeros(ncols), np.full(ncols, highspy.kHighsInf)
    demand = problem.demand.reshape(-1).astype(float)
    free = np.zeros((nk, nv), dtype=bool)
    free[np.arange(nk), [where[s] for s in problem.sources]] = True
    free = free.reshape(-1)
    lower = np.where(free, -highspy.kHighsInf, demand)
    upper = np.where(free, highspy.kHighsInf, demand)
    lp.row_lower_ = np.concatenate([lower, np.full(len(used), -highspy.kHighsInf)])
    lp.row_upper_ = np.concatenate([upper, -problem.background[used_arr]])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.concatenate(starts).astype(np.int32)
    lp.a_matrix_.index_ = np.concatenate(index).astype(np.int32)
    lp.a_matrix_.value_ = np.concatenate(value)
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = lp.num_col_, lp.num_row_
    return _Encoded(lp, np.concatenate(col_k), np.concatenate(col_e))


def _solve_two_phase(lp: highspy.HighsLp, hop_cost: np.ndarray, label: str, deadline: float | None) -> tuple[float, np.ndarray]:
    """Minimise ``T`` (column 0), then, keeping ``T`` within ``_SLACK``, the flow columns' ``hop_cost``.

    The second solve starts afresh: warm-starting it from the first basis was up to 40x
    slower on these degenerate LPs. Returns the optimal ``T`` and the column values of the
    second solve (of the first if the second fails or runs out of time).
    """
    optimum, first = _solve(lp, label, deadline, "LP")
    ncols = lp.num_col_
    lp.col_upper_ = np.concatenate([[optimum * (1 + _SLACK) + 1e-12], np.full(ncols - 1, highspy.kHighsInf)])
    lp.col_cost_ = np.concatenate([[0.0], hop_cost])
    try:
        _, second = _solve(lp, label, deadline, "detour removal")
    except (SolverTimeout, Infeasible) as exc:
        logger.warning("%s: keeping the first LP solution (%s)", label, exc)
        return optimum, first
    return optimum, second


def _solve(lp: highspy.HighsLp, label: str, deadline: float | None, what: str) -> tuple[float, np.ndarray]:
    """Solve ``lp`` with HiGHS' dual simplex; its objective and column values."""
    highs = silent_highs()
    highs.setOptionValue("solver", "simplex")
    highs.passModel(lp)
    _run(highs, label, deadline, what)
    return float(highs.getInfo().objective_function_value), np.asarray(highs.getSolution().col_value)


def _run(highs: highspy.Highs, label: str, deadline: float | None, what: str) -> None:
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SolverTimeout(f"{label}: time limit reached before the {what} solve")
        highs.setOptionValue("time_limit", float(left))
    started = time.monotonic()
    highs.run()
    status = highs.getModelStatus()
    logger.info(
        "%s: %s solve, %d columns, %d rows: %s in %.2fs",
        label,
        what,
        highs.getNumCol(),
        highs.getNumRow(),
        highs.modelStatusToString(status),
        time.monotonic() - started,
    )
    if status == highspy.HighsModelStatus.kOptimal:
        return
    if status == highspy.HighsModelStatus.kTimeLimit:
        raise SolverTimeout(f"{label}: HiGHS reached the time limit before the {what} optimum")
    if status == highspy.HighsModelStatus.kInfeasible:
        raise Infeasible(f"{label}: the flow LP is infeasible (some rank cannot reach a rank it sends to over logical edges)")
    raise Infeasible(f"{label}: HiGHS ended the {what} solve with status {highs.modelStatusToString(status)!r}")


def _solve_commodities(problem: _Commodities, deadline: float | None) -> tuple[float, dict[tuple[int, int], list[tuple[Path, float]]]]:
    """Optimal ``T`` (problem units) and, per (source, destination), its paths and fractions."""
    encoded = _encode(problem)
    optimum, values = _solve_two_phase(encoded.lp, np.ones(encoded.lp.num_col_ - 1), problem.label, deadline)
    flows = values[1:]
    routes: dict[tuple[int, int], list[tuple[Path, float]]] = {}
    for k, source in enumerate(problem.sources):
        mine = encoded.column_source == k
        flow = {problem.edges[e]: float(x) for e, x in zip(encoded.column_edge[mine], flows[mine], strict=True) if x > 0}
        demand = {v: float(problem.demand[k, i]) for i, v in enumerate(problem.vertices) if v != source}
        for dst, paths in decompose(source, flow, demand).items():
            routes[source, dst] = paths
    missing = [
        (s, v)
        for k, s in enumerate(problem.sources)
        for i, v in enumerate(problem.vertices)
        if problem.demand[k, i] > 0 and (s, v) not in routes and v != s
    ]
    if missing:
        raise Infeasible(f"{problem.label}: flow decomposition found no path for {missing[0]!r}")
    return optimum, routes


def _scaled(net: LogicalNetwork, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Traffic and capacities scaled to a maximum of 1, and the factor from LP ``T`` to µs per unit."""
    top_traffic, top_capacity = float(matrix.max()), float(net.capacity.max())
    return matrix / top_traffic, net.capacity / top_capacity, top_traffic / (top_capacity * BYTES_PER_US_PER_GBPS)


def _flat_routes(
    net: LogicalNetwork, matrix: np.ndarray, deadline: float | None
) -> tuple[dict[tuple[int, int], tuple[tuple[Path, float], ...]], float]:
    """Routes of the flat LP and its optimum in µs per unit."""
    n = len(matrix)
    demand, capacity, to_us = _scaled(net, matrix)
    sources = tuple(s for s in range(n) if demand[s].any())
    edges = tuple(sorted(net.edges))
    problem = _Commodities(
        label=f"flow_all_to_all on {net.topology.name!r}",
        vertices=tuple(range(n)),
        sources=sources,
        demand=demand[list(sources)],
        edges=edges,
        edge_links=tuple(net.edges[e] for e in edges),
        capacity=capacity,
        background=np.zeros(len(net.links)),
    )
    optimum, routes = _solve_commodities(problem, deadline)
    return {pair: tuple(paths) for pair, paths in routes.items()}, optimum * to_us


# -- hierarchical construction --------------------------------------------------------------------------


def _hierarchical_routes(
    net: LogicalNetwork, matrix: np.ndarray, deadline: float | None
) -> dict[tuple[int, int], tuple[tuple[Path, float], ...]]:
    """Routes of the gateway LP, gateway assignment and per-host LPs, composed (module docstring)."""
    topology = net.topology
    demand, capacity, _ = _scaled(net, matrix)
    host = [topology.host_of(r) for r in range(topology.nranks)]
    members = {h: [r for r in range(topology.nranks) if host[r] == h] for h in sorted(set(host))}
    inter = sorted(e for e in net.edges if host[e[0]] != host[e[1]])
    flow = _gateway_lp(net, demand, capacity, host, members, inter, deadline)
    plans, legs = assign_gateways(demand, members, inter, flow)
    background = path_loads(net, ((e, f) for e, f in zip(inter, flow, strict=True) if f > 0))
    intra: dict[tuple[int, int], list[tuple[Path, float]]] = {}
    for h, ranks in members.items():
        intra.update(_host_routes(net, h, ranks, demand, legs, capacity, background, deadline))
    return compose_routes(plans, intra, demand, host)


def _gateway_lp(
    net: LogicalNetwork,
    demand: np.ndarray,
    capacity: np.ndarray,
    host: list[int | None],
    members: Mapping[int, list[int]],
    inter: list[tuple[int, int]],
    deadline: float | None,
) -> np.ndarray:
    """Flow on every inter-host logical edge: host pairs' traffic over their edges, busiest link minimal.

    Columns: ``T``; a flow ``y[e]`` per edge ``e = g -> g'``; then the traffic that must
    change rank inside a host, as excesses: ``z[e] >= y[e] - traffic[g, g']`` per edge (only
    pair ``(g, g')`` crosses ``e`` without a relay), ``out[g, B] >= sum_g' y[g -> g'] -
    traffic[g, B]`` per gateway and destination host (what ``g`` sends beyond its own), and
    ``in[A, g'] >= sum_g y[g -> g'] - traffic[A, g']`` likewise on the receiving side.
    Rows: one equality per host pair (its traffic over its edges), one per loaded link
    (``sum y <= capacity * T``), one per excess. The second solve keeps ``T`` optimal and
    minimises the excesses.
    """
    label = f"flow_all_to_all on {net.topology.name!r} (gateway LP)"
    hosts = sorted(members)
    block = {(a, b): float(demand[np.ix_(members[a], members[b])].sum()) for a in hosts for b in hosts if a != b}
    pair_row = {pair: i for i, pair in enumerate(block)}
    for (a, b), amount in block.items():
        if amount > 0 and not any(host[u] == a and host[v] == b for u, v in inter):
            raise Infeasible(f"{label}: no inter-host logical edge from host {a} to host {b}; try method='flat'")
    used = sorted({link for e in inter for link in net.edges[e]})
    link_row = {link: len(block) + i for i, link in enumerate(used)}
    first = len(block) + len(used)
    edge_row = {e: first + i for i, e in enumerate(inter)}
    gate_keys = sorted({("out", u, host[v]) for u, v in inter}) + sorted({("in", host[u], v) for u, v in inter})
    gate_row = {key: first + len(inter) + i for i, key in enumerate(gate_keys)}
    columns: list[list[tuple[int, float]]] = [[(link_row[x], -float(capacity[x])) for x in used]]
    for u, v in inter:
        rows = [pair_row[host[u], host[v]], edge_row[u, v], gate_row["out", u, host[v]], gate_row["in", host[u], v]]
        columns.append([(row, 1.0) for row in rows] + [(link_row[x], 1.0) for x in net.edges[u, v]])
    excess = [*edge_row.values(), *gate_row.values()]
    columns += [[(row, -1.0)] for row in excess]
    lower = np.full(first + len(excess), -highspy.kHighsInf)
    upper = np.zeros(first + len(excess))
    for pair, row in pair_row.items():
        lower[row] = upper[row] = block[pair]
    for (u, v), row in edge_row.items():
        upper[row] = demand[u, v]
    for (side, x, y), row in gate_row.items():
        upper[row] = demand[x, members[y]].sum() if side == "out" else demand[members[x], y].sum()
    lp = _lp_from_columns(columns, lower, upper)
    cost = np.concatenate([np.zeros(len(inter)), np.ones(len(excess))])
    _, values = _solve_two_phase(lp, cost, label, deadline)
    return np.maximum(values[1 : 1 + len(inter)], 0.0)


def _lp_from_columns(columns: list[list[tuple[int, float]]], lower: np.ndarray, upper: np.ndarray) -> highspy.HighsLp:
    """An LP minimising column 0 from sparse columns ``[(row, value), ...]``."""
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = len(columns), len(lower)
    lp.col_cost_ = np.concatenate([[1.0], np.zeros(len(columns) - 1)])
    lp.col_lower_, lp.col_upper_ = np.zeros(len(columns)), np.full(len(columns), highspy.kHighsInf)
    lp.row_lower_, lp.row_upper_ = lower, upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.concatenate([[0], np.cumsum([len(c) for c in columns])]).astype(np.int32)
    lp.a_matrix_.index_ = np.array([r for c in columns for r, _ in c], dtype=np.int32)
    lp.a_matrix_.value_ = np.array([x for c in columns for _, x in c], dtype=float)
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = lp.num_col_, lp.num_row_
    return lp


def _host_routes(
    net: LogicalNetwork,
    h: int,
    ranks: list[int],
    demand: np.ndarray,
    legs: np.ndarray,
    capacity: np.ndarray,
    background: np.ndarray,
    deadline: float | None,
) -> dict[tuple[int, int], list[tuple[Path, float]]]:
    """Paths inside host ``h`` for its intra-host traffic plus the gateway legs, over its own logical edges."""
    local = (demand + legs)[np.ix_(ranks, ranks)]
    np.fill_diagonal(local, 0.0)
    if not (local > 0).any():
        return {}
    inside = set(ranks)
    edges = tuple(sorted(e for e in net.edges if e[0] in inside and e[1] in inside))
    sources = tuple(r for i, r in enumerate(ranks) if local[i].any())
    problem = _Commodities(
        label=f"flow_all_to_all on {net.topology.name!r} (host {h})",
        vertices=tuple(ranks),
        sources=sources,
        demand=local[[ranks.index(s) for s in sources]],
        edges=edges,
        edge_links=tuple(net.edges[e] for e in edges),
        capacity=capacity,
        background=background,
    )
    _, routes = _solve_commodities(problem, deadline)
    return routes


# -- cut bound ------------------------------------------------------------------------------------------


def _cut_bound(topology: Topology, net: LogicalNetwork, matrix: np.ndarray) -> float:
    """µs per unit from cuts: every single vertex, every host and their complements; for uniform traffic also :func:`bandwidth_bound`'s."""
    n = topology.nranks
    vertices = list(topology.graph.nodes)
    family = [{v} for v in vertices]
    family += [{v for v in vertices if topology.host_of(v) == h} for h in sorted({topology.host_of(r) for r in range(n)})]
    everything = set(vertices)
    family += [everything - s for s in family]
    best = 0.0
    for cut in family:
        inside = np.array([r in cut for r in range(n)])
        crossing = float(matrix[np.ix_(inside, ~inside)].sum())
        if crossing <= 0:
            continue
        out = sum(c for (u, v), c in zip(net.links, net.capacity, strict=True) if u in cut and v not in cut)
        best = max(best, crossing / (out * BYTES_PER_US_PER_GBPS))
    if _is_uniform(matrix) and n > 1:
        unit = float(matrix[0, 1])
        best = max(best, bandwidth_bound(topology, "all_to_all", n) * unit)
    return best
