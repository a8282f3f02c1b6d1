"""Where each token goes: top-k routing with expert capacity, as a plan of rows per destination rank.

Global expert ``e`` lives on rank ``e // experts_per_rank`` as its local expert
``e % experts_per_rank``. A token is sent once to every rank holding at least one of its kept
experts (DeepEP's dispatch: one row per token and destination rank, not per expert), with its
``k`` expert slots rewritten as that rank's local expert ids (``-1`` where the slot's expert
lives elsewhere or was dropped).

Capacity (GShard, Tutel): with ``capacity_factor=c`` each expert accepts at most
``ceil(c * T * k / E)`` of this rank's ``T`` tokens; assignments are admitted slot-major -- every
token's first choice before any token's second choice, tokens in order within a slot -- and a
dropped assignment contributes nothing (a token whose every choice is dropped gets zeros, which
the residual connection around an MoE layer carries). ``capacity_factor=None`` drops nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from synccl.exceptions import CommError

__all__ = ["Routing", "plan_routing", "capacity"]


@dataclass(frozen=True, slots=True)
class Routing:
    """One rank's routing plan for one dispatch.

    Attributes
    ----------
    kept : ndarray of bool, (T, k)
        Which assignments survived capacity (and were not ``-1`` to begin with).
    send_token : ndarray of int64, (S,)
        The token each sent row copies, grouped by destination rank in rank order, tokens
        ascending within a destination.
    send_counts : ndarray of int64, (nranks,)
        Rows sent to each rank.
    send_local_idx : ndarray of int64, (S, k)
        Each sent row's expert slots as the destination's local expert ids, ``-1`` elsewhere.
    """

    num_experts: int
    nranks: int
    kept: np.ndarray
    send_token: np.ndarray
    send_counts: np.ndarray
    send_local_idx: np.ndarray

    @property
    def experts_per_rank(self) -> int:
        """Experts on each rank."""
        return self.num_experts // self.nranks


def capacity(capacity_factor: float, tokens: int, top_k: int, num_experts: int) -> int:
    """Assignments one expert accepts from one rank's ``tokens``: ``ceil(c * T * k / E)``.

    >>> capacity(1.0, 8, 2, 4), capacity(1.25, 8, 2, 4)
    (4, 5)
    """
    return math.ceil(capacity_factor * tokens * top_k / num_experts)


def plan_routing(topk_idx: np.ndarray, num_experts: int, nranks: int, capacity_factor: float | None = None, *, op: str = "dispatch") -> Routing:
    """Plan where this rank's tokens go (see the module docstring).

    Parameters
    ----------
    topk_idx : ndarray of int, (T, k)
        Each token's experts, global ids in ``0..num_experts-1``; ``-1`` masks a slot.
    num_experts : int
        Experts in all, a multiple of ``nranks``.
    nranks : int
        Ranks of the expert-parallel group.
    capacity_factor : float, optional
        Expert capacity as a multiple of the even share (``None``: unlimited).

    Examples
    --------
    Two ranks, experts 0-1 on rank 0 and 2-3 on rank 1; token 1 goes to both ranks:

    >>> r = plan_routing(np.array([[0, 1], [1, 3], [0, -1]]), 4, 2)
    >>> r.send_token.tolist(), r.send_counts.tolist(), r.send_local_idx.tolist()
    ([0, 1, 2, 1], [3, 1], [[0, 1], [1, -1], [0, -1], [-1, 1]])
    """
    idx = _check(topk_idx, num_experts, nranks, capacity_factor, op)
    tokens, k = idx.shape
    kept = idx >= 0
    if capacity_factor is not None and tokens:
        limit = capacity(capacity_factor, tokens, k, num_experts)
        order = idx.T.reshape(-1)  # slot-major: every first choice, then every second choice ...
        # Each assignment's place among the earlier ones to the same expert (a stable sort keeps order).
        at = np.flatnonzero(order >= 0)
        by_expert = at[np.argsort(order[at], kind="stable")]
        experts = order[by_expert]
        position = np.full(order.shape, limit, dtype=np.int64)
        position[by_expert] = np.arange(len(by_expert)) - np.searchsorted(experts, experts, side="left")
        kept = (position < limit).reshape(k, tokens).T & kept
    per_rank = num_experts // nranks
    owner = np.where(kept, idx // per_rank, -1)
    goes = np.zeros((tokens, nranks), dtype=bool)
    rows, slots = np.nonzero(kept)
    goes[rows, owner[rows, slots]] = True
    dest, token = np.nonzero(goes.T)  # destination-major, tokens ascending within it
    send_counts = np.bincount(dest, minlength=nranks).astype(np.int64)
    local = np.where(kept[token] & (owner[token] == dest[:, None]), idx[token] % per_rank, -1).astype(np.int64)
    return Routing(num_experts, nranks, kept, token.astype(np.int64), send_counts, local.reshape(len(token), k))


def _check(topk_idx: np.ndarray, num_experts: int, nranks: int, capacity_factor: float | None, op: str) -> np.ndarray:
    if isinstance(num_experts, bool) or not isinstance(num_experts, int | np.integer) or num_experts < 1:
        raise CommError(f"{op}: num_experts must be a positive integer, got {num_experts!r}", op=op)
    if num_experts % nranks:
        raise CommError(f"{op}: num_experts {num_experts} does not split evenly among {nranks} ranks", op=op)
    idx = np.asarray(topk_idx)
    if idx.ndim != 2:
        raise CommError(f"{op}: topk_idx must be (tokens, k), got shape {idx.shape}", op=op)
    if not np.issubdtype(idx.dtype, np.integer):
        raise CommError(f"{op}: topk_idx must hold integers, got {idx.dtype}", op=op)
    bad = (idx < -1) | (idx >= num_experts)
    if bad.any():
        t, s = (int(v) for v in np.argwhere(bad)[0])
        raise CommError(f"{op}: topk_idx[{t}, {s}] = {int(idx[t, s])} is not an expert of 0..{num_experts - 1} (or -1)", op=op)
    if capacity_factor is not None and (isinstance(capacity_factor, bool) or not isinstance(capacity_factor, int | float) or not capacity_factor > 0):
        raise CommError(f"{op}: capacity_factor must be a number > 0 or None, got {capacity_factor!r}", op=op)
    return idx.astype(np.int64, copy=False)
