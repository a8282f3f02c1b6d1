"""``torch.distributed`` backend "synccl": the runtime's collectives behind torch's ProcessGroup API.

Every process group owns a :class:`~synccl.runtime.Communicator` (sub-groups get their own, over
the group's store) and one worker thread; operations run in issue order, on the worker (so
``async_op=True`` is truly asynchronous and several operations may be in flight) or on a thread
that waits for them (so synchronous calls skip the thread hand-off). Tensors move in
place when contiguous; non-contiguous ones go through a contiguous copy.

CUDA tensors run on the GPU engine (:mod:`synccl.runtime._cuda`): an operation on them is
queued on the caller's current stream when it is issued (after the operations issued before it),
as NCCL's are, and ``Work.wait()`` waits until it has run on the GPU (the host synchronizes, then
raises if it failed).

A failed operation raises from ``Work.wait()``; after a communication failure (not a bad
argument) every later call on the group raises too. The future still completes with its tensors: torch 2.13's DDP crashes on a future that completes
with an exception, so the error is reported through Python instead.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.futures import Future

from synccl.exceptions import CommError
from synccl.runtime._comm import Communicator
from synccl.runtime._config import from_environment
from synccl.runtime._rendezvous import StoreRendezvous

__all__ = ["SynccclProcessGroup", "create_process_group", "register"]

_OPS = {
    dist.ReduceOp.SUM: "sum",
    dist.ReduceOp.PRODUCT: "prod",
    dist.ReduceOp.MIN: "min",
    dist.ReduceOp.MAX: "max",
    dist.ReduceOp.AVG: "avg",
    dist.ReduceOp.BAND: "band",
    dist.ReduceOp.BOR: "bor",
    dist.ReduceOp.BXOR: "bxor",
}


def _op_name(op: Any) -> str:
    name = _OPS.get(getattr(op, "op", op))  # ReduceOp objects carry their RedOpType in .op
    if name is None:
        raise CommError(f"synccl backend: reduce op {op!r} is not supported; use SUM, PRODUCT, MIN, MAX, AVG, BAND, BOR or BXOR")
    return name


class _Work(dist.Work):
    """An operation of the group: queued, running or done."""

    def __init__(self, group: SynccclProcessGroup, run: Callable[[], None], result: Any) -> None:
        super().__init__()
        self.group = group
        self.run = run
        self.future = Future()
        self.result = result
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.gpu = False  # on CUDA tensors: done once queued on the stream; wait() waits for the GPU

    def finish(self, error: BaseException | None) -> None:
        self.error = error
        self.done.set()
        self.future.set_result(self.result)

    def wait(self, timeout: timedelta | None = None) -> bool:
        if not self.done.is_set():
            self.group._run_until(self)  # a waiter runs queued work itself rather than wait for the thread
        if not self.done.wait(None if timeout is None or timeout == timedelta(0) else timeout.total_seconds()):
            raise CommError(f"synccl backend: operation still running after {timeout}")
        if self.error is not None:
            raise self.error
        if self.gpu:
            self.group.comm.synchronize()  # raises if a kernel failed
        return True

    def get_future(self) -> Future:
        return self.future

    def is_completed(self) -> bool:
        return self.done.is_set()

    def is_success(self) -> bool:
        return self.done.is_set() and self.error is None

    def exception(self) -> BaseException | None:
        return self.error

    def source_rank(self) -> int:
        return -1

    def synchronize(self) -> None:
        self.wait()


class SynccclProcessGroup(dist.ProcessGroup):
    """A torch ProcessGroup whose collectives run on the synccl runtime."""

    def __init__(self, store: Any, rank: int, size: int, timeout: timedelta) -> None:
        super().__init__(rank, size)
        config = from_environment(timeout_s=max(1.0, timeout.total_seconds()))
        self.comm = Communicator(StoreRendezvous(store, rank, size, prefix="synccl-pg"), config)
        self._pending: collections.deque[_Work] = collections.deque()
        self._queue_lock = threading.Lock()
        self._running = threading.Lock()  # one operation at a time, whichever thread runs it
        self._closing = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name=f"synccl-pg-{rank}", daemon=True)
        self._thread.start()
        self._group_name = ""
        self._group_desc = ""

    # -- identity (functional collectives resolve groups by name) ------------------------------
    def getBackendName(self) -> str:  # noqa: N802 - torch's method name
        return "synccl"

    # torch's C++ side calls these virtuals; without them group_name reads "not set".
    def setGroupName(self, name: str) -> None:  # noqa: N802
        self._group_name = name

    def getGroupName(self) -> str:  # noqa: N802
        return self._group_name

    def setGroupDesc(self, desc: str) -> None:  # noqa: N802
        self._group_desc = desc

    def getGroupDesc(self) -> str:  # noqa: N802
        return self._group_desc

    @property
    def name(self) -> str:
        return "synccl"

    def __repr__(self) -> str:
        return f"SynccclProcessGroup(rank={self.rank()}, size={self.size()})"

    # -- execution -------------------------------------------------------------------------------------
    # Operations run one at a time, in issue order, on whichever thread gets there first: the
    # group's worker thread (so async_op=True overlaps with the caller's work) or a thread that
    # waits for one of them (so a synchronous call does not pay two thread hand-offs).
    POLL_S = 5e-4  # the worker looks for queued operations this often; a caller that waits runs them at once

    def _serve(self) -> None:
        while not self._closing:
            time.sleep(self.POLL_S)
            if self._pending:
                self._run_until(None)

    def _run_until(self, target: _Work | None) -> None:
        with self._running:
            while not (target is not None and target.done.is_set()):
                with self._queue_lock:
                    if not self._pending:
                        return
                    work = self._pending.popleft()
                self._execute(work)

    def _execute(self, work: _Work) -> None:
        error: BaseException | None = self._failure
        if error is None:
            try:
                work.run()
            except BaseException as err:  # noqa: BLE001 - handed to the caller through Work
                error = err if isinstance(err, CommError) else CommError(f"synccl backend: {err}")
                if self.comm.world.broken:  # communication failed: the group is unusable
                    self._failure = error
        work.finish(error)

    def _submit(self, run: Callable[[], None], result: Any, inputs: Sequence[torch.Tensor] = ()) -> _Work:
        if self._failure is not None:
            raise CommError(f"synccl backend: the group failed earlier: {self._failure}")
        device = _gpu_device(result) or _gpu_device(inputs)
        if device is not None:  # the worker thread may run it: bind it to the caller's current stream now
            run = _on_stream(run, torch.cuda.current_stream(device))
        work = _Work(self, run, result)
        work.gpu = device is not None
        with self._queue_lock:
            self._pending.append(work)
        if work.gpu:
            self._run_until(work)  # queued on the caller's current stream now, in issue order
        return work

    def run_exclusive(self, run: Callable[[Communicator], Any]) -> Any:
        """Run ``run(communicator)`` as the group's next operation, after those queued before it; return its result.

        How :mod:`synccl.overlap` runs a fused call on a torch group without racing the group's
        own queued collectives for the communicator.
        """
        box: list[Any] = []
        work = self._submit(lambda: box.append(run(self.comm)), None)
        work.wait()
        return box[0]

    def shutdown(self) -> None:
        self._closing = True
        self._thread.join(timeout=5)
        self._run_until(None)
        self.comm.close()

    # -- collectives ---------------------------------------------------------------------------------
    def allreduce(self, tensors: Sequence[torch.Tensor], opts: Any = None) -> _Work:
        op = _op_name(opts.reduceOp if opts is not None else dist.ReduceOp.SUM)
        return self._submit(lambda: [_inplace(t, lambda x: self.comm.allreduce(x, op=op)) for t in tensors], list(tensors))

    def allreduce_coalesced(self, tensors: Sequence[torch.Tensor], opts: Any = None) -> _Work:
        return self.allreduce(tensors, opts)

    def broadcast(self, tensors: Sequence[torch.Tensor], opts: Any = None) -> _Work:
        root = opts.rootRank if opts is not None else 0
        return self._submit(lambda: [_inplace(t, lambda x: self.comm.broadcast(x, root=root)) for t in tensors], list(tensors))

    def reduce(self, tensors: Sequence[torch.Tensor], opts: Any = None) -> _Work:
        root, op = opts.rootRank, _op_name(opts.reduceOp)
        return self._submit(lambda: [_inplace(t, lambda x: self.comm.reduce(x, root=root, op=op)) for t in tensors], list(tensors))

    def allgather(self, output_lists: Sequence[Sequence[torch.Tensor]], inputs: Sequence[torch.Tensor], opts: Any = None) -> _Work:
        def run() -> None:
            for outs, inp in zip(output_lists, inputs, strict=True):
                flat = torch.empty(self.size() * inp.numel(), dtype=inp.dtype, device=inp.device)
                self.comm.allgather(inp.contiguous().view(-1), flat)
                for k, out in enumerate(outs):
                    out.copy_(flat[k * inp.numel() : (k + 1) * inp.numel()].view_as(out))

        return self._submit(run, list(output_lists))

    def all_gather_single(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> _Work:  # noqa: A002 - torch's name
        return self._submit(lambda: _into(output, lambda out: self.comm.allgather(input.contiguous().view(-1), out)), [output])

    _allgather_base = all_gather_single

    def allgather_into_tensor_coalesced(self, outputs: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor], opts: Any = None) -> _Work:
        def run() -> None:
            for out, inp in zip(outputs, inputs, strict=True):
                _into(out, lambda o, inp=inp: self.comm.allgather(inp.contiguous().view(-1), o))

        return self._submit(run, list(outputs))

    all_gather_single_coalesced = allgather_into_tensor_coalesced

    def allgather_coalesced(self, output_lists: Sequence[Sequence[torch.Tensor]], inputs: Sequence[torch.Tensor], opts: Any = None) -> _Work:
        return self.allgather(output_lists, inputs, opts)

    def reduce_scatter(self, outputs: Sequence[torch.Tensor], input_lists: Sequence[Sequence[torch.Tensor]], opts: Any = None) -> _Work:
        op = _op_name(opts.reduceOp if opts is not None else dist.ReduceOp.SUM)

        def run() -> None:
            for out, parts in zip(outputs, input_lists, strict=True):
                flat = torch.cat([p.reshape(-1) for p in parts])
                _into(out, lambda o, flat=flat: self.comm.reduce_scatter(flat, o, op=op))

        return self._submit(run, list(outputs))

    def reduce_scatter_single(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> _Work:  # noqa: A002
        op = _op_name(opts.reduceOp if opts is not None else dist.ReduceOp.SUM)
        return self._submit(lambda: _into(output, lambda o: self.comm.reduce_scatter(input.contiguous().view(-1), o, op=op)), [output])

    _reduce_scatter_base = reduce_scatter_single

    def reduce_scatter_tensor_coalesced(self, outputs: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor], opts: Any = None) -> _Work:
        op = _op_name(opts.reduceOp if opts is not None else dist.ReduceOp.SUM)

        def run() -> None:
            for out, inp in zip(outputs, inputs, strict=True):
                _into(out, lambda o, inp=inp: self.comm.reduce_scatter(inp.contiguous().view(-1), o, op=op))

        return self._submit(run, list(outputs))

    reduce_scatter_single_coalesced = reduce_scatter_tensor_coalesced

    def alltoall(self, outputs: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor], opts: Any = None) -> _Work:
        def run() -> None:
            send = torch.cat([t.reshape(-1) for t in inputs])
            counts_in = [t.numel() for t in inputs]
            counts_out = [t.numel() for t in outputs]
            recv = torch.empty(sum(counts_out), dtype=send.dtype, device=send.device)
            self.comm.alltoallv(send, counts_in, recv, counts_out)
            offset = 0
            for out, n in zip(outputs, counts_out, strict=True):
                out.copy_(recv[offset : offset + n].view_as(out))
                offset += n

        return self._submit(run, list(outputs))

    def all_to_all_single(self, output: torch.Tensor, input: torch.Tensor, output_split_sizes: list[int], input_split_sizes: list[int], opts: Any = None) -> _Work:  # noqa: A002
        n = self.size()

        def run() -> None:
            row_out = output.numel() // max(1, output.shape[0]) if output.dim() else 1
            row_in = input.numel() // max(1, input.shape[0]) if input.dim() else 1
            outs = [s * row_out for s in output_split_sizes] if output_split_sizes else [output.numel() // n] * n
            ins = [s * row_in for s in input_split_sizes] if input_split_sizes else [input.numel() // n] * n
            send = input.contiguous().view(-1)
            if output.data_ptr() == input.data_ptr():
                send = send.clone()  # in place: read from a copy
            _into(output, lambda o: self.comm.alltoallv(send, ins, o, outs))

        return self._submit(run, [output])

    alltoall_base = all_to_all_single

    def gather(self, output_lists: Sequence[Sequence[torch.Tensor]], inputs: Sequence[torch.Tensor], opts: Any = None) -> _Work:
        root = opts.rootRank

        def run() -> None:
            inp = inputs[0].contiguous().view(-1)
            flat = torch.empty(self.size() * inp.numel(), dtype=inp.dtype, device=inp.device) if self.rank() == root else None
            self.comm.gather(inp, flat, root=root)
            if flat is not None:
                for k, out in enumerate(output_lists[0]):
                    out.copy_(flat[k * inp.numel() : (k + 1) * inp.numel()].view_as(out))

        return self._submit(run, list(output_lists), inputs)

    def scatter(self, outputs: Sequence[torch.Tensor], input_lists: Sequence[Sequence[torch.Tensor]], opts: Any = None) -> _Work:
        root = opts.rootRank

        def run() -> None:
            out = outputs[0]
            flat = torch.cat([t.reshape(-1) for t in input_lists[0]]) if self.rank() == root else None
            _into(out, lambda o: self.comm.scatter(flat, o, root=root))

        return self._submit(run, list(outputs))

    def barrier(self, opts: Any = None) -> _Work:
        return self._submit(self.comm.barrier, [])

    def send(self, tensors: Sequence[torch.Tensor], dst: int, tag: int = 0) -> _Work:
        return self._submit(lambda: [self.comm.send(t.contiguous(), dst) for t in tensors], list(tensors))

    def recv(self, tensors: Sequence[torch.Tensor], src: int, tag: int = 0) -> _Work:
        return self._submit(lambda: [_inplace(t, lambda x: self.comm.recv(x, src)) for t in tensors], list(tensors))

    def recv_anysource(self, tensors: Sequence[torch.Tensor], tag: int = 0) -> _Work:
        raise CommError("synccl backend: recv from any source is not supported; name the source rank")


def _inplace(tensor: torch.Tensor, run: Callable[[torch.Tensor], Any]) -> None:
    """Run ``run`` on ``tensor`` itself when contiguous, else on a contiguous copy written back."""
    if tensor.is_contiguous():
        run(tensor)
    else:
        tmp = tensor.contiguous()
        run(tmp)
        tensor.copy_(tmp)


def _into(output: torch.Tensor, run: Callable[[torch.Tensor], Any]) -> None:
    """Let ``run`` write a flat contiguous view of ``output`` (via a copy when it is not contiguous)."""
    if output.is_contiguous():
        run(output.view(-1))
    else:
        tmp = torch.empty(output.numel(), dtype=output.dtype, device=output.device)
        run(tmp)
        output.copy_(tmp.view_as(output))


def _gpu_device(tensors: Any) -> torch.device | None:
    """The device of the first CUDA tensor in ``tensors`` (a tensor or nested lists of them), if any."""
    if isinstance(tensors, torch.Tensor):
        return tensors.device if tensors.is_cuda else None
    if isinstance(tensors, list | tuple):
        return next((d for t in tensors if (d := _gpu_device(t)) is not None), None)
    return None


def _on_stream(run: Callable[[], None], stream: torch.cuda.Stream) -> Callable[[], None]:
    """``run`` with ``stream`` current, on whichever thread runs it (the GPU engine launches on the current stream)."""

    def on_stream() -> None:
        with torch.cuda.stream(stream):
            run()

    return on_stream


def create_process_group(store: Any, rank: int, size: int, timeout: timedelta) -> SynccclProcessGroup:
    """The creator torch calls for ``init_process_group("synccl")`` and ``new_group``."""
    return SynccclProcessGroup(store, rank, size, timeout)


def register() -> None:
    """Register the backend name "synccl" with torch.distributed (idempotent)."""
    if "SYNCCL" not in dist.Backend._plugins:
        dist.Backend.register_backend("synccl", create_process_group, devices=["cpu", "cuda"])
