"""Max-min fair rates of flows sharing links (progressive filling)."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from synccl.exceptions import TopologyError

__all__ = ["max_min_rates"]


def max_min_rates(routes: Sequence[Sequence[int]], capacity: Mapping[int, float] | Sequence[float]) -> list[float]:
    """Max-min fair rate of every flow, by progressive filling.

    All rates grow together; when a link fills up, the flows crossing it are frozen at its
    fair share and the others keep growing. The result is the unique allocation in which no
    flow can gain without taking from a flow whose rate is not larger.

    Parameters
    ----------
    routes : sequence of sequences of int
        For every flow, the links (indices into ``capacity``) it crosses; none may be empty.
    capacity : mapping or sequence of float
        Capacity of each link (any rate unit; the rates come out in the same unit).

    Returns
    -------
    list of float
        The rate of each flow, in the order of ``routes``.

    Raises
    ------
    TopologyError
        If a route is empty or names a link without capacity.

    Examples
    --------
    Two flows share link 0 (capacity 10); the second also crosses link 1 (capacity 20),
    where a third flow takes what is left:

    >>> max_min_rates([[0], [0, 1], [1]], [10.0, 20.0])
    [5.0, 5.0, 15.0]
    """
    users: dict[int, list[int]] = {}
    for flow, route in enumerate(routes):
        if not route:
            raise TopologyError(f"max_min_rates: flow {flow!r} crosses no link")
        for link in route:
            users.setdefault(link, []).append(flow)
    try:
        left = {link: float(capacity[link]) for link in users}
    except (KeyError, IndexError) as exc:
        raise TopologyError(f"max_min_rates: no capacity for link {exc.args[0]!r}") from None
    count = {link: len(flows) for link, flows in users.items()}
    rates = [0.0] * len(routes)
    frozen = [False] * len(routes)
    # Fair shares only grow as flows freeze (each freezes at the smallest share), so a heap
    # with lazily refreshed entries always pops the current bottleneck.
    heap = [(left[link] / n, link) for link, n in count.items()]
    heapq.heapify(heap)
    while heap:
        share, bottleneck = heapq.heappop(heap)
        n = count.get(bottleneck)
        if n is None:
            continue
        current = left[bottleneck] / n
        if current != share:
            heapq.heappush(heap, (current, bottleneck))
            continue
        share = max(share, 0.0)
        for flow in users[bottleneck]:
            if frozen[flow]:
                continue
            frozen[flow] = True
            rates[flow] = share
            for link in routes[flow]:
                left[link] -= share
                count[link] -= 1
                if count[link] == 0:
                    del count[link]
    return rates
