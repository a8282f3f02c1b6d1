"""The backends one timing loop drives: synccl's runtime, torch.distributed's gloo and NCCL, and MPI via mpi4py.

Every backend allocates its own 1-D buffers (host memory, or with ``device="cuda"`` CUDA torch
tensors on the local rank's GPU), fills and reads them from numpy (:meth:`Backend.write`,
:meth:`Backend.read`), and runs a collective through :meth:`Backend.run`, whose buffer contract
is nccl-tests':

* out of place, ``send`` and ``recv`` have the lengths of :class:`~synccl.bench.Layout`'s
  ``send_count`` and ``recv_count``;
* in place, ``recv`` is the one buffer (``inplace_count`` long) and ``send`` is the view of it that
  holds this rank's input (its slot for all_gather, all of it otherwise).

``run`` returns the output (for in-place reduce_scatter, the part of ``recv`` holding the result).
On a GPU it may return before the device has run the call, as NCCL does; :meth:`Backend.synchronize`
waits for every call issued (the timing loop calls it before it stops the clock).
Where a backend lacks an operation it is composed from what the backend has, inside the timed call:

* gloo's and MPI's out-of-place broadcast copy on the root first; gloo's out-of-place all_reduce
  copies on every rank;
* gloo's in-place all_to_all copies its input first (gloo gives wrong results when input and
  output alias, from 3 ranks on);
* MPI's ``avg`` is a sum followed by a local division, and so is gloo's on integers;
* MPI reduces bfloat16 with a user-defined op (MPI has no bfloat16 type).
"""

from __future__ import annotations

import importlib.util
import socket
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np

from synccl._xml_run import lanes_needed
from synccl.bench._config import BACKENDS, BenchConfig, parse_dtype
from synccl.collectives import Collective, Program, ReduceOp
from synccl.exceptions import CommError, SyncclError

if TYPE_CHECKING:
    from mpi4py import MPI

    from synccl.runtime._selection import Selection

__all__ = ["Backend", "SynccclBackend", "TorchBackend", "MpiBackend", "make_backend", "check_available", "lanes_needed"]

_NO_RUNTIME = "bench: backend 'synccl' needs synccl.init (the multi-process runtime), which this build lacks; try --backends gloo,mpi"


class Backend(ABC):
    """A way to run collectives, as seen by the shared timing loop.

    Subclasses set :attr:`name`, allocate buffers (:meth:`empty`), view them as numpy
    (:meth:`numpy`) and run collectives (:meth:`run`). Every method that communicates must be
    called by every rank.
    """

    name: str = ""
    device: str = "cpu"

    def __init__(self, control: MPI.Comm) -> None:
        self.rank = control.Get_rank()
        self.size = control.Get_size()

    @property
    @abstractmethod
    def version(self) -> str:
        """The implementation and its version, for the report header."""

    @abstractmethod
    def empty(self, count: int, dtype: np.dtype) -> Any:
        """A new uninitialised 1-D buffer of ``count`` elements (collective for registered memory)."""

    def write(self, buf: Any, data: np.ndarray) -> None:
        """Copy ``data`` (a numpy array of ``buf``'s dtype and length) into ``buf``."""
        np.copyto(buf, data)

    def read(self, buf: Any) -> np.ndarray:
        """``buf``'s contents as a numpy array, once every call issued has completed (a view on the host)."""
        return buf

    def clear(self, buf: Any) -> None:
        """Set ``buf`` to zeros."""
        buf.fill(0)

    def synchronize(self) -> None:  # noqa: B027 - a hook: host backends have nothing to wait for
        """Wait until every call issued has run (host calls have when they return; GPU ones are queued)."""

    @abstractmethod
    def run(self, collective: Collective, send: Any, recv: Any, *, inplace: bool, op: ReduceOp, root: int) -> Any:
        """Run ``collective`` once and return its output; every rank must call it.

        ``send`` is not modified out of place; in place, ``recv`` is overwritten with the result.
        See the module docstring for the buffer contract.
        """

    def selection(self, collective: Collective, send: Any, recv: Any, *, inplace: bool, root: int) -> Selection | None:
        """Which Program :meth:`run` with these arguments executes, and why; ``None`` where there is no Program to name."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release the backend's communicator (every rank calls it)."""


class SynccclBackend(Backend):
    """synccl's multi-process runtime (``synccl.init()``).

    Parameters
    ----------
    control : MPI.Comm
        The benchmark's control communicator (ranks must agree with synccl's).
    registered : bool
        Allocate buffers with ``comm.empty`` (registered shared memory) instead of ``numpy.empty``.
    algorithm : str or None
        Library algorithm passed to every call; ``None`` lets the runtime choose.
    xml : str or None
        MSCCL XML file imported with :func:`synccl.load_xml` before ``synccl.init`` (which gets
        enough lanes for it); its Program then wins selection for the calls it matches.
    collective : Collective or None
        With ``xml``: the collective being measured, which the file must implement.
    engine : str or None
        ``"native"`` or ``"python"`` (the backend is then named ``synccl-<engine>``); ``None``
        takes ``SYNCCL_ENGINE``.
    device : str
        ``"cpu"``, or ``"cuda"``: buffers are CUDA torch tensors on the local rank's GPU, run by
        synccl's CUDA engine on the current stream.

    Raises
    ------
    SyncclError
        If this build has no ``synccl.init``; XmlError or VerificationError for a bad ``xml``.
    ValueError
        If ``xml`` implements another collective or rank count than the job's.
    CommError
        If synccl's rank or size differ from MPI's.
    """

    name = "synccl"

    def __init__(self, control: MPI.Comm, *, registered: bool, algorithm: str | None, xml: str | None = None, collective: Collective | None = None, engine: str | None = None, device: str = "cpu") -> None:
        super().__init__(control)
        self.device = device
        self._tensors = _CudaTensors(control) if device == "cuda" else None
        if engine is not None:
            self.name = f"synccl-{engine}"
        import synccl

        if not hasattr(synccl, "init"):
            raise SyncclError(_NO_RUNTIME)
        self._synccl = synccl
        self._program: Program | None = None
        settings: dict[str, Any] = {"engine": engine}
        if xml is not None:
            from synccl.runtime import from_environment, unregister_program

            program = synccl.load_xml(xml)
            if program.nranks != self.size or (collective is not None and program.collective is not collective):
                unregister_program(program)
                raise ValueError(f"bench: --xml {xml!r} is {program.collective.value} on {program.nranks} ranks, the run is {collective.value if collective else '?'} on {self.size}")
            self._program = program
            settings["max_lanes"] = max(from_environment().max_lanes, lanes_needed(program))
        self.comm = synccl.init(**settings)
        if (self.comm.rank, self.comm.size) != (self.rank, self.size):
            raise CommError(f"bench: synccl.init gave rank {self.comm.rank} of {self.comm.size}, MPI says {self.rank} of {self.size}", rank=self.rank, op="init")
        self.registered = registered
        self._options = {"algorithm": algorithm} if algorithm else {}

    @property
    def version(self) -> str:
        return f"synccl {self._synccl.__version__}"

    def empty(self, count: int, dtype: np.dtype) -> Any:
        if self._tensors is not None:
            return self._tensors.empty(count, dtype)
        return self.comm.empty((count,), dtype) if self.registered else np.empty(count, dtype)

    def write(self, buf: Any, data: np.ndarray) -> None:
        if self._tensors is None:
            super().write(buf, data)
        else:
            _write_tensor(buf, data)

    def read(self, buf: Any) -> np.ndarray:
        self.synchronize()  # raises the failure of a queued GPU call
        return super().read(buf) if self._tensors is None else _read_tensor(buf)

    def clear(self, buf: Any) -> None:
        if self._tensors is None:
            super().clear(buf)
        else:
            buf.zero_()

    def synchronize(self) -> None:
        self.comm.synchronize()

    def run(self, collective: Collective, send: np.ndarray, recv: np.ndarray, *, inplace: bool, op: ReduceOp, root: int) -> np.ndarray:
        comm, opts = self.comm, self._options
        if collective is Collective.ALL_REDUCE:
            return comm.allreduce(recv, op=op, **opts) if inplace else comm.allreduce(send, recv, op=op, **opts)
        if collective is Collective.ALL_GATHER:
            comm.allgather(self._synccl.IN_PLACE if inplace else send, recv, **opts)
            return recv
        if collective is Collective.REDUCE_SCATTER:
            return comm.reduce_scatter(recv, op=op, **opts) if inplace else comm.reduce_scatter(send, recv, op=op, **opts)
        if collective is Collective.ALL_TO_ALL:
            return comm.alltoall(recv, **opts) if inplace else comm.alltoall(send, recv, **opts)
        return comm.broadcast(recv, root=root, **opts) if inplace else comm.broadcast(send, root=root, recvbuf=recv, **opts)

    def selection(self, collective: Collective, send: np.ndarray, recv: np.ndarray, *, inplace: bool, root: int) -> Selection:
        """The runtime's choice for :meth:`run` with these arguments (the runtime selects by the larger buffer)."""
        from synccl.runtime._selection import select

        comm = self.comm
        nbytes = recv.nbytes if inplace else max(send.nbytes, recv.nbytes)
        return select(
            collective,
            nbytes,
            nranks=comm.size,
            inplace=inplace,
            root=root if collective is Collective.BROADCAST else None,
            local_size=comm.local_size,
            algorithm=self._options.get("algorithm"),
            override=comm.config.algorithm,
        )

    def close(self) -> None:
        try:
            self.comm.close()
        finally:
            if self._program is not None:  # the next sweep's backend (--repeat) loads the file again
                from synccl.runtime import unregister_program

                unregister_program(self._program)
                self._program = None


class TorchBackend(Backend):
    """torch.distributed with gloo, synccl's backend ("torch-synccl") or NCCL ("nccl", CUDA tensors).

    The process group is set up through a ``TCPStore`` that rank 0 opens on a free port (on
    127.0.0.1 when every rank shares the host, else on rank 0's host name); ranks and size come
    from MPI.

    Parameters
    ----------
    control : MPI.Comm
        The benchmark's control communicator, used to share the store's address.
    backend : str
        ``gloo``, ``synccl`` or ``nccl``.
    device : str
        ``"cpu"`` or ``"cuda"`` (tensors on the local rank's GPU; ``nccl`` needs it).
    """

    def __init__(self, control: MPI.Comm, backend: str = "gloo", device: str = "cpu") -> None:
        super().__init__(control)
        import torch
        import torch.distributed as dist

        if backend == "synccl":
            import synccl.torch  # noqa: F401 - registers the "synccl" backend
        self.name = f"torch-{backend}" if backend == "synccl" else backend
        self._backend = backend
        self.device = device
        self._tensors = _CudaTensors(control) if device == "cuda" else None

        self._torch, self._dist = torch, dist
        hosts = control.allgather(socket.gethostname())
        address = "127.0.0.1" if len(set(hosts)) == 1 else hosts[0]
        if self.rank == 0:
            store = dist.TCPStore(address, 0, self.size, is_master=True, wait_for_workers=False)
            control.bcast(store.port, root=0)
        else:
            store = dist.TCPStore(address, control.bcast(None, root=0), self.size, is_master=False)
        bound: dict[str, Any] = {}
        if backend == "nccl" and self._tensors is not None:
            if self._tensors.local_size > self._tensors.gpus:
                raise SyncclError(f"bench: NCCL needs a GPU per rank: {self._tensors.local_size} ranks on this node, {self._tensors.gpus} GPU(s)")
            bound["device_id"] = self._tensors.device  # NCCL binds its communicator to the device at once, as torchrun jobs do
        dist.init_process_group(self._backend, store=store, rank=self.rank, world_size=self.size, **bound)
        self._ops = {"sum": dist.ReduceOp.SUM, "prod": dist.ReduceOp.PRODUCT, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX, "avg": dist.ReduceOp.AVG}

    @property
    def version(self) -> str:
        if self._backend == "nccl":
            return f"torch {self._torch.__version__} nccl {'.'.join(map(str, self._torch.cuda.nccl.version()))}"
        return f"torch {self._torch.__version__} {self._backend}"

    def empty(self, count: int, dtype: np.dtype) -> Any:
        if self._tensors is not None:
            return self._tensors.empty(count, dtype)
        return self._torch.empty(count, dtype=getattr(self._torch, np.dtype(dtype).name))

    def write(self, buf: Any, data: np.ndarray) -> None:
        _write_tensor(buf, data)

    def read(self, buf: Any) -> np.ndarray:
        self.synchronize()
        return _read_tensor(buf)

    def clear(self, buf: Any) -> None:
        buf.zero_()

    def synchronize(self) -> None:
        if self._tensors is not None:
            self._torch.cuda.synchronize()

    def run(self, collective: Collective, send: Any, recv: Any, *, inplace: bool, op: ReduceOp, root: int) -> Any:
        dist = self._dist
        integer_avg = op == "avg" and not recv.is_floating_point()
        reduce_op = self._ops["sum" if integer_avg else op]
        if collective is Collective.ALL_REDUCE:
            if not inplace:
                recv.copy_(send)
            dist.all_reduce(recv, op=reduce_op)
            out = recv
        elif collective is Collective.ALL_GATHER:
            dist.all_gather_single(recv, send)
            return recv
        elif collective is Collective.REDUCE_SCATTER:
            block = send.numel() // self.size
            out = recv[self.rank * block : (self.rank + 1) * block] if inplace else recv
            dist.reduce_scatter_single(out, send, op=reduce_op)
        elif collective is Collective.ALL_TO_ALL:
            dist.all_to_all_single(recv, send.clone() if inplace else send)
            return recv
        else:
            if not inplace and self.rank == root:
                recv.copy_(send)
            dist.broadcast(recv, src=root)
            return recv
        if integer_avg:
            out.floor_divide_(self.size)
        return out

    def close(self) -> None:
        self._dist.destroy_process_group()


class MpiBackend(Backend):
    """MPI's own collectives through mpi4py on numpy buffers (a duplicate of the control communicator).

    Parameters
    ----------
    control : MPI.Comm
        The benchmark's control communicator.
    """

    name = "mpi"

    def __init__(self, control: MPI.Comm) -> None:
        super().__init__(control)
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = control.Dup()
        self._ops = {"sum": MPI.SUM, "prod": MPI.PROD, "min": MPI.MIN, "max": MPI.MAX, "avg": MPI.SUM}
        self._bf16_ops: dict[str, MPI.Op] = {}

    @property
    def version(self) -> str:
        return " ".join(self._mpi.Get_library_version().splitlines()[0].split())

    def empty(self, count: int, dtype: np.dtype) -> np.ndarray:
        return np.empty(count, dtype)

    def run(self, collective: Collective, send: np.ndarray, recv: np.ndarray, *, inplace: bool, op: ReduceOp, root: int) -> np.ndarray:
        comm, in_place = self.comm, self._mpi.IN_PLACE
        source = in_place if inplace else self._message(send)
        target = self._message(recv)
        if collective is Collective.ALL_REDUCE:
            comm.Allreduce(source, target, op=self._op(op, recv.dtype))
            out = recv
        elif collective is Collective.REDUCE_SCATTER:
            comm.Reduce_scatter_block(source, target, op=self._op(op, recv.dtype))
            out = recv[: recv.size // self.size] if inplace else recv
        elif collective is Collective.ALL_GATHER:
            comm.Allgather(source, target)
            return recv
        elif collective is Collective.ALL_TO_ALL:
            comm.Alltoall(source, target)
            return recv
        else:
            if not inplace and self.rank == root:
                np.copyto(recv, send)
            comm.Bcast(target, root=root)
            return recv
        if op == "avg":
            divide = np.floor_divide if np.issubdtype(out.dtype, np.integer) else np.divide
            divide(out, self.size, out=out)
        return out

    def _message(self, buf: np.ndarray) -> Any:
        # MPI has no bfloat16: move it as 16-bit words (reductions then need a user-defined op).
        return [buf.view(np.uint16), self._mpi.UINT16_T] if buf.dtype.name == "bfloat16" else buf

    def _op(self, op: ReduceOp, dtype: np.dtype) -> MPI.Op:
        if dtype.name != "bfloat16":
            return self._ops[op]
        if op not in self._bf16_ops:
            ufunc = {"sum": np.add, "avg": np.add, "prod": np.multiply, "min": np.minimum, "max": np.maximum}[op]

            def combine(inbuf: Any, inoutbuf: Any, datatype: Any) -> None:
                acc = np.frombuffer(inoutbuf, dtype=dtype)
                ufunc(np.frombuffer(inbuf, dtype=dtype), acc, out=acc)

            self._bf16_ops[op] = self._mpi.Op.Create(combine, commute=True)
        return self._bf16_ops[op]

    def close(self) -> None:
        for user_op in self._bf16_ops.values():
            user_op.Free()
        self.comm.Free()


class _CudaTensors:
    """Buffers of the CUDA backends: torch tensors on the local rank's GPU (torch has every bench dtype, bfloat16 too).

    With more local ranks than GPUs, ranks share them round-robin (synccl runs so; NCCL refuses).
    """

    def __init__(self, control: MPI.Comm) -> None:
        import torch
        from mpi4py import MPI

        if not torch.cuda.is_available():
            raise SyncclError(f"bench: --device cuda: torch {torch.__version__} sees no usable CUDA device")
        node = control.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.gpus = torch.cuda.device_count()
        self.device = torch.device("cuda", local_rank % self.gpus)
        torch.cuda.set_device(self.device)
        self._torch = torch

    def empty(self, count: int, dtype: np.dtype) -> Any:
        return self._torch.empty(count, dtype=getattr(self._torch, np.dtype(dtype).name), device=self.device)


def _write_tensor(tensor: Any, data: np.ndarray) -> None:
    """Copy ``data`` into ``tensor`` byte for byte (torch has no numpy bfloat16, so both are seen as bytes)."""
    import torch

    tensor.view(torch.uint8).copy_(torch.from_numpy(np.ascontiguousarray(data).view(np.uint8)))


def _read_tensor(tensor: Any) -> np.ndarray:
    """``tensor`` as numpy: a view of a CPU tensor, a copy of a GPU one."""
    import torch

    return tensor.view(torch.uint8).cpu().numpy().view(parse_dtype(str(tensor.dtype).removeprefix("torch.")))


def make_backend(name: str, control: MPI.Comm, config: BenchConfig) -> Backend:
    """The backend called ``name`` (one of :data:`~synccl.bench.BACKENDS`); every rank must call it.

    Raises
    ------
    ValueError
        If ``name`` is unknown.

    Examples
    --------
    >>> from mpi4py import MPI
    >>> backend = make_backend("mpi", MPI.COMM_WORLD, BenchConfig("all_reduce", backends=("mpi",)))
    >>> buf = backend.empty(4, np.dtype(np.float32))
    >>> buf[:] = 2.0
    >>> backend.run(Collective.ALL_REDUCE, buf, buf, inplace=True, op="avg", root=0).tolist()
    [2.0, 2.0, 2.0, 2.0]
    >>> backend.close()
    """
    if name in ("synccl", "synccl-native", "synccl-python"):
        engine = name.removeprefix("synccl-") if name != "synccl" else None
        return SynccclBackend(control, registered=config.registered, algorithm=config.algorithm, xml=config.xml, collective=config.collective, engine=engine, device=config.device)
    if name in ("gloo", "nccl"):
        return TorchBackend(control, name, config.device)
    if name == "torch-synccl":
        return TorchBackend(control, "synccl", config.device)
    if name == "mpi":
        return MpiBackend(control)
    raise ValueError(f"bench: unknown backend {name!r}; valid: {', '.join(BACKENDS)}")



def check_available(names: tuple[str, ...], device: str = "cpu") -> None:
    """Raise unless the backends ``names`` on ``device`` and the MPI control channel can start here.

    Cheap on the CPU: imports only ``synccl`` (not torch or mpi4py), so a launcher can fail
    before starting ranks; ``device="cuda"`` asks CuPy for a usable GPU.

    Raises
    ------
    SyncclError
        Naming the first missing piece.

    Examples
    --------
    >>> check_available(("mpi",))
    """
    import synccl

    if importlib.util.find_spec("mpi4py") is None:
        raise SyncclError("bench: needs mpi4py (pip install mpi4py mpich) to coordinate the ranks")
    if any(name.startswith("synccl") for name in names) and not hasattr(synccl, "init"):
        raise SyncclError(_NO_RUNTIME)
    for torch_backend in ("gloo", "nccl", "torch-synccl"):
        if torch_backend in names and importlib.util.find_spec("torch") is None:
            raise SyncclError(f"bench: backend {torch_backend!r} needs torch (pip install torch)")
    if device == "cuda":
        from synccl.runtime._cuda import cuda_available

        reason = cuda_available()
        if reason is not None:
            raise SyncclError(f"bench: --device cuda: no usable GPU: {reason}")
        if importlib.util.find_spec("torch") is None:
            raise SyncclError("bench: --device cuda holds its buffers in CUDA torch tensors: needs torch with CUDA")
