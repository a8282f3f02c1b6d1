"""What overlapping a tensor-parallel matmul with its collective buys, on a topology: the cost model.

For ``C = A @ B`` with ``A`` of ``M x K`` and ``B`` of ``K x N`` on ``p`` ranks (Megatron's and
Flux's convention):

* ``all_gather_matmul``: ``A`` is sharded by rows (``M/p`` per rank) and gathered; ``B`` by
  columns, so each rank computes ``M x N/p``.
* ``matmul_reduce_scatter``: ``A`` is sharded by columns and ``B`` by rows (``K/p`` each); every
  rank computes a partial ``M x N`` that is reduce-scattered by rows (``M/p x N`` each).

The *unfused* time is the collective alone (simulated) plus the whole matmul alone (the device's
matmul model, :mod:`synccl.sim._compute`). The *overlapped* time simulates the verified fused
Program (:func:`synccl.collectives.fused_ring`), whose compute steps each multiply one block of
``M/(p*splits)`` rows while the transfers move the others. What a block costs depends on how the
matmul is fused (``fusion``):

* ``"blocks"``: every block is a matmul of its own (torch's async TP, synccl's CPU runtime):
  smaller matmuls, less efficient (fewer waves of tiles, a launch each).
* ``"kernel"``: one matmul kernel whose tiles wait for their rows (Flux, TransformerEngine's
  userbuffers): a block costs its share of the whole matmul.

No overlap can beat ``max(T_compute, T_comm)``, so the speedup never exceeds the bound
``(T_compute + T_comm) / max(T_compute, T_comm)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from synccl.collectives import FUSED_KINDS, fused_ring, library
from synccl.exceptions import CollectiveError, TopologyError
from synccl.sim._compute import dtype_bytes, matmul_seconds
from synccl.sim._engine import simulate
from synccl.topologies import Topology

__all__ = ["OverlapEstimate", "estimate_overlap", "ring_order", "SPLIT_CHOICES", "FUSIONS"]

#: How the matmul is fused with the transfers (see the module docstring).
FUSIONS = ("blocks", "kernel")

#: The pieces per block the model tries when ``splits`` is not given.
SPLIT_CHOICES = (1, 2, 4, 8)


@dataclass(frozen=True, slots=True)
class OverlapEstimate:
    """The cost model's verdict for one fused operation (times in microseconds)."""

    kind: str
    topology: str
    device: str
    shape: tuple[int, int, int]  # (M, N, K)
    dtype: str
    splits: int
    fusion: str
    program: str
    compute_us: float  # the whole per-rank matmul, alone
    comm_us: float  # the collective, alone
    unfused_us: float
    overlapped_us: float

    @property
    def speedup(self) -> float:
        """Unfused time over overlapped time."""
        return self.unfused_us / self.overlapped_us

    @property
    def bound(self) -> float:
        """The most any overlap can give: ``(T_compute + T_comm) / max(T_compute, T_comm)``."""
        return (self.compute_us + self.comm_us) / max(self.compute_us, self.comm_us)

    def as_dict(self) -> dict[str, Any]:
        """Every field plus ``speedup`` and ``bound``, for ``--json``."""
        return {**asdict(self), "shape": list(self.shape), "speedup": self.speedup, "bound": self.bound}


def estimate_overlap(
    kind: str, topology: Topology, shape: tuple[int, int, int], dtype: str = "bf16", *, splits: int | None = None, device: str | None = None, fusion: str = "blocks"
) -> OverlapEstimate:
    """Time ``kind`` unfused and overlapped on ``topology`` for the global matmul ``shape = (M, N, K)``.

    ``splits`` (pieces per block) is the fastest of :data:`SPLIT_CHOICES` unless given; ``device``
    defaults to the topology's (``topology.device(0)``); ``fusion`` is one of :data:`FUSIONS`.

    Examples
    --------
    Flux's all-gather + GEMM on 8 H800s (TP=8, M=4096, K=12288, N=49152), as a fused kernel:

    >>> from synccl.topologies import get_topology
    >>> e = estimate_overlap("all_gather_matmul", get_topology("hgx-h800"), (4096, 49152, 12288), "bf16", fusion="kernel")
    >>> e.unfused_us > e.overlapped_us >= max(e.compute_us, e.comm_us), e.speedup <= e.bound
    (True, True)
    """
    if kind not in FUSED_KINDS:
        raise CollectiveError(f"overlap: kind must be one of {', '.join(FUSED_KINDS)}, got {kind!r}")
    if fusion not in FUSIONS:
        raise CollectiveError(f"overlap: fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    p = topology.nranks
    m, n, k = _check_shape(shape, p, kind)
    device = device or topology.device(0)
    if device is None:
        raise TopologyError(f"overlap: topology {topology.name!r} names no device type; pass device= (e.g. 'H100')")
    itemsize = dtype_bytes(dtype)
    if kind == "all_gather_matmul":  # per rank: (M x K) @ (K x N/p); the gathered buffer is A
        per_rank, size_bytes = (m, n // p, k), m * k * itemsize
    else:  # per rank: (M x K/p) @ (K/p x N); the reduce-scattered buffer is the partial product
        per_rank, size_bytes = (m, n, k // p), m * n * itemsize
    compute_us = 1e6 * matmul_seconds(device, *per_rank, dtype)
    order = ring_order(topology)
    collective = library.build("ring", "all_gather" if kind == "all_gather_matmul" else "reduce_scatter", p, order=order)
    comm_us = simulate(collective, topology, size_bytes).time_us
    candidates = (splits,) if splits is not None else SPLIT_CHOICES
    best: tuple[float, int, str] | None = None
    for pieces in candidates:
        if not isinstance(pieces, int) or isinstance(pieces, bool) or pieces < 1:
            raise CollectiveError(f"overlap: splits must be an integer >= 1, got {pieces!r}")
        rows = m / (p * pieces)
        if fusion == "kernel":
            block_us = compute_us / (p * pieces)
        else:
            block_us = 1e6 * matmul_seconds(device, max(1, round(rows)), per_rank[1], per_rank[2], dtype) if rows >= 1 else 0.0
        fused = fused_ring(kind, p, pieces=pieces, order=order)
        overlapped_us = simulate(fused, topology, size_bytes, compute_us={"matmul": block_us}).time_us
        if best is None or overlapped_us < best[0]:
            best = (overlapped_us, pieces, fused.name)
    overlapped_us, pieces, name = best
    return OverlapEstimate(kind, topology.name, device, (m, n, k), dtype, pieces, fusion, name, compute_us, comm_us, comm_us + compute_us, overlapped_us)


def ring_order(topology: Topology) -> tuple[int, ...]:
    """A ring through every rank along the topology's fastest links: ``0..n-1`` when those are all direct.

    Otherwise a greedy tour: from each rank, on to the unvisited rank with the widest direct link
    (or, with none, the next in rank order); ties go to the lower rank.

    >>> from synccl.topologies import get_topology
    >>> ring_order(get_topology("ring:4"))
    (0, 1, 2, 3)
    """
    n = topology.nranks
    natural = tuple(range(n))
    if n <= 2 or all(topology.has_link(r, (r + 1) % n) for r in range(n)):
        return natural
    order, left = [0], set(range(1, n))
    while left:
        here = order[-1]
        direct = [(topology.link(here, v).bandwidth, -v) for v in left if topology.has_link(here, v)]
        nxt = -max(direct)[1] if direct else min(left)
        order.append(nxt)
        left.remove(nxt)
    return tuple(order)


def _check_shape(shape: Any, p: int, kind: str) -> tuple[int, int, int]:
    try:
        m, n, k = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise CollectiveError(f"overlap: shape must be three integers (M, N, K), got {shape!r}") from None
    if min(m, n, k) < 1:
        raise CollectiveError(f"overlap: shape must be positive, got {(m, n, k)}")
    split_name, split = ("N", n) if kind == "all_gather_matmul" else ("K", k)
    if m % p or split % p:
        raise CollectiveError(f"overlap: {kind} on {p} ranks needs M and {split_name} divisible by {p}, got M={m}, {split_name}={split}")
    return m, n, k
