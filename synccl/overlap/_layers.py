"""Megatron-style tensor-parallel linear layers with sequence parallelism, on the overlapped matmuls.

A ``ColumnParallelLinear`` followed by a ``RowParallelLinear`` is Megatron-LM's MLP block with
sequence parallelism: activations between blocks are split along the sequence (dimension 0,
as in Megatron's ``[s, b, h]``), the column layer all-gathers them into its matmul
(:func:`~synccl.overlap.all_gather_matmul`) and the row layer reduce-scatters its product
(:func:`~synccl.overlap.matmul_reduce_scatter`). Backward runs the transposed pair: the column
layer's input gradient is a matmul + reduce-scatter, the row layer's an all-gather + matmul.

Parameters start as the rows (column layer) or columns (row layer) of the weight that
``torch.nn.Linear(in_features, out_features)`` would draw from the same torch seed, so a
model built after ``torch.manual_seed(s)`` on every rank is the shard of the one-process model
built after the same seed; :meth:`ColumnParallelLinear.from_full` shards a given weight.
"""

from __future__ import annotations

import math
from typing import Any, Self

import torch
import torch.distributed as dist
from torch import nn

from synccl.exceptions import CommError
from synccl.overlap._api import all_gather_matmul, matmul_reduce_scatter

__all__ = ["ColumnParallelLinear", "RowParallelLinear"]


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a matrix: every leading dimension flattened into rows."""
    return t.reshape(-1, t.shape[-1])


class _AllGatherMatmul(torch.autograd.Function):
    """``y = all_gather(x, 0) @ weight.T + bias``; backward: ``grad_x = reduce_scatter(grad_y @ weight, 0)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, group: Any, splits: int | None) -> torch.Tensor:
        x_full, (y,) = all_gather_matmul(x, [weight.detach().t()], 0, group=group, return_a=True, splits=splits)
        if bias is not None:
            y.add_(bias.detach())
        ctx.save_for_backward(x_full, weight)
        ctx.group, ctx.splits, ctx.has_bias = group, splits, bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x_full, weight = ctx.saved_tensors
        grad_x = matmul_reduce_scatter(grad_y, weight.detach(), 0, group=ctx.group, splits=ctx.splits) if ctx.needs_input_grad[0] else None
        grad_w = _rows(grad_y).t() @ _rows(x_full) if ctx.needs_input_grad[1] else None
        grad_b = _rows(grad_y).sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None


class _MatmulReduceScatter(torch.autograd.Function):
    """``y = reduce_scatter(x @ weight.T, 0) + bias``; backward: ``grad_x = all_gather(grad_y, 0) @ weight``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, group: Any, splits: int | None) -> torch.Tensor:
        y = matmul_reduce_scatter(x, weight.detach().t(), 0, group=group, splits=splits)
        if bias is not None:
            y.add_(bias.detach())
        ctx.save_for_backward(x, weight)
        ctx.group, ctx.splits, ctx.has_bias = group, splits, bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_y_full, (grad_x,) = all_gather_matmul(grad_y, [weight.detach()], 0, group=ctx.group, return_a=True, splits=ctx.splits)
        grad_w = _rows(grad_y_full).t() @ _rows(x.detach()) if ctx.needs_input_grad[1] else None
        grad_b = None
        if ctx.has_bias and ctx.needs_input_grad[2]:
            # The bias is replicated but each rank saw only its rows of the sequence: sum the shares.
            grad_b = _rows(grad_y).sum(0)
            dist.all_reduce(grad_b, group=ctx.group)
        return (grad_x if ctx.needs_input_grad[0] else None), grad_w, grad_b, None, None


class _ParallelLinear(nn.Module):
    """What both layers share: the group, the shard's place, initialization, loading a full weight."""

    _sharded: str  # "out_features" (column) or "in_features" (row)

    def __init__(
        self, in_features: int, out_features: int, *, bias: bool = True, group: Any = None, splits: int | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        name = type(self).__name__
        for what, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CommError(f"{name}: {what} must be a positive integer, got {value!r}", op=name)
        if not dist.is_available() or not dist.is_initialized():
            raise CommError(f"{name}: no process group: call torch.distributed.init_process_group('synccl') first (after import synccl.torch)", op=name)
        self.in_features, self.out_features = in_features, out_features
        self.group, self.splits = group, splits
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        sharded = in_features if self._sharded == "in_features" else out_features
        if sharded % self.world_size:
            raise CommError(f"{name}: {self._sharded} must be a multiple of the group's {self.world_size} ranks, got {sharded!r}", rank=self.rank, op=name)
        shard = sharded // self.world_size
        shape = (out_features, shard) if self._sharded == "in_features" else (shard, in_features)
        self.weight = nn.Parameter(torch.empty(shape, dtype=dtype))
        bias_size = out_features if self._sharded == "in_features" else shard
        self.bias = nn.Parameter(torch.empty(bias_size, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the full weight and bias as ``nn.Linear`` does (same generator calls, same order) and keep this rank's shard."""
        self.load_full_weight(*_linear_init(self.in_features, self.out_features, bias=self.bias is not None, dtype=self.weight.dtype))

    @classmethod
    def from_full(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, *, group: Any = None, splits: int | None = None) -> Self:
        """A layer holding this rank's shard of ``weight`` and ``bias``, laid out as ``nn.Linear``'s.

        ``weight`` is ``(out_features, in_features)``; the layer takes its sizes and dtype from it.
        Every rank of ``group`` should pass the same full tensors. torch's random generator is
        left as it was (the initial draw is undone).

        Examples
        --------
        >>> full = torch.nn.Linear(16, 64)  # doctest: +SKIP
        >>> layer = ColumnParallelLinear.from_full(full.weight, full.bias)  # doctest: +SKIP
        >>> torch.equal(layer.weight, full.weight[32 * layer.rank : 32 * (layer.rank + 1)])  # doctest: +SKIP
        True
        """
        if weight.dim() != 2:
            raise CommError(f"{cls.__name__}.from_full: weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}", op=cls.__name__)
        out_features, in_features = weight.shape
        with torch.random.fork_rng(devices=[]):
            layer = cls(in_features, out_features, bias=bias is not None, group=group, splits=splits, dtype=weight.dtype)
        layer.load_full_weight(weight, bias)
        return layer

    def load_full_weight(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Copy this rank's shard of the full ``weight`` (and ``bias``) into the parameters.

        Parameters
        ----------
        weight : torch.Tensor, shape ``(out_features, in_features)``
            The whole layer's weight, laid out as ``nn.Linear.weight``.
        bias : torch.Tensor, shape ``(out_features,)``, optional
            The whole layer's bias; required when the layer has one, refused when it has none.

        Raises
        ------
        CommError
            A shape that does not match the layer's, or a bias given to a layer without one (or missing).
        """
        name = f"{type(self).__name__}.load_full_weight"
        expected = (self.out_features, self.in_features)
        if tuple(weight.shape) != expected:
            raise CommError(f"{name}: weight shape expected {expected}, got {tuple(weight.shape)}", op=name)
        if (bias is None) != (self.bias is None):
            raise CommError(f"{name}: the layer {'has' if self.bias is not None else 'has no'} bias, got bias={None if bias is None else tuple(bias.shape)!r}", op=name)
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise CommError(f"{name}: bias shape expected {(self.out_features,)}, got {tuple(bias.shape)}", op=name)
        with torch.no_grad():
            self.weight.copy_(self._shard_of(weight))
            if bias is not None and self.bias is not None:
                self.bias.copy_(self._shard_of_bias(bias))

    def _span(self, size: int) -> slice:
        share = size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def _shard_of(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _shard_of_bias(self, bias: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_input(self, x: torch.Tensor, features: int) -> None:
        name = type(self).__name__
        if x.dim() < 2 or x.shape[-1] != features:
            raise CommError(f"{name}: input shape expected (sequence, ..., {features}), got {tuple(x.shape)}", rank=self.rank, op=name)
        if x.dtype != self.weight.dtype:
            raise CommError(f"{name}: input dtype expected {self.weight.dtype}, got {x.dtype}", rank=self.rank, op=name)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, shard {self.rank} of {self.world_size}"


def _linear_init(in_features: int, out_features: int, *, bias: bool, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias ``nn.Linear(in_features, out_features)`` draws from the default generator, in its order."""
    weight = torch.empty(out_features, in_features, dtype=dtype)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if not bias:
        return weight, None
    bound = 1 / math.sqrt(in_features)
    return weight, nn.init.uniform_(torch.empty(out_features, dtype=dtype), -bound, bound)


class ColumnParallelLinear(_ParallelLinear):
    """``y = all_gather(x, 0) @ W.T + b`` with ``W`` split by rows (output features) among the ranks.

    The input is this rank's slice of the sequence, shape ``(s / p, ..., in_features)``; the
    output is the whole sequence with this rank's ``out_features / p`` columns,
    ``(s, ..., out_features / p)`` -- the input a :class:`RowParallelLinear` expects. The
    all-gather overlaps the matmul (:func:`~synccl.overlap.all_gather_matmul`); backward computes
    ``grad_x`` with the overlapped matmul + reduce-scatter and keeps the gathered input from
    forward for ``grad_W``. Every rank of the group must call forward and backward, in the same order.

    Parameters
    ----------
    in_features, out_features : int
        The whole layer's sizes; ``out_features`` must be a multiple of the group's size ``p``.
    bias : bool
        Whether the layer adds a bias (split like the output features).
    group : torch ProcessGroup, optional
        A group on the "synccl" backend (default: the default group).
    splits : int, optional
        Passed to the overlapped collectives (pieces each shard travels in).
    dtype : torch.dtype, optional
        The parameters' dtype (default: torch's default dtype).

    Attributes
    ----------
    weight : nn.Parameter, shape ``(out_features / p, in_features)``
        Rows ``rank * out_features / p`` onward of the full weight.
    bias : nn.Parameter, shape ``(out_features / p,)``, or None

    Raises
    ------
    CommError
        No process group yet, or ``out_features`` not a multiple of the group's size.

    Examples
    --------
    Under ``torchrun --nproc-per-node 2``, after ``import synccl.torch`` and
    ``dist.init_process_group("synccl")``:

    >>> layer = ColumnParallelLinear(16, 64)  # doctest: +SKIP
    >>> layer(torch.randn(4, 3, 16)).shape  # (s/p, b, h) in, (s, b, 4h/p) out  # doctest: +SKIP
    torch.Size([8, 3, 32])
    """

    _sharded = "out_features"

    def _shard_of(self, weight: torch.Tensor) -> torch.Tensor:
        return weight[self._span(self.out_features)]

    def _shard_of_bias(self, bias: torch.Tensor) -> torch.Tensor:
        return bias[self._span(self.out_features)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, self.in_features)
        return _AllGatherMatmul.apply(x, self.weight, self.bias, self.group, self.splits)


class RowParallelLinear(_ParallelLinear):
    """``y = reduce_scatter(x @ W.T, 0) + b`` with ``W`` split by columns (input features) among the ranks.

    The input is the whole sequence with this rank's ``in_features / p`` columns,
    ``(s, ..., in_features / p)`` (a :class:`ColumnParallelLinear`'s output); the output is
    this rank's slice of the sequence, ``(s / p, ..., out_features)``, summed over the ranks by
    the overlapped matmul + reduce-scatter (:func:`~synccl.overlap.matmul_reduce_scatter`). The
    bias is whole on every rank; backward all-reduces its gradient over the group (each rank
    saw only its slice of the sequence), so the replicas stay equal. ``grad_x`` comes from the
    overlapped all-gather + matmul. Every rank of the group must call forward and backward, in
    the same order.

    Parameters
    ----------
    in_features, out_features : int
        The whole layer's sizes; ``in_features`` must be a multiple of the group's size ``p``.
    bias : bool
        Whether the layer adds a bias (replicated on every rank).
    group, splits, dtype
        As for :class:`ColumnParallelLinear`.

    Attributes
    ----------
    weight : nn.Parameter, shape ``(out_features, in_features / p)``
        Columns ``rank * in_features / p`` onward of the full weight.
    bias : nn.Parameter, shape ``(out_features,)``, or None

    Raises
    ------
    CommError
        No process group yet, or ``in_features`` not a multiple of the group's size.

    Examples
    --------
    Under ``torchrun --nproc-per-node 2``, after ``import synccl.torch`` and
    ``dist.init_process_group("synccl")``:

    >>> mlp = torch.nn.Sequential(ColumnParallelLinear(16, 64), torch.nn.GELU(), RowParallelLinear(64, 16))  # doctest: +SKIP
    >>> mlp(torch.randn(4, 3, 16)).shape  # the sequence stays split: (s/p, b, h) in and out  # doctest: +SKIP
    torch.Size([4, 3, 16])
    """

    _sharded = "in_features"

    def _shard_of(self, weight: torch.Tensor) -> torch.Tensor:
        return weight[:, self._span(self.in_features)]

    def _shard_of_bias(self, bias: torch.Tensor) -> torch.Tensor:
        return bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, self.in_features // self.world_size)
        return _MatmulReduceScatter.apply(x, self.weight, self.bias, self.group, self.splits)
