"""MoE expert parallelism: top-k token dispatch to the experts' ranks and combine back (DeepEP's API).

``dispatch`` sends each token once to every rank that holds one of its (kept) top-k experts and
returns what this rank received: the rows, their expert slots as local expert ids (``-1``: the
slot's expert is elsewhere), their weights, and how many rows each local expert got.
``combine`` sends every received row's output back to the token's rank and sums a token's rows
in its original slot. With ``y_row = sum over the row's local slots s of w_s * expert_s(x_row)``
the combined output is the top-k weighted sum ``sum_k w_tk * expert_k(x_t)`` (see :mod:`synccl.moe`).

Every exchange is one all-to-all-v -- the verified pairwise Program on one node, the hierarchical
2D one (Tutel's 2DH) across nodes -- with per-pair counts bound at call time (a row carries the token, its k expert ids and its k weights as bytes).
Counts go first, in one small all-gather that also carries the hidden size, dtype and k: every
rank learns the whole traffic matrix (which the all-to-all-v then needs no exchange of its own
for), and ranks that disagree fail with one line on every rank instead of a hang.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from synccl._arraykit import ArrayKit, array_kit
from synccl._group import run_on
from synccl.collectives import Program, library
from synccl.exceptions import CommError
from synccl.moe._routing import Routing, plan_routing
from synccl.runtime import Communicator
from synccl.runtime._buffers import DTYPES, as_array, dtype_code

__all__ = ["DispatchHandle", "dispatch", "combine", "send_forward"]

_HEADER = ("rows", "hidden size", "dtype", "k", "weights dtype")  # what _exchange_counts sends each rank


@dataclass(frozen=True, slots=True)
class DispatchHandle:
    """What :func:`combine` (and :func:`send_forward`) need: the routing, and every rank's rows to every rank."""

    routing: Routing
    traffic: np.ndarray  # traffic[src, dst]: rows src dispatched to dst (the same on every rank)
    rank: int
    num_tokens: int  # this rank's tokens (T)

    @property
    def send_counts(self) -> np.ndarray:
        """Rows sent to each rank."""
        return self.traffic[self.rank]

    @property
    def recv_counts(self) -> np.ndarray:
        """Rows received from each rank."""
        return self.traffic[:, self.rank]


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

    def run(comm: Communicator) -> tuple[Any, Any, Any, list[int], DispatchHandle]:
        kit = array_kit(op, x, "x")
        _matrix(op, kit, x, "x")
        tokens, hidden = kit.shape(x)
        indices = _indices(op, kit, topk_idx, tokens)
        k = indices.shape[1]
        _matrix(op, kit, topk_weights, "topk_weights", floats=True, rows=tokens, cols=k)
        routing = plan_routing(indices, num_experts, comm.size, capacity_factor)
        x_type, w_type = kit.dtype(x), kit.dtype(topk_weights)
        counts = _exchange_counts(comm, op, routing.send_counts, (hidden, dtype_code(x_type), k, dtype_code(w_type)))
        # One message per destination: its rows of x, their k local expert ids, their k weights.
        fields = ((x_type, hidden), (np.dtype(np.int64), k), (w_type, k))
        weights = _rows(kit, topk_weights, w_type, k)[routing.send_token]  # each sent row's weights ...
        weights[routing.send_local_idx < 0] = 0  # ... but for slots whose expert is not at the destination
        columns = ((_rows(kit, x, x_type, hidden), routing.send_token), (routing.send_local_idx, None), (weights, None))
        received = _exchange(comm, _pack(comm, fields, columns, routing.send_counts), counts, op)
        recv_x, recv_idx, recv_w = _unpack(fields, received, counts[:, comm.rank])
        per_expert = np.bincount(recv_idx[recv_idx >= 0], minlength=routing.experts_per_rank)
        handle = DispatchHandle(routing, counts, comm.rank, tokens)
        return kit.wrap(recv_x), kit.wrap(recv_idx), kit.wrap(recv_w), [int(c) for c in per_expert], handle

    return run_on(comm, group, op, run)


def combine(y: Any, handle: DispatchHandle, *, comm: Communicator | None = None, group: Any = None) -> Any:
    """Send every received row's output back and sum a token's rows in its slot: ``(T, H_out)``.

    ``y`` holds one row per row :func:`dispatch` returned (already weighted by the row's local
    slots); a token none of whose experts was kept gets zeros. Rows are summed in rank order,
    so the result does not depend on timing.

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

    def run(comm: Communicator) -> Any:
        if not isinstance(handle, DispatchHandle):
            raise CommError(f"{op}: handle must be what dispatch returned, got {type(handle).__name__}", op=op)
        kit = array_kit(op, y, "y")
        _matrix(op, kit, y, "y", rows=int(handle.recv_counts.sum()))
        routing = handle.routing
        if routing.nranks != comm.size:
            raise CommError(f"{op}: the handle is from a dispatch on {routing.nranks} ranks, this group has {comm.size}", rank=comm.rank, op=op)
        hidden, y_type = kit.shape(y)[1], kit.dtype(y)
        counts = _exchange_counts(comm, op, handle.recv_counts, (hidden, dtype_code(y_type), 0, 0))
        if not np.array_equal(counts[:, comm.rank], routing.send_counts):
            raise CommError(f"{op}: rows sent back {counts[:, comm.rank].tolist()} differ from the rows dispatched {routing.send_counts.tolist()}: not the handle of one dispatch", rank=comm.rank, op=op)
        fields = ((y_type, hidden),)
        packed = _pack(comm, fields, ((_rows(kit, y, y_type, hidden), None),), handle.recv_counts)
        (back,) = _unpack(fields, _exchange(comm, packed, counts, op), routing.send_counts)  # a view of scratch: summed into a fresh array next
        return kit.sum_rows(handle.num_tokens, routing.send_token, kit.wrap(back), routing.send_counts)

    return run_on(comm, group, op, run)


def send_forward(rows: Any, handle: DispatchHandle, *, comm: Communicator | None = None, group: Any = None) -> Any:
    """Token rows ``(T, H)`` to where :func:`dispatch` sent each token: ``(R, H)`` in the order it received them.

    The adjoint of :func:`combine` (an MoE layer's backward sends the output gradient this way);
    every rank of the dispatch calls it. Needs no counts exchange: the handle has them all.

    Examples
    --------
    >>> import numpy as np, synccl
    >>> from synccl.moe import dispatch, send_forward
    >>> with synccl.init() as comm:
    ...     *_, handle = dispatch(np.zeros((2, 1)), np.array([[1], [-1]]), np.ones((2, 1)), 2, comm=comm)
    ...     send_forward(np.array([[10.0], [20.0]]), handle, comm=comm).ravel().tolist()  # token 1 chose no expert
    [10.0]
    """
    op = "send_forward"

    def run(comm: Communicator) -> Any:
        if not isinstance(handle, DispatchHandle):
            raise CommError(f"{op}: handle must be what dispatch returned, got {type(handle).__name__}", op=op)
        kit = array_kit(op, rows, "rows")
        _matrix(op, kit, rows, "rows", rows=handle.num_tokens)
        row_type, hidden = kit.dtype(rows), kit.shape(rows)[1]
        fields = ((row_type, hidden),)
        packed = _pack(comm, fields, ((_rows(kit, rows, row_type, hidden), handle.routing.send_token),), handle.send_counts)
        (received,) = _unpack(fields, _exchange(comm, packed, handle.traffic, op), handle.recv_counts)
        return kit.wrap(received.copy())  # out of scratch

    return run_on(comm, group, op, run)


# -- exchanges ----------------------------------------------------------------------------------


def _exchange_counts(comm: Communicator, op: str, send_rows: np.ndarray, fields: tuple[int, int, int, int]) -> np.ndarray:
    """Every rank's rows to every rank (``counts[src, dst]``), after checking that the ranks agree on ``fields``.

    An all-gather, so every rank knows the whole traffic matrix (and the largest message).
    """
    mine = np.empty(comm.size + len(_HEADER) - 1, dtype=np.int64)
    mine[: comm.size], mine[comm.size :] = send_rows, fields
    every = comm.allgather(mine, np.empty(comm.size * mine.size, dtype=np.int64)).reshape(comm.size, -1)
    for column, name in enumerate(_HEADER[1:], start=comm.size):
        for rank in range(comm.size):
            if every[rank, column] != mine[column]:
                theirs, ours = (_field(name, v) for v in (every[rank, column], mine[column]))
                raise CommError(f"{op}: ranks disagree on the {name}: rank {rank} has {theirs}, rank {comm.rank} has {ours}", rank=comm.rank, op=op)
    return every[:, : comm.size]


def _exchange(comm: Communicator, packed: np.ndarray, counts: np.ndarray, op: str) -> np.ndarray:
    """All-to-all-v of byte rows: ``counts[me, j]`` rows to rank j; the rows received (in scratch), grouped by source."""
    width = packed.shape[1]
    rows = int(counts[:, comm.rank].sum())
    out = comm._workspace("moe-received", rows * width).reshape(rows, width)
    send, recv = (counts[comm.rank] * width).tolist(), (counts[:, comm.rank] * width).tolist()
    comm.alltoallv(packed.reshape(-1), send, out.reshape(-1), recv, program=_schedule(comm.size, comm.local_size), traffic=counts * width)
    return out


@functools.lru_cache(maxsize=8)
def _schedule(nranks: int, local_size: int) -> Program | None:
    """The all-to-all-v for the job's shape: direct pairwise on one node; across nodes, Tutel's 2DH.

    Hierarchical 2D gathers each node's traffic for another node at one rank per node, so few,
    large messages cross the slow links (``None``: the runtime's pairwise default).
    """
    if local_size >= nranks or nranks % local_size:
        return None
    return library.build("hierarchical_2d", "all_to_all", nranks, local_size=local_size)


def _rows(kit: ArrayKit, a: Any, dtype: np.dtype, width: int) -> np.ndarray:
    """``a`` as a numpy ``(rows, width)`` array over the same memory (a copy only if not contiguous)."""
    return as_array(kit.contiguous(a), name="rows", op="moe", writable=False).view(dtype).reshape(-1, width)


def _pack(comm: Communicator, fields: tuple[tuple[np.dtype, int], ...], columns: tuple[tuple[np.ndarray, np.ndarray | None], ...], blocks: np.ndarray) -> np.ndarray:
    """Byte rows for the all-to-all-v: each destination's block holds its rows of every column, column after column.

    A column is ``(array, rows to take)`` (``None``: its rows in order); ``blocks`` counts rows
    per destination. A single column taken whole is sent from its own memory; otherwise each
    section is gathered straight into scratch (contiguous writes, no temporary).
    """
    width = sum(np.dtype(t).itemsize * n for t, n in fields)
    if len(columns) == 1 and columns[0][1] is None:
        return np.ascontiguousarray(columns[0][0]).view(np.uint8).reshape(-1, width)
    rows = int(blocks.sum())
    packed = comm._workspace("moe-sent", rows * width)
    at = first = 0
    for count in blocks.tolist():
        for (dtype, n), (column, take) in zip(fields, columns, strict=True):
            size = count * n * np.dtype(dtype).itemsize
            section = packed[at : at + size].view(dtype).reshape(count, n)
            if take is None:
                section[:] = column[first : first + count]
            else:
                np.take(column, take[first : first + count], axis=0, out=section, mode="clip")  # in range; "raise" would buffer
            at += size
        first += count
    return packed.reshape(rows, width)


def _unpack(fields: tuple[tuple[np.dtype, int], ...], packed: np.ndarray, blocks: np.ndarray) -> list[np.ndarray]:
    """The columns of :func:`_pack`'s layout, each a ``(rows, width)`` array of its dtype.

    Several columns are copied out into fresh arrays; a single one is a view of ``packed``.
    """
    rows = int(blocks.sum())
    if len(fields) == 1:
        (dtype, n), = fields
        return [packed.reshape(-1).view(dtype).reshape(rows, n)]
    flat = packed.reshape(-1)
    out = [np.empty((rows, n), dtype=dtype) for dtype, n in fields]
    at = first = 0
    for count in blocks.tolist():
        for (dtype, n), column in zip(fields, out, strict=True):
            size = count * n * np.dtype(dtype).itemsize
            column[first : first + count] = flat[at : at + size].view(dtype).reshape(count, n)
            at += size
        first += count
    return out


def _field(name: str, value: int) -> str:
    return str(DTYPES[value]) if name.endswith("dtype") else str(value)


# -- checks -------------------------------------------------------------------------------------


def _matrix(op: str, kit: ArrayKit, x: Any, name: str, *, floats: bool = False, rows: int | None = None, cols: int | None = None) -> None:
    if not kit.is_mine(x):
        raise CommError(f"{op}: {name} must be a {kit.name} array like the others, got {type(x).__name__}", op=op)
    shape = kit.shape(x)
    if len(shape) != 2 or (rows is not None and shape[0] != rows) or (cols is not None and shape[1] != cols):
        want = f"({'T' if rows is None else rows}, {'H' if cols is None else cols})"
        raise CommError(f"{op}: {name} has shape {shape}, expected {want}", op=op)
    if floats and not np.issubdtype(kit.dtype(x), np.floating) and kit.dtype(x).name != "bfloat16":
        raise CommError(f"{op}: {name} must hold floats, got {kit.dtype(x)}", op=op)


def _indices(op: str, kit: ArrayKit, topk_idx: Any, tokens: int) -> np.ndarray:
    if not kit.is_mine(topk_idx):
        raise CommError(f"{op}: topk_idx must be a {kit.name} array like x, got {type(topk_idx).__name__}", op=op)
    idx = kit.to_numpy(topk_idx)
    if idx.ndim != 2 or idx.shape[0] != tokens:
        raise CommError(f"{op}: topk_idx has shape {idx.shape}, expected ({tokens}, k)", op=op)
    return idx

