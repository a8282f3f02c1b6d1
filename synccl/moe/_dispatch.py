"""MoE expert parallelism: top-k token dispatch to the experts' ranks and combine back (DeepEP's API).

``dispatch`` sends each token once to every rank that holds one of its (kept) top-k experts and
returns what this rank received: the rows, their expert slots as local expert ids (``-1``: the
slot's expert is elsewhere), their weights, and how many rows each local expert got.
``combine`` sends every received row's output back to the token's rank and sums a token's rows
in its original slot. With ``y_row = sum over the row's local slots s of w_s * expert_s(x_row)``
the combined output is the top-k weighted sum ``sum_k w_tk * expert_k(x_t)`` (see :mod:`synccl.moe`).

Every exchange is an all-to-all-v on the runtime's verified pairwise Program with per-pair counts
bound at call time; counts go first, in one small all-to-all that also carries the hidden size,
dtype and k, so ranks that disagree fail with one line on every rank instead of a hang.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from synccl._arraykit import ArrayKit, array_kit, numpy_kit
from synccl._group import run_on
from synccl.exceptions import CommError
from synccl.moe._routing import Routing, plan_routing
from synccl.runtime import Communicator
from synccl.runtime._buffers import DTYPES, as_array, dtype_code

__all__ = ["DispatchHandle", "dispatch", "combine"]

_HEADER = ("rows", "hidden size", "dtype", "k", "weights dtype")
_NUMPY = numpy_kit()  # indices travel as numpy int64 whatever the tokens' library


@dataclass(frozen=True, slots=True)
class DispatchHandle:
    """What :func:`combine` needs to bring rows back: the routing and the counts each way."""

    routing: Routing
    recv_counts: np.ndarray  # rows received from each rank
    num_tokens: int  # this rank's tokens (T)

    @property
    def send_counts(self) -> np.ndarray:
        """Rows sent to each rank."""
        return self.routing.send_counts


def dispatch(
    x: Any, topk_idx: Any, topk_weights: Any, num_experts: int, *, comm: Communicator | None = None, group: Any = None, capacity_factor: float | None = None
) -> tuple[Any, Any, Any, list[int], DispatchHandle]:
    """Send each token to the ranks of its top-k experts.

    Parameters
    ----------
    x : numpy array or CPU torch tensor, (T, H)
        This rank's tokens (``T`` may differ between ranks, and be 0).
    topk_idx : integer array, (T, k)
        Each token's experts (global ids; ``-1`` masks a slot). Expert ``e`` lives on rank
        ``e // (num_experts // nranks)``.
    topk_weights : array, (T, k)
        The gate's weights, of ``x``'s kind.
    num_experts : int
        Experts in all, a multiple of the rank count.
    comm, group : Communicator or torch ProcessGroup, optional
        Who takes part (the default torch group when neither is given).
    capacity_factor : float, optional
        Expert capacity, GShard's ``ceil(c * T * k / E)`` assignments per expert from this
        rank, first choices first; ``None`` drops nothing (:mod:`synccl.moe._routing`).

    Returns
    -------
    recv_x : (R, H)
        The rows this rank received, grouped by source rank in rank order, tokens in order.
    recv_topk_idx : int64 (R, k)
        Each row's slots as this rank's local expert ids, ``-1`` where not here.
    recv_topk_weights : (R, k)
        Their weights (0 where the slot is ``-1``).
    tokens_per_expert : list of int
        Rows each local expert received.
    handle : DispatchHandle
        For :func:`combine`.

    Examples
    --------
    >>> import numpy as np, synccl
    >>> from synccl.moe import dispatch
    >>> with synccl.init() as comm:
    ...     rows, idx, w, per_expert, handle = dispatch(np.eye(3), np.array([[1], [0], [1]]), np.ones((3, 1)), 2, comm=comm)
    >>> idx.ravel().tolist(), per_expert
    ([1, 0, 1], [1, 2])
    """
    op = "dispatch"
    kit = array_kit(op, x, "x")
    _matrix(op, kit, x, "x")
    indices = _indices(op, kit, topk_idx, kit.shape(x)[0])
    _matrix(op, kit, topk_weights, "topk_weights", like=x, rows=kit.shape(x)[0], cols=indices.shape[1])

    def run(comm: Communicator) -> tuple[Any, Any, Any, list[int], DispatchHandle]:
        routing = plan_routing(indices, num_experts, comm.size, capacity_factor)
        tokens, hidden = kit.shape(x)
        k = indices.shape[1]
        recv_counts = _exchange_header(comm, op, routing.send_counts, (hidden, dtype_code(kit.dtype(x)), k, dtype_code(kit.dtype(topk_weights))))
        recv_x = _exchange(comm, kit, kit.take(x, routing.send_token), routing.send_counts, recv_counts, hidden, op, "x")
        local_idx = routing.send_local_idx
        weights = kit.take(topk_weights, routing.send_token)
        if len(local_idx):
            weights = weights * kit.wrap(np.ascontiguousarray(local_idx >= 0).astype(kit.dtype(topk_weights)))
        recv_idx = _exchange(comm, _NUMPY, local_idx, routing.send_counts, recv_counts, k, op, "topk_idx")
        recv_w = _exchange(comm, kit, kit.contiguous(weights), routing.send_counts, recv_counts, k, op, "topk_weights")
        per_expert = np.bincount(recv_idx[recv_idx >= 0], minlength=routing.experts_per_rank)
        return recv_x, kit.wrap(recv_idx), recv_w, [int(c) for c in per_expert], DispatchHandle(routing, recv_counts, tokens)

    return run_on(comm, group, op, run)


def combine(y: Any, handle: DispatchHandle, *, comm: Communicator | None = None, group: Any = None) -> Any:
    """Send every received row's output back and sum a token's rows in its slot: ``(T, H_out)``.

    ``y`` holds one row per row :func:`dispatch` returned (already weighted by the row's local
    slots); a token none of whose experts was kept gets zeros.

    Examples
    --------
    >>> import numpy as np, synccl
    >>> from synccl.moe import combine, dispatch
    >>> with synccl.init() as comm:
    ...     rows, idx, w, _, handle = dispatch(np.arange(4.0).reshape(2, 2), np.array([[0, 1], [1, -1]]), np.full((2, 2), 0.5), 2, comm=comm)
    ...     combine(rows * w.sum(axis=1, keepdims=True), handle, comm=comm).tolist()
    [[0.0, 1.0], [1.0, 1.5]]
    """
    op = "combine"
    if not isinstance(handle, DispatchHandle):
        raise CommError(f"{op}: handle must be what dispatch returned, got {type(handle).__name__}", op=op)
    kit = array_kit(op, y, "y")
    rows = int(handle.recv_counts.sum())
    _matrix(op, kit, y, "y", rows=rows)

    def run(comm: Communicator) -> Any:
        routing = handle.routing
        if routing.nranks != comm.size:
            raise CommError(f"{op}: the handle is from a dispatch on {routing.nranks} ranks, this group has {comm.size}", rank=comm.rank, op=op)
        hidden = kit.shape(y)[1]
        _exchange_header(comm, op, handle.recv_counts, (hidden, dtype_code(kit.dtype(y)), 0, 0), expected=routing.send_counts)
        back = _exchange(comm, kit, kit.contiguous(y), handle.recv_counts, routing.send_counts, hidden, op, "y")
        out = kit.zeros((handle.num_tokens, hidden), y)
        kit.index_add(out, routing.send_token, back)  # in row order: ranks in order, so the sum is deterministic
        return out

    return run_on(comm, group, op, run)


# -- exchanges ----------------------------------------------------------------------------------


def _exchange_header(comm: Communicator, op: str, send_rows: np.ndarray, fields: tuple[int, int, int, int], *, expected: np.ndarray | None = None) -> np.ndarray:
    """All-to-all of ``(rows, *fields)`` per destination; the rows each rank sends here, after checking the fields agree.

    ``expected``: the rows each rank must send here (combine returns what dispatch sent).
    """
    p = comm.size
    header = np.empty((p, len(_HEADER)), dtype=np.int64)
    header[:, 0] = send_rows
    header[:, 1:] = fields
    got = comm.alltoall(header.reshape(-1), np.empty(header.size, dtype=np.int64)).reshape(p, len(_HEADER))
    for rank in range(p):
        for column in range(1, len(_HEADER)):
            if got[rank, column] != header[comm.rank, column]:
                theirs, mine = (_field(column, v) for v in (got[rank, column], header[comm.rank, column]))
                raise CommError(f"{op}: ranks disagree on the {_HEADER[column]}: rank {rank} has {theirs}, rank {comm.rank} has {mine}", rank=comm.rank, op=op)
    if expected is not None and not np.array_equal(got[:, 0], expected):
        raise CommError(f"{op}: rows sent back {got[:, 0].tolist()} differ from the rows dispatched {expected.tolist()}: the handles are not from one dispatch", rank=comm.rank, op=op)
    return got[:, 0].copy()


def _exchange(comm: Communicator, kit: ArrayKit, rows: Any, send_rows: np.ndarray, recv_rows: np.ndarray, width: int, op: str, what: str) -> Any:
    """All-to-all-v of ``rows`` (``send_rows[j]`` rows of ``width`` to rank j); the ``(sum(recv_rows), width)`` received."""
    out = kit.new((int(recv_rows.sum()), width), rows)
    comm.alltoallv(
        as_array(rows, name=what, op=op, writable=False), (send_rows * width).tolist(), as_array(out, name=what, op=op, writable=True), (recv_rows * width).tolist()
    )
    return out


def _field(column: int, value: int) -> str:
    return str(DTYPES[value]) if _HEADER[column].endswith("dtype") else str(value)


# -- checks -------------------------------------------------------------------------------------


def _matrix(op: str, kit: ArrayKit, x: Any, name: str, *, like: Any = None, rows: int | None = None, cols: int | None = None) -> None:
    if not kit.is_mine(x):
        raise CommError(f"{op}: {name} must be a {kit.name} array like the others, got {type(x).__name__}", op=op)
    shape = kit.shape(x)
    if len(shape) != 2 or (rows is not None and shape[0] != rows) or (cols is not None and shape[1] != cols):
        want = f"({'T' if rows is None else rows}, {'H' if cols is None else cols})"
        raise CommError(f"{op}: {name} has shape {shape}, expected {want}", op=op)
    if like is not None and not np.issubdtype(kit.dtype(x), np.floating) and kit.dtype(x).name != "bfloat16":
        raise CommError(f"{op}: {name} must hold floats, got {kit.dtype(x)}", op=op)


def _indices(op: str, kit: ArrayKit, topk_idx: Any, tokens: int) -> np.ndarray:
    if not kit.is_mine(topk_idx):
        raise CommError(f"{op}: topk_idx must be a {kit.name} array like x, got {type(topk_idx).__name__}", op=op)
    idx = kit.to_numpy(topk_idx)
    if idx.ndim != 2 or idx.shape[0] != tokens:
        raise CommError(f"{op}: topk_idx has shape {idx.shape}, expected ({tokens}, k)", op=op)
    return idx

