"""What a simulation reports: time, nccl-tests bandwidths and per-link usage."""

from __future__ import annotations

from dataclasses import dataclass

from synccl.collectives import Collective, parse_collective
from synccl.exceptions import CollectiveError

__all__ = ["LinkUsage", "SimResult", "busbw_factor"]


@dataclass(frozen=True, slots=True)
class LinkUsage:
    """Traffic on one directed link during a simulation.

    ``bytes`` is every byte any flow pushed through the link; ``utilisation`` is that
    divided by what the link could carry over the whole run (``bandwidth * time``), in [0, 1].
    """

    src: int | str
    dst: int | str
    bytes: float
    utilisation: float


@dataclass(frozen=True, slots=True)
class SimResult:
    """The outcome of simulating one Program at one message size.

    ``time_us`` is when the last instruction of any rank completed; ``rank_finish_us[r]``
    when rank ``r``'s last instruction did. ``algbw_gbps`` is ``size_bytes / time`` and
    ``busbw_gbps`` is ``algbw`` times :func:`busbw_factor` (nccl-tests' definitions, GB/s =
    1e9 bytes/s). ``link_usage`` lists every link of the topology, in its order.
    """

    program: str
    topology: str
    collective: Collective
    nranks: int
    size_bytes: int
    time_us: float
    algbw_gbps: float
    busbw_gbps: float
    rank_finish_us: tuple[float, ...]
    link_usage: tuple[LinkUsage, ...]
    messages: int


def busbw_factor(collective: Collective | str, nranks: int) -> float:
    """The nccl-tests factor from algorithm bandwidth to bus bandwidth.

    ``2(n-1)/n`` for all_reduce; ``(n-1)/n`` for all_gather, reduce_scatter, all_to_all,
    gather and scatter; ``1`` for broadcast and reduce. It makes busbw comparable to the
    link bandwidth a bandwidth-optimal algorithm would need.

    Parameters
    ----------
    collective : Collective or str
        The collective.
    nranks : int
        Number of ranks, at least 1.

    Returns
    -------
    float
        The factor.

    Raises
    ------
    CollectiveError
        If ``nranks`` is not a positive integer or the collective is unknown.

    Examples
    --------
    >>> busbw_factor("all_reduce", 4)
    1.5
    >>> busbw_factor("broadcast", 8)
    1.0
    """
    coll = parse_collective(collective)
    if not isinstance(nranks, int) or nranks < 1:
        raise CollectiveError(f"busbw_factor: nranks must be an integer >= 1, got {nranks!r}")
    n = nranks
    if coll is Collective.ALL_REDUCE:
        return 2 * (n - 1) / n
    if coll in (Collective.BROADCAST, Collective.REDUCE):
        return 1.0
    return (n - 1) / n
