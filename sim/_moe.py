"""The MoE layer's cost model: all-to-all-v exchanges of routed tokens, expert FFNs, and their pipeline.

* :func:`exchange_us` times one all-to-all-v of a traffic matrix: every pair's bytes as one flow
  on its route, all starting together, sharing links max-min fairly (the simulator's flow
  model) -- a flow ends when its bytes have drained plus the route's latency.
* :func:`moe_layer_us` times a layer whose tokens are cut into ``d`` parts: part ``i`` is
  dispatched, its experts run, its outputs are combined, and part ``i+1``'s exchange overlaps
  part ``i``'s experts (Tutel's pipelining). The exchanges share the network one at a time, the
  experts the device; each part pays a fixed overhead per exchange and per expert launch (what
  makes a deep pipeline lose).
* :func:`choose_moe_degree` is the ``d`` that model finds fastest (``overlap_degree="auto"``).

Routing is uniform in the model: a token picks ``k`` distinct experts at random, so it visits
rank ``j`` with probability ``1 - C(E - E/p, k) / C(E, k)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from synccl.exceptions import CollectiveError
from synccl.sim._compute import dtype_bytes, matmul_seconds
from synccl.sim._fairness import max_min_rates
from synccl.sim._routing import BYTES_PER_US_PER_GBPS, routes
from synccl.topologies import Topology

__all__ = ["MoeShape", "exchange_us", "moe_layer_us", "choose_moe_degree", "uniform_traffic", "DEGREES"]

#: The pipeline depths :func:`choose_moe_degree` considers.
DEGREES = tuple(range(1, 17))


@dataclass(frozen=True, slots=True)
class MoeShape:
    """One MoE layer on one rank: its tokens, model and FFN widths, routing and dtype."""

    tokens: int
    hidden: int
    ffn_hidden: int
    top_k: int
    num_experts: int
    dtype: str = "bf16"


def exchange_us(topology: Topology, traffic: np.ndarray) -> float:
    """Microseconds one all-to-all-v of ``traffic[src, dst]`` bytes takes on ``topology``.

    >>> from synccl.topologies import get_topology
    >>> t = np.full((8, 8), 1e6); np.fill_diagonal(t, 0)
    >>> round(exchange_us(get_topology("dgx-h100"), t), 1) > 0
    True
    """
    traffic = np.asarray(traffic, dtype=float)
    n = topology.nranks
    if traffic.shape != (n, n) or (traffic < 0).any():
        raise CollectiveError(f"exchange_us: traffic must be a {n} x {n} matrix of bytes >= 0, got shape {traffic.shape}")
    pairs = [(s, d) for s in range(n) for d in range(n) if s != d and traffic[s, d] > 0]
    if not pairs:
        return 0.0
    table = routes(topology, pairs, message_bytes=float(traffic.max()), op="exchange_us")
    link_id: dict[tuple, int] = {}
    capacity: list[float] = []
    flows: list[list[int]] = []
    for s, d in pairs:
        ids = []
        for link in table[s, d].links:
            if link not in link_id:
                link_id[link] = len(capacity)
                capacity.append(topology.link(*link).bandwidth * BYTES_PER_US_PER_GBPS)
            ids.append(link_id[link])
        flows.append(ids)
    remaining = [float(traffic[s, d]) for s, d in pairs]
    active = list(range(len(pairs)))
    now, finish = 0.0, 0.0
    while active:  # progressive filling, recomputed each time a flow drains
        rates = max_min_rates([flows[f] for f in active], capacity)
        step = min(remaining[f] / r for f, r in zip(active, rates, strict=True))
        now += step
        still = []
        for f, r in zip(active, rates, strict=True):
            remaining[f] -= r * step
            if remaining[f] <= 1e-9 * traffic.max():
                finish = max(finish, now + table[pairs[f]].latency)
            else:
                still.append(f)
        active = still
    return finish


def uniform_traffic(shape: MoeShape, nranks: int, tokens: float) -> np.ndarray:
    """Bytes each rank sends each other rank when dispatching ``tokens`` tokens routed uniformly."""
    per_rank = shape.num_experts // nranks
    elsewhere = shape.num_experts - per_rank
    visit = 1 - math.comb(elsewhere, shape.top_k) / math.comb(shape.num_experts, shape.top_k) if shape.top_k <= shape.num_experts else 1.0
    row_bytes = shape.hidden * dtype_bytes(shape.dtype)
    traffic = np.full((nranks, nranks), tokens * visit * row_bytes)
    np.fill_diagonal(traffic, 0.0)
    return traffic


def moe_layer_us(shape: MoeShape, topology: Topology, degree: int, *, device: str | None = None, overhead_us: float = 20.0) -> float:
    """Microseconds of one MoE layer (dispatch, experts, combine) pipelined in ``degree`` parts.

    ``overhead_us`` is the fixed cost of each exchange and each part's expert launch.

    >>> from synccl.topologies import get_topology
    >>> s = MoeShape(tokens=4096, hidden=4096, ffn_hidden=14336, top_k=2, num_experts=8)
    >>> t1, t4 = (moe_layer_us(s, get_topology("dgx-h100"), d) for d in (1, 4))
    >>> t4 < t1
    True
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
        raise CollectiveError(f"moe_layer_us: degree must be an integer >= 1, got {degree!r}")
    p = topology.nranks
    device = device or topology.device(0)
    if device is None:
        raise CollectiveError(f"moe_layer_us: topology {topology.name!r} names no device type; pass device=")
    part = shape.tokens / degree
    comm = exchange_us(topology, uniform_traffic(shape, p, part)) + overhead_us
    # Each rank's experts get, on average, k * tokens / (E/p experts) ... rows from every rank.
    local = shape.num_experts // p
    rows = max(1, round(part * shape.top_k * p / shape.num_experts))  # rows per expert per part
    ffn = local * 1e6 * (matmul_seconds(device, rows, shape.ffn_hidden, shape.hidden, shape.dtype) + matmul_seconds(device, rows, shape.hidden, shape.ffn_hidden, shape.dtype))
    return _pipeline(degree, comm, ffn + overhead_us)


def choose_moe_degree(shape: MoeShape, topology: Topology, *, device: str | None = None, overhead_us: float = 20.0, degrees: tuple[int, ...] = DEGREES) -> int:
    """The pipeline depth the model finds fastest (the smallest, on ties); never slower than 1 part.

    >>> from synccl.topologies import get_topology
    >>> choose_moe_degree(MoeShape(tokens=4096, hidden=4096, ffn_hidden=14336, top_k=2, num_experts=8), get_topology("dgx-h100")) > 1
    True
    """
    times = {d: moe_layer_us(shape, topology, d, device=device, overhead_us=overhead_us) for d in sorted(set(degrees) | {1})}
    return min(times, key=lambda d: (times[d], d))


def _pipeline(parts: int, comm_us: float, compute_us: float) -> float:
    """Finish time of ``parts`` x (dispatch, experts, combine) on one network and one device.

    The network runs one exchange at a time: among those ready, a combine first (it frees its
    part's memory), else the next dispatch; dispatches are ready at once, a combine when its
    part's experts are done. The device runs the parts' experts in order.
    """
    network_free = device_free = 0.0
    next_dispatch = 0
    combines: list[float] = []  # ready times of the combines not yet run, in part order
    finish = 0.0
    while next_dispatch < parts or combines:
        ready_combine = combines and combines[0] <= network_free
        if ready_combine or next_dispatch == parts:
            start = max(network_free, combines.pop(0))
            network_free = finish = start + comm_us
        else:
            network_free += comm_us
            next_dispatch += 1
            device_free = max(device_free, network_free) + compute_us
            combines.append(device_free)
    return finish
