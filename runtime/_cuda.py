"""The CUDA engine: collectives on GPU buffers, run by the executor kernel (one thread block per channel).

A call on GPU buffers is prepared by the communicator like any other, over placeholders that stand
for the device memory (:mod:`synccl.runtime._cuda_arrays`). :meth:`CudaEngine.prepare` encodes the
plan (:func:`synccl.runtime._native.encode`), re-bases it onto the device (:mod:`._cuda_plan`,
:mod:`._cuda_mailbox`) and uploads it. :meth:`CudaEngine.launch` queues the kernel on the caller's
current stream and returns at once, as NCCL does; a communicator's calls still run in the order
they are issued, whatever streams they are issued on.

Failures: a kernel stops by itself after TIMEOUT_NS without progress, or when the abort word (host
memory mapped for the device) is set, and fills its report (mapped host memory too). A watchdog
thread per engine, while kernels are in flight, looks at the peers every :data:`POLL_S`
(``World.check_peers``) and sets the abort word when one failed, and ends each completed call: it
reads the report, then records the call complete on the rank's board, or records the failure (the
communicator is unusable afterwards, as on the host). :meth:`CudaEngine.synchronize` waits for
every queued call and raises the first failure as :class:`~synccl.exceptions.CommError`.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from synccl.collectives import Buffer
from synccl.exceptions import CommError, KernelBuildError
from synccl.runtime import _native as native
from synccl.runtime._config import RuntimeConfig
from synccl.runtime._cuda_arrays import device_address, placeholder_of
from synccl.runtime._cuda_kernels import AVERAGE_KERNEL, compiled_average
from synccl.runtime._cuda_mailbox import DeviceMailboxes
from synccl.runtime._cuda_plan import DeviceTables, device_tables, table_bytes, touched_buffers
from synccl.runtime._fingerprint import Fingerprint
from synccl.runtime._kernel_abi import BufferId, KernelDtype, Launch, Report, Status, kernel_dtype
from synccl.runtime._nvrtc import compiled_executor
from synccl.runtime._plan import RankPlan

if TYPE_CHECKING:
    from synccl.runtime._world import World

__all__ = ["BLOCK_THREADS", "CudaEngine", "CudaPlan", "cuda_available", "device_arch"]

log = logging.getLogger(__name__)

#: Threads per block. A block runs one channel and its threads share each step's copy or
#: reduction: 8 warps keep a channel's memory traffic going while leaving room for many channels.
BLOCK_THREADS = 256
#: How often the watchdog looks at the peers and at completed kernels.
POLL_S = 0.05
#: Calls queued on the GPU at most (fewer than the 64 fingerprints a board keeps).
MAX_IN_FLIGHT = 32
#: A kernel gets this long beyond the timeout to stop by itself before the host aborts it, and an
#: aborted one this long to stop before the host gives up on it.
GRACE_S = 10.0
_SLOT_WORDS = Launch.COUNT + Report.COUNT  # per queued call: the launch record it uploads, its report
_ABORT_WORD = 0


def cuda_available() -> str | None:
    """``None`` when a CUDA device can be used through CuPy, else why not (for messages and skips).

    >>> reason = cuda_available()
    >>> reason is None or isinstance(reason, str)
    True
    """
    try:
        import cupy
    except ImportError as err:
        return f"CuPy is not installed ({err}); pip install cupy-cuda12x or cupy-cuda13x"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # noqa: BLE001 - CUDARuntimeError, or CuPy failing to load a CUDA library: either way, no GPU here
        return f"CUDA is not usable here: {type(err).__name__}: {err}"
    return None if count > 0 else "no CUDA device"


def device_arch(device: int | None = None) -> str:
    """The NVRTC architecture of a CUDA device (the current one by default), e.g. ``"sm_90"``.

    >>> device_arch()  # doctest: +SKIP
    'sm_90'
    """
    import cupy

    return f"sm_{cupy.cuda.Device(device).compute_capability}"


def _cupy(rank: int) -> ModuleType:
    reason = cuda_available()
    if reason is not None:
        raise CommError(f"rank {rank}: GPU buffers need a CUDA device through CuPy: {reason}", rank=rank)
    import cupy

    return cupy


@dataclass(slots=True)
class CudaPlan:
    """A call prepared on the GPU: its tables in device memory, launched again for every repeat."""

    native: native.NativePlan  # the host encoding: which step waits for which peer, for messages
    tables: DeviceTables
    memory: tuple[Any, ...]  # the device allocations the tables point into, kept alive with them
    average: tuple[int, int, KernelDtype] | None  # (address, count, dtype) divided by the rank count afterwards
    torch: bool  # a torch tensor is among the buffers: launch on torch's current stream


@dataclass(slots=True)
class _Flight:
    """A queued call: what to check and record when its kernel has run."""

    plan: CudaPlan
    slot: int
    seq: int
    label: str
    fingerprint: Fingerprint | None
    pending: list[tuple[int, Any]]  # peers that had not posted the call at launch (World.begin_call)
    started: Any  # CUDA events recorded before the kernel and after it (and the average)
    ended: Any
    running: bool = False  # the start event was seen complete
    sample: bytes | None = None  # the state table when the watchdog last looked


class _Pinned:
    """``nwords`` int64 of page-locked host memory that the device reads and writes too."""

    def __init__(self, runtime: Any, nwords: int) -> None:
        self._runtime = runtime
        self.host = runtime.hostAlloc(8 * nwords, runtime.hostAllocMapped | runtime.hostAllocPortable)
        self.device = runtime.pointerGetAttributes(self.host).devicePointer
        self.words = np.ctypeslib.as_array((ctypes.c_int64 * nwords).from_address(self.host))
        self.words[:] = 0

    def free(self) -> None:
        self._runtime.freeHost(self.host)


_OPEN: weakref.WeakSet[CudaEngine] = weakref.WeakSet()
_AT_EXIT: list[bool] = []


def _close_at_exit() -> None:
    """Finish the queued calls of every engine left open (their completion goes on the boards first)."""
    for engine in list(_OPEN):
        engine.close()


class CudaEngine:
    """A communicator's GPU side: device mailboxes, kernels, queued calls and their watchdog.

    Nothing touches CUDA until the first :meth:`prepare`, which binds the engine to the device of
    its buffers and sets up the device mailboxes with every rank (a collective step).

    Examples
    --------
    >>> import cupy, synccl  # doctest: +SKIP
    >>> comm = synccl.init()  # doctest: +SKIP
    >>> x = comm.allreduce(cupy.ones(4))  # queued on the current stream  # doctest: +SKIP
    >>> comm.synchronize()  # doctest: +SKIP
    """

    def __init__(self, world: World, config: RuntimeConfig) -> None:
        self.world = world
        self.config = config
        self.device: int | None = None
        self._lock = threading.RLock()
        self._flights: deque[_Flight] = deque()
        self._free: list[int] = []
        self._error: CommError | None = None
        self._error_ns = 0
        self._lost = False  # a CUDA error ended the context: waiting for the kernels is pointless
        self._progress_ns = 0
        self._last: tuple[int, Any] | None = None  # (stream pointer, end event) of the last launch
        self._closed = False
        self._wake = threading.Event()
        self._average: Any = None
        self._samples: _Pinned | None = None

    # -- preparing ------------------------------------------------------------------------------
    def prepare(self, plan: RankPlan, buffers: dict[Buffer, np.ndarray], *, op: str, label: str, average: np.ndarray | None) -> CudaPlan:
        """Put a compiled, bound plan over placeholders on the GPU.

        ``average`` is the part of the output to divide by the rank count after the call (op ``avg``).
        """
        me = self.world.rank
        cupy = _cupy(me)
        if not native.runs_natively(plan):
            raise CommError(f"{label}: rank {me}: GPU buffers need every rank on one node (other nodes are reached through MPI, which moves host memory)", rank=me, op=label)
        device = self._device_of(cupy, buffers, label)
        if self.device is None:
            self._setup(cupy, device)
        elif device != self.device:
            raise CommError(f"{label}: rank {me}: the buffers are on cuda:{device} but this communicator runs on cuda:{self.device}", rank=me, op=label)
        with cupy.cuda.Device(self.device):
            encoded = native.encode(plan, buffers, op=op, check=self.config.check_calls, local_index=self.world.local_index, slots=self.config.slots, slot_stride=self.world.layout.slot_stride)
            touched = touched_buffers(encoded)
            addresses = {}
            for buffer_id, buffer in ((BufferId.INPUT, Buffer.INPUT), (BufferId.OUTPUT, Buffer.OUTPUT)):
                address = device_address(buffers[buffer])
                if address is None and buffer_id in touched:
                    raise CommError(f"{label}: rank {me}: the {buffer.value} buffer is in host memory but the others are on cuda:{self.device}; pass every buffer on the GPU", rank=me, op=label)
                addresses[buffer_id] = address or 0
            scratch = cupy.cuda.alloc(plan.scratch.nbytes) if plan.scratch.nbytes else None
            addresses[BufferId.SCRATCH] = scratch.ptr if scratch is not None else 0
            block = cupy.cuda.alloc(table_bytes(encoded))
            tables = device_tables(encoded, base=block.ptr, buffers=addresses, mailboxes=self.mailboxes.regions, abort=self._pinned.device + 8 * _ABORT_WORD, timeout_ns=int(self.config.timeout_s * 1e9))
            runtime = cupy.cuda.runtime
            runtime.memcpyAsync(block.ptr, tables.words.ctypes.data, tables.words.nbytes, runtime.memcpyHostToDevice, self._side.ptr)
            uploaded = cupy.cuda.Event(disable_timing=True)
            uploaded.record(self._side)
            if not _await(uploaded, GRACE_S):
                raise CommError(f"{label}: rank {me}: uploading the plan to cuda:{self.device} did not finish within {GRACE_S:g} s", rank=me, op=label)
            divide = None
            if average is not None and average.size:
                target = device_address(average)
                if target is None:
                    raise CommError(f"{label}: rank {me}: the result to average is in host memory", rank=me, op=label)
                divide = (target, int(average.size), kernel_dtype(average.dtype))
                self._load_average(cupy)
        uses_torch = any(p is not None and p.buffer.torch for p in (placeholder_of(a) for a in buffers.values()))
        return CudaPlan(encoded, tables, (block, scratch), divide, uses_torch)

    def _device_of(self, cupy: ModuleType, buffers: dict[Buffer, np.ndarray], label: str) -> int:
        devices = set()
        for array in buffers.values():
            placeholder = placeholder_of(array)
            if placeholder is not None:
                known = placeholder.buffer.device
                devices.add(known if known is not None else cupy.cuda.runtime.pointerGetAttributes(placeholder.buffer.pointer).device)
        if len(devices) != 1:
            raise CommError(f"{label}: rank {self.world.rank}: the buffers are on several GPUs ({sorted(devices)}); pass them on one", rank=self.world.rank, op=label)
        return devices.pop()

    def _setup(self, cupy: ModuleType, device: int) -> None:
        """Load the kernel, then create the device mailboxes with every rank (the collective step)."""
        me = self.world.rank
        with cupy.cuda.Device(device):
            try:
                executor = compiled_executor(device_arch(device))
            except KernelBuildError as err:
                raise CommError(f"rank {me}: the GPU executor kernel cannot be built: {err}", rank=me) from None
            self._executor_module = cupy.cuda.Module()
            self._executor_module.load(executor.cubin)
            self._executor = self._executor_module.get_function("synccl_executor")
            self.mailboxes = DeviceMailboxes(self.world, cupy)
            self._pinned = _Pinned(cupy.cuda.runtime, 1 + MAX_IN_FLIGHT * _SLOT_WORDS)
            self._events = [(cupy.cuda.Event(disable_timing=True), cupy.cuda.Event(disable_timing=True)) for _ in range(MAX_IN_FLIGHT)]
            self._side = cupy.cuda.Stream(non_blocking=True)  # uploads and progress samples, beside the callers' streams
        self._cupy, self.device = cupy, device
        self._free = list(range(MAX_IN_FLIGHT))
        self._thread = threading.Thread(target=self._watch, name=f"synccl-cuda-watchdog-{me}", daemon=True)
        self._thread.start()
        _OPEN.add(self)
        if not _AT_EXIT:  # registered after the World's exit hook, so it runs before it
            atexit.register(_close_at_exit)
            _AT_EXIT.append(True)

    def _load_average(self, cupy: ModuleType) -> None:
        if self._average is None:
            try:
                kernel = compiled_average(device_arch(self.device))
            except KernelBuildError as err:
                raise CommError(f"rank {self.world.rank}: the GPU average kernel cannot be built: {err}", rank=self.world.rank) from None
            module = cupy.cuda.Module()
            module.load(kernel.cubin)
            self._average = (module, module.get_function(AVERAGE_KERNEL))

    # -- launching ------------------------------------------------------------------------------
    def launch(self, plan: CudaPlan, signature: int, *, label: str, seq: int, fingerprint: Fingerprint | None, pending: list[tuple[int, Any]]) -> None:
        """Queue call ``seq`` on the current stream and return; the watchdog ends it when it has run."""
        cupy = self._cupy
        runtime = cupy.cuda.runtime
        with cupy.cuda.Device(self.device):
            self._wait_for(lambda: bool(self._free))
            with self._lock:
                if self._error is not None:
                    raise self._error
                slot = self._free.pop()
                stream = self._stream(plan)
                at = 1 + slot * _SLOT_WORDS
                record, report = self._pinned.words[at : at + Launch.COUNT], self._pinned.words[at + Launch.COUNT : at + _SLOT_WORDS]
                record[:] = plan.tables.words[: Launch.COUNT]
                record[Launch.SIGNATURE] = signature
                record[Launch.REPORT] = self._pinned.device + 8 * (at + Launch.COUNT)
                report[:] = 0
                started, ended = self._events[slot]
                if self._last is not None and self._last[0] != stream.ptr:
                    stream.wait_event(self._last[1])  # the previous call, on another stream, comes first
                runtime.memcpyAsync(plan.tables.base, self._pinned.host + 8 * at, 8 * Launch.COUNT, runtime.memcpyHostToDevice, stream.ptr)
                runtime.memsetAsync(plan.tables.base + plan.tables.state_offset, 0, plan.tables.state_bytes, stream.ptr)
                started.record(stream)
                self._executor((max(1, plan.tables.nchannels),), (BLOCK_THREADS,), (np.uint64(plan.tables.base),), stream=stream)
                if plan.average is not None:
                    target, count, dtype = plan.average
                    blocks = min(-(-count // BLOCK_THREADS), 4096)
                    self._average[1]((blocks,), (BLOCK_THREADS,), (np.uint64(target), np.int64(count), np.int64(self.world.size), np.int64(dtype)), stream=stream)
                ended.record(stream)
                if not self._flights:
                    self._progress_ns = time.monotonic_ns()
                self._flights.append(_Flight(plan, slot, seq, label, fingerprint, pending, started, ended))
                self._last = (stream.ptr, ended)
        self._wake.set()

    def _stream(self, plan: CudaPlan) -> Any:
        """The caller's current stream: torch's for torch tensors, else CuPy's."""
        cupy = self._cupy
        if plan.torch:
            import torch

            return cupy.cuda.ExternalStream(torch.cuda.current_stream(self.device).cuda_stream, self.device)
        return cupy.cuda.get_current_stream()

    # -- completing -----------------------------------------------------------------------------
    def synchronize(self) -> None:
        """Wait until every queued call has run; raise the first failure.

        Bounded: a kernel stops by itself after the timeout without progress, the watchdog aborts
        one that does not (or whose stream never gets to it), and an aborted kernel gets
        :data:`GRACE_S` to stop before this raises anyway.
        """
        if self.device is None:
            return
        with self._cupy.cuda.Device(self.device):
            self._wait_for(lambda: not self._flights)
        if self._error is not None:
            raise self._error

    def _wait_for(self, ready: Callable[[], bool]) -> None:
        """End completed calls until ``ready()``, or until a failure has had :data:`GRACE_S` to stop the kernels."""
        start = time.monotonic()
        while True:
            self._reap()
            with self._lock:
                if ready():
                    return
                error, since = self._error, self._error_ns
            if error is not None and (self._lost or time.monotonic_ns() - since > GRACE_S * 1e9):
                raise error
            time.sleep(0 if time.monotonic() - start < 2e-3 else 5e-4)  # short calls end within microseconds

    def _reap(self) -> None:
        """End every call whose kernel has run, oldest first: record it complete, or its failure."""
        with self._lock:
            while self._flights:
                flight = self._flights[0]
                try:
                    if not flight.ended.done:
                        return
                except self._cupy.cuda.runtime.CUDARuntimeError as err:  # the context is lost (e.g. an illegal address)
                    self._fail(self._device_failure(flight, err), flight.seq)
                    self._lost = True
                    return
                self._flights.popleft()
                self._free.append(flight.slot)
                self._progress_ns = time.monotonic_ns()
                if self._error is not None:
                    continue  # the abort word stopped it
                at = 1 + flight.slot * _SLOT_WORDS + Launch.COUNT
                report = self._pinned.words[at : at + Report.COUNT].copy()
                try:
                    if report[Report.STATUS] != Status.DONE:
                        raise self._kernel_failure(flight, report)
                    self.world.end_call(flight.seq, flight.fingerprint, flight.label, flight.pending)
                except CommError as err:
                    self._fail(err, flight.seq)

    def _kernel_failure(self, flight: _Flight, report: np.ndarray) -> CommError:
        """The error a kernel's report describes, worded as the host engine words it."""
        status = Status(int(report[Report.STATUS]))
        view = replace(flight.plan.native, report=report)
        if status == Status.TIMEOUT:
            me = self.world.rank
            report[Report.WAITS_FOR] = max(0, int(report[Report.GOT]))  # the GPU entry reports where it waited in GOT
            what, peer = native._where(view, flight.label)
            return CommError(f"rank {me}: timed out after {self.config.timeout_s:g} s without progress {what}", rank=me, peer=peer)
        return native._failure(view, self.world, status, flight.label)

    def _device_failure(self, flight: _Flight, err: Exception) -> CommError:
        """A CUDA error while the call ran: a peer's failure if one explains it, else the error."""
        try:
            self.world.check_peers(f"in {flight.label}", flight.seq)
        except CommError as peer_failure:
            return peer_failure
        me = self.world.rank
        return CommError(f"{flight.label}: rank {me}: the GPU failed: {err}", rank=me, op=flight.label)

    def _fail(self, err: CommError, seq: int) -> None:
        """Record the first failure: stop every queued kernel and make the communicator unusable."""
        if self._error is None:
            self._error, self._error_ns = err, time.monotonic_ns()
            self._pinned.words[_ABORT_WORD] = 1  # read by every block at its next wait (ld.relaxed.sys)
            self.world.fail_from(err, seq)

    # -- the watchdog ---------------------------------------------------------------------------
    def _watch(self) -> None:
        cupy = self._cupy
        while not self._closed:
            if not self._flights:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            time.sleep(POLL_S)
            try:
                with cupy.cuda.Device(self.device):
                    self._reap()
                    self._check()
            except Exception as err:  # noqa: BLE001 - the watchdog outlives what it reports; a CUDA error here ends the communicator
                with self._lock:
                    oldest = self._flights[0] if self._flights else None
                    if oldest is not None:
                        self._fail(CommError(f"rank {self.world.rank}: the GPU watchdog failed: {type(err).__name__}: {err}", rank=self.world.rank), oldest.seq)

    def _check(self) -> None:
        """Abort the queued calls when a peer failed, or when the oldest one stopped progressing."""
        with self._lock:
            if not self._flights or self._error is not None:
                return
            oldest = self._flights[0]
        try:
            self.world.check_peers(f"in {oldest.label}: waiting for its kernel on the GPU", oldest.seq)
            self._check_progress(oldest)
        except CommError as err:
            with self._lock:
                self._fail(err, oldest.seq)

    def _check_progress(self, oldest: _Flight) -> None:
        now = time.monotonic_ns()
        if not oldest.running and oldest.started.done:
            oldest.running, self._progress_ns = True, now
        limit = self.config.timeout_s + GRACE_S
        if now - self._progress_ns < limit * 1e9:
            return
        me = self.world.rank
        if not oldest.running:
            raise CommError(f"rank {me}: {oldest.label} has not started on the GPU after {limit:g} s: earlier work on its stream does not finish", rank=me, op=oldest.label)
        sample = self._sample(oldest.plan)
        if sample is not None and sample != oldest.sample:
            oldest.sample, self._progress_ns = sample, now
            return
        raise CommError(f"rank {me}: {oldest.label}: its kernel made no progress for {limit:g} s and did not stop by itself", rank=me, op=oldest.label)

    def _sample(self, plan: CudaPlan) -> bytes | None:
        """The running kernel's state table (steps done per channel), or ``None`` if the copy does not finish."""
        runtime = self._cupy.cuda.runtime
        nbytes = plan.tables.state_bytes
        if self._samples is None or self._samples.words.nbytes < nbytes:
            if self._samples is not None:
                self._samples.free()
            self._samples = _Pinned(runtime, nbytes // 8)
        runtime.memcpyAsync(self._samples.host, plan.tables.base + plan.tables.state_offset, nbytes, runtime.memcpyDeviceToHost, self._side.ptr)
        copied = self._cupy.cuda.Event(disable_timing=True)
        copied.record(self._side)
        return self._samples.words[: nbytes // 8].tobytes() if _await(copied, GRACE_S) else None

    # -- closing ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Finish the queued calls (bounded), stop the watchdog, free the device memory (idempotent).

        Memory a kernel may still use (one that did not stop even when aborted) is left allocated.
        """
        if self._closed:
            return
        if self.device is None:
            self._closed = True
            return
        try:
            self.synchronize()
        except CommError as err:
            log.warning("rank %d: closing after a GPU failure: %s", self.world.rank, err)
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=2 * POLL_S + 1.0)
        _OPEN.discard(self)
        if self._flights:
            log.warning("rank %d: kernels still run on cuda:%d; their device memory stays allocated", self.world.rank, self.device)
            return
        with self._cupy.cuda.Device(self.device):
            self.mailboxes.close()
            self._pinned.free()
            if self._samples is not None:
                self._samples.free()


def _await(event: Any, limit_s: float) -> bool:
    """Whether ``event`` completes within ``limit_s`` (polled: a wedged GPU must not hang the host)."""
    deadline = time.monotonic() + limit_s
    while not event.done:
        if time.monotonic() > deadline:
            return False
        time.sleep(1e-4)
    return True
