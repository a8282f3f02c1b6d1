"""An expert-parallel mixture-of-experts layer for torch: gate, top-k dispatch, local experts, combine.

``MoELayer(gate, experts, num_experts=E, top_k=k)`` on each of ``p`` ranks holds the gate
(replicated) and this rank's ``E / p`` experts (expert ``e`` lives on rank ``e // (E / p)``).
Its forward is GShard's top-k layer over the whole group::

    w = softmax(gate(x))                        # over all E experts
    w_k, e_k = top_k(w)                         # (normalize=True: w_k / sum w_k, as Mixtral)
    y_t = sum_k kept_tk * w_tk * expert_{e_tk}(x_t)

``kept`` is GShard's expert capacity (:mod:`synccl.moe._routing`), decided on the rank's whole
batch. Tokens travel with :func:`~synccl.moe.dispatch` and come back with
:func:`~synccl.moe.combine`; the weighting happens on the experts' side.

Autograd: three pieces, each exact.

* ``_Dispatch`` (tokens and their weights out): backward sends each received row's gradient
  (``x`` and the row's ``k`` weights) home and sums them per token -- one ``combine``.
* The experts and the weighting run in plain torch autograd on the received rows, so gradients
  reach the experts' parameters and the weights.
* ``_Combine`` (outputs home): backward sends each token's output gradient to every rank its
  row went to -- a dispatch-like all-to-all-v (:func:`~synccl.moe.send_forward`).

The top-k weights come from torch's own softmax and topk, so gradients reach the gate's
parameters and ``x`` through them; the expert choice itself is not differentiable.

Pipelining (Tutel's): ``overlap_degree=d`` cuts the rank's tokens into ``d`` contiguous parts.
The exchanges run in order on a helper thread (the lane) -- dispatch 0, dispatch 1, combine 0,
dispatch 2, combine 1, ... -- while this thread runs the experts, so part ``i+1``'s dispatch and
part ``i-1``'s combine overlap part ``i``'s experts (the runtime's waits release the GIL). Every
rank issues the same exchanges in the same order whatever its token count. Backward runs the
parts' exchanges one after another, as torch's autograd engine orders them (the same on every
rank: it runs ready nodes latest-created first).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from synccl._group import run_on
from synccl.exceptions import CommError
from synccl.moe._dispatch import DispatchHandle, combine, dispatch, send_forward
from synccl.moe._routing import plan_routing
from synccl.runtime import Communicator
from synccl.sim import MoeShape, choose_moe_degree
from synccl.topologies import get_topology

__all__ = ["MoELayer"]

_OP = "MoELayer"


class MoELayer(nn.Module):
    """A top-k mixture-of-experts layer with its experts spread over a group's ranks (expert parallelism).

    Parameters
    ----------
    gate : nn.Module
        Maps ``(T, H)`` tokens to ``(T, num_experts)`` logits; replicated (the same on every rank).
    experts : nn.ModuleList or list of nn.Module
        This rank's ``num_experts // world size`` experts, local expert ``j`` being global expert
        ``rank * (num_experts // world size) + j``; each maps ``(n, H)`` to ``(n, H)``.
    num_experts : int
        Experts in all, a multiple of the group's size.
    top_k : int
        Experts per token, ``1..num_experts``.
    overlap_degree : int or "auto"
        Parts the rank's tokens are cut into for pipelining (the same on every rank); ``"auto"``
        asks :func:`synccl.sim.choose_moe_degree` about the largest batch in the group.
    normalize : bool
        Rescale each token's ``k`` weights to sum to 1 (Mixtral) instead of keeping the softmax
        over all experts (GShard).
    capacity_factor : float, optional
        GShard's expert capacity on each rank's whole batch; ``None`` drops nothing.
    group : torch ProcessGroup or synccl Communicator, optional
        The expert-parallel group (a torch group must be on the "synccl" backend); the default
        torch group when ``None``.

    Raises
    ------
    CommError
        On sizes that do not fit (one line naming the argument).

    Notes
    -----
    Every rank of the group must call forward (and backward) together, with the same settings;
    their token counts may differ, and be 0. The gate and experts must not communicate on the
    same group while a pipelined forward is in flight. Replicated parameters (the gate) get this
    rank's tokens' share of the gradient (all-reduce them as data-parallel gradients); each
    expert's gradient already holds every rank's tokens.

    Examples
    --------
    >>> import torch, synccl
    >>> from synccl.moe import MoELayer
    >>> _ = torch.manual_seed(0)
    >>> with synccl.init() as comm:
    ...     layer = MoELayer(torch.nn.Linear(4, 2), [torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)], num_experts=2, top_k=1, overlap_degree=2, group=comm)
    ...     x = torch.randn(5, 4, requires_grad=True)
    ...     y = layer(x)
    ...     y.sum().backward()
    >>> tuple(y.shape), tuple(x.grad.shape)
    ((5, 4), (5, 4))
    """

    def __init__(
        self,
        gate: nn.Module,
        experts: nn.ModuleList | Sequence[nn.Module],
        *,
        num_experts: int,
        top_k: int,
        overlap_degree: int | Literal["auto"] = "auto",
        normalize: bool = False,
        capacity_factor: float | None = None,
        group: Any = None,
    ) -> None:
        super().__init__()
        self._comm, self.group = (group, None) if isinstance(group, Communicator) else (None, group)
        self.world_size, self.rank = _group_size(group)
        if not isinstance(gate, nn.Module):
            raise CommError(f"{_OP}: gate must be a torch.nn.Module, got {type(gate).__name__}", op=_OP)
        _positive(num_experts, "num_experts")
        _positive(top_k, "top_k")
        if top_k > num_experts:
            raise CommError(f"{_OP}: top_k must be at most num_experts={num_experts}, got {top_k!r}", op=_OP)
        if num_experts % self.world_size:
            raise CommError(f"{_OP}: num_experts must be a multiple of the group's {self.world_size} ranks, got {num_experts!r}", rank=self.rank, op=_OP)
        if overlap_degree != "auto":
            _positive(overlap_degree, "overlap_degree", also="or 'auto'")
        if capacity_factor is not None and (isinstance(capacity_factor, bool) or not isinstance(capacity_factor, int | float) or not capacity_factor > 0):
            raise CommError(f"{_OP}: capacity_factor must be a number > 0 or None, got {capacity_factor!r}", op=_OP)
        experts = list(experts)
        local = num_experts // self.world_size
        if len(experts) != local or not all(isinstance(e, nn.Module) for e in experts):
            kinds = [type(e).__name__ for e in experts]
            raise CommError(f"{_OP}: experts must be this rank's num_experts // {self.world_size} ranks = {local} modules, got {len(experts)}: {kinds!r}", rank=self.rank, op=_OP)
        self.gate = gate
        self.experts = nn.ModuleList(experts)
        self.num_experts, self.top_k = num_experts, top_k
        self.overlap_degree, self.normalize, self.capacity_factor = overlap_degree, bool(normalize), capacity_factor

    @property
    def experts_per_rank(self) -> int:
        """Experts on each rank."""
        return self.num_experts // self.world_size

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, top_k={self.top_k}, world_size={self.world_size}, overlap_degree={self.overlap_degree!r}, normalize={self.normalize}, capacity_factor={self.capacity_factor}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, H)`` tokens -> ``(T, H)``: each token's weighted sum over its top-k experts (see the class).

        Every rank of the group must call it; ``x`` is not modified. An error on one rank (bad
        input, a gate or expert that raises) makes the others raise at once, naming it.
        """
        tokens = self._run(lambda comm: self._check_input(x, comm))
        degree = self._degree(tokens, x.shape[1], x.dtype) if self.overlap_degree == "auto" else self.overlap_degree
        lane = _Lane(threaded=degree > 1)
        try:
            weights, chosen = self._route(x, tokens)
            return self._pipeline(lane, x, weights, chosen, _bounds(tokens, degree))
        except Exception as err:
            lane.close()  # the exchanges already issued end first (the peers issue them too) ...
            if lane.failure is None:  # ... then a failure of this rank's own reaches the peers at once
                self._post_refusal(err)
            raise
        finally:
            lane.close()

    def _route(self, x: torch.Tensor, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each token's top-k weights (differentiable) and experts, ``-1`` where capacity dropped the assignment."""
        logits = self.gate(x)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (tokens, self.num_experts):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise CommError(f"{_OP}: gate returned shape {got}, expected ({tokens}, {self.num_experts})", rank=self.rank, op=_OP)
        weights, chosen = torch.softmax(logits, dim=-1).topk(self.top_k, dim=-1)
        if self.normalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        # Capacity is decided on the whole batch, so every degree keeps the same assignments.
        kept = plan_routing(chosen.numpy(), self.num_experts, self.world_size, self.capacity_factor, op=_OP).kept
        return weights, chosen.masked_fill(torch.from_numpy(~kept), -1)

    # -- the pipeline ------------------------------------------------------------------------------

    def _pipeline(self, lane: _Lane, x: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor, bounds: list[tuple[int, int]]) -> torch.Tensor:
        """Dispatch, experts and combine per part, the exchanges on ``lane`` (see the module docstring)."""
        comm, group = self._comm, self.group

        def send(i: int) -> Future:
            a, b = bounds[i]
            part_x, part_w = x.detach()[a:b], weights.detach()[a:b]
            return lane.submit(lambda: dispatch(part_x, chosen[a:b], part_w, self.num_experts, comm=comm, group=group))

        sent = [send(i) for i in range(min(2, len(bounds)))]
        rows, handles, combined = [], [], []
        for i, (a, b) in enumerate(bounds):
            recv_x, recv_w, recv_idx = _Dispatch.apply(x[a:b], weights[a:b], sent[i], comm, group)
            handle = sent[i].result()[4]
            y = self._experts(recv_x, recv_idx, recv_w)
            combined.append(lane.submit(lambda y=y, handle=handle: combine(y.detach(), handle, comm=comm, group=group)))
            if i + 2 < len(bounds):
                sent.append(send(i + 2))
            rows.append(y)
            handles.append(handle)
        parts = [_Combine.apply(y, done, handle, comm, group) for y, done, handle in zip(rows, combined, handles, strict=True)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _experts(self, rows: torch.Tensor, local: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Each received row's ``sum over its local slots s of weights[s] * expert_s(row)`` (torch autograd).

        Every expert runs, on however many rows (maybe none), so the graph has the same shape on
        every rank and every rank's backward makes the same exchanges.
        """
        out = rows.new_zeros(rows.shape)
        for j, expert in enumerate(self.experts):
            hit = local == j
            take = hit.any(dim=1).nonzero().squeeze(1)
            y = expert(rows.index_select(0, take))
            if not isinstance(y, torch.Tensor) or tuple(y.shape) != (len(take), rows.shape[1]):
                got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                raise CommError(f"{_OP}: expert {self.rank * self.experts_per_rank + j} returned shape {got}, expected ({len(take)}, {rows.shape[1]})", rank=self.rank, op=_OP)
            weight = (weights * hit).sum(dim=1).index_select(0, take)
            out = out.index_add(0, take, y * weight.unsqueeze(1).to(y.dtype))
        return out

    # -- agreement, checks ---------------------------------------------------------------------------

    def _run(self, run: Callable[[Communicator], Any]) -> Any:
        return run_on(self._comm, self.group, _OP, run)

    def _post_refusal(self, err: Exception) -> None:
        """Post ``err`` (raised on this rank alone) for the peers: those waiting in this forward's next exchange raise at once."""
        text = str(err).splitlines()[0] if str(err) else ""
        refusal = err if isinstance(err, CommError) and err.op == _OP else CommError(f"{_OP}: {type(err).__name__}: {text}", rank=self.rank, op=_OP)

        def refuse(comm: Communicator) -> None:
            raise refusal

        with contextlib.suppress(CommError):  # the caller raises err itself
            self._run(refuse)

    def _check_input(self, x: Any, comm: Communicator) -> int:
        if not isinstance(x, torch.Tensor):
            raise CommError(f"{_OP}: x must be a torch tensor, got {type(x).__name__}", rank=comm.rank, op=_OP)
        if x.dim() != 2:
            raise CommError(f"{_OP}: x must be (tokens, hidden), got shape {tuple(x.shape)}", rank=comm.rank, op=_OP)
        hidden = getattr(self.gate, "in_features", None)
        if isinstance(hidden, int) and x.shape[1] != hidden:
            raise CommError(f"{_OP}: x has hidden size {x.shape[1]}, expected the gate's in_features {hidden}", rank=comm.rank, op=_OP)
        if x.device.type != "cpu":
            raise CommError(f"{_OP}: x is on {x.device}; the MoE layer runs on CPU tensors today", rank=comm.rank, op=_OP)
        return x.shape[0]

    def _degree(self, tokens: int, hidden: int, dtype: torch.dtype) -> int:
        """``overlap_degree="auto"``: the cost model's depth for the group's largest batch (the same on every rank)."""

        def decide(comm: Communicator) -> int:
            largest = int(comm.allreduce(np.array([tokens], dtype=np.int64), op="max")[0])
            shape = MoeShape(largest, hidden, self._ffn_hidden(hidden), self.top_k, self.num_experts, _MODEL_DTYPES.get(dtype, "fp32"))
            return modelled_degree(comm.config.topology, shape)

        return self._run(decide)

    def _ffn_hidden(self, hidden: int) -> int:
        """The experts' inner width when they are two-layer MLPs (``hidden -> f -> hidden``), else ``4 * hidden``."""
        linears = [m for m in self.experts[0].modules() if isinstance(m, nn.Linear)]
        if len(linears) == 2 and linears[0].in_features == hidden and linears[1].out_features == hidden:
            return linears[0].out_features
        return 4 * hidden


def modelled_degree(topology: str | None, shape: MoeShape) -> int:
    """The pipeline depth the cost model picks for a job on ``topology`` (:func:`synccl.sim.choose_moe_degree`).

    ``topology`` is the job's, as ``SYNCCL_TOPOLOGY`` names it (``init`` checks its rank count).
    Without one that names its device type -- the CPU runtime's host -- the model cannot time
    the experts and the answer is 1: on the CPU the exchanges need the cores the experts use, so
    more parts only add their overhead (README, "MoE").

    >>> modelled_degree(None, MoeShape(4096, 4096, 14336, 2, 8))
    1
    >>> modelled_degree("dgx-h100", MoeShape(4096, 4096, 14336, 2, 8)) > 1
    True
    """
    machine = get_topology(topology) if topology else None
    if machine is None or machine.device(0) is None:
        return 1
    return choose_moe_degree(shape, machine)


#: The cost model's name for each torch dtype (float64 is timed as fp32: the model has no fp64 matmul).
_MODEL_DTYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


# -- autograd -----------------------------------------------------------------------------------------


class _Dispatch(torch.autograd.Function):
    """Tokens and their top-k weights to the experts' ranks (the exchange already on the lane).

    Backward: every received row's gradient -- ``x``'s, and its weights' in the slots of this
    rank's experts -- goes home and is summed per token, one ``combine``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weights: torch.Tensor, sent: Future, comm: Communicator | None, group: Any) -> tuple[torch.Tensor, ...]:
        recv_x, recv_idx, recv_w, _, handle = sent.result()
        ctx.handle, ctx.comm, ctx.group, ctx.here = handle, comm, group, recv_idx >= 0
        ctx.mark_non_differentiable(recv_idx)
        return recv_x, recv_w, recv_idx

    @staticmethod
    def backward(ctx: Any, grad_x: torch.Tensor, grad_w: torch.Tensor, _: Any) -> tuple[Any, ...]:
        grad_w = grad_w * ctx.here  # a slot of another rank's expert holds a constant 0 here
        hidden = grad_x.shape[1]
        if grad_w.dtype == grad_x.dtype:  # one exchange carries both
            both = combine(torch.cat([grad_x, grad_w], dim=1), ctx.handle, comm=ctx.comm, group=ctx.group)
            home_x, home_w = both[:, :hidden], both[:, hidden:]
        else:
            home_x = combine(grad_x.contiguous(), ctx.handle, comm=ctx.comm, group=ctx.group)
            home_w = combine(grad_w.contiguous(), ctx.handle, comm=ctx.comm, group=ctx.group)
        return home_x, home_w, None, None, None


class _Combine(torch.autograd.Function):
    """The experts' rows home, summed per token (the exchange already on the lane).

    Backward: each token's output gradient goes to every row it was dispatched as.
    """

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor, combined: Future, handle: DispatchHandle, comm: Communicator | None, group: Any) -> torch.Tensor:
        ctx.handle, ctx.comm, ctx.group = handle, comm, group
        return combined.result()

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[Any, ...]:
        return send_forward(grad_y, ctx.handle, comm=ctx.comm, group=ctx.group), None, None, None, None


# -- helpers --------------------------------------------------------------------------------------------


class _Lane:
    """Runs a forward's exchanges one at a time in the order submitted: on a helper thread, or at once.

    After a failure the later exchanges are not started (they fail with the same error): a rank
    must not run ahead into collectives its peers will not reach.
    """

    def __init__(self, *, threaded: bool) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="synccl-moe") if threaded else None
        self.failure: BaseException | None = None  # the first exchange that failed

    def submit(self, fn: Callable[[], Any]) -> Future:
        def run() -> Any:
            if self.failure is not None:
                raise self.failure
            try:
                return fn()
            except BaseException as err:
                self.failure = err
                raise

        if self._pool is not None:
            return self._pool.submit(run)
        done: Future = Future()
        try:
            done.set_result(run())
        except BaseException as err:  # noqa: BLE001 - raised by result(), as from the thread
            done.set_exception(err)
        return done

    def close(self) -> None:
        """Wait for the exchanges already submitted."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _bounds(tokens: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``range(tokens)``, sizes differing by at most one (some maybe empty).

    >>> _bounds(5, 3), _bounds(1, 2)
    ([(0, 2), (2, 4), (4, 5)], [(0, 1), (1, 1)])
    """
    edges = np.cumsum([0] + [tokens // parts + (i < tokens % parts) for i in range(parts)]).tolist()
    return list(zip(edges[:-1], edges[1:], strict=True))


def _group_size(group: Any) -> tuple[int, int]:
    """(size, rank) of ``group``: a Communicator, a torch group, or the default torch group."""
    if isinstance(group, Communicator):
        return group.size, group.rank
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise CommError(f"{_OP}: no process group: call torch.distributed.init_process_group('synccl') first (after import synccl.torch), or pass group=", op=_OP)
    return dist.get_world_size(group), dist.get_rank(group)


def _positive(value: Any, name: str, *, also: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise CommError(f"{_OP}: {name} must be a positive integer{' ' + also if also else ''}, got {value!r}", op=_OP)
