"""The backends one timing loop drives: synccl's runtime, torch.distributed gloo, and MPI via mpi4py.

Every backend allocates its own 1-D buffers, exposes them to numpy without copying, and runs a
collective through :meth:`Backend.run`, whose buffer contract is nccl-tests':

* out of place, ``send`` and ``recv`` have the lengths of :class:`~synccl.bench.Layout`'s
  ``send_count`` and ``recv_count``;
* in place, ``recv`` is the one buffer (``inplace_count`` long) and ``send`` is the view of it that
  holds this rank's input (its slot for all_gather, all of it otherwise).

``run`` returns the output (for in-place reduce_scatter, the part of ``recv`` holding the result).
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

    def numpy(self, buf: Any) -> np.ndarray:
        """``buf`` as a numpy array sharing its memory."""
        return buf

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

    def __init__(self, control: MPI.Comm, *, registered: bool, algorithm: str | None, xml: str | None = None, collective: Collective | None = None, engine: str | None = None) -> None:
        super().__init__(control)
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

    def empty(self, count: int, dtype: np.dtype) -> np.ndarray:
        return self.comm.empty((count,), dtype) if self.registered else np.empty(count, dtype)

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
    """torch.distributed on CPU tensors, with the gloo backend or with synccl's ("torch-synccl").

    The process group is set up through a ``TCPStore`` that rank 0 opens on a free port (on
    127.0.0.1 when every rank shares the host, else on rank 0's host name); ranks and size come
    from MPI.

    Parameters
    ----------
    control : MPI.Comm
        The benchmark's control communicator, used to share the store's address.
    """

    def __init__(self, control: MPI.Comm, backend: str = "gloo") -> None:
        super().__init__(control)
        import torch
        import torch.distributed as dist

        if backend == "synccl":
            import synccl.torch  # noqa: F401 - registers the "synccl" backend
        self.name = "gloo" if backend == "gloo" else f"torch-{backend}"
        self._backend = backend

        self._torch, self._dist = torch, dist
        hosts = control.allgather(socket.gethostname())
        address = "127.0.0.1" if len(set(hosts)) == 1 else hosts[0]
        if self.rank == 0:
            store = dist.TCPStore(address, 0, self.size, is_master=True, wait_for_workers=False)
            control.bcast(store.port, root=0)
        else:
            store = dist.TCPStore(address, control.bcast(None, root=0), self.size, is_master=False)
        dist.init_process_group(self._backend, store=store, rank=self.rank, world_size=self.size)
        self._ops = {"sum": dist.ReduceOp.SUM, "prod": dist.ReduceOp.PRODUCT, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX, "avg": dist.ReduceOp.AVG}

    @property
    def version(self) -> str:
        return f"torch {self._torch.__version__} {self._backend}"

    def empty(self, count: int, dtype: np.dtype) -> Any:
        return self._torch.empty(count, dtype=getattr(self._torch, np.dtype(dtype).name))

    def numpy(self, buf: Any) -> np.ndarray:
        return buf.view(self._torch.uint8).numpy().view(parse_dtype(str(buf.dtype).removeprefix("torch.")))

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


def make_backend(name: str, control: MPI.Comm, config: BenchConfig) -> Backend:
    """The backend called ``name`` (``synccl``, ``gloo`` or ``mpi``); every rank must call it.

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
        return SynccclBackend(control, registered=config.registered, algorithm=config.algorithm, xml=config.xml, collective=config.collective, engine=engine)
    if name == "gloo":
        return TorchBackend(control, "gloo")
    if name == "torch-synccl":
        return TorchBackend(control, "synccl")
    if name == "mpi":
        return MpiBackend(control)
    raise ValueError(f"bench: unknown backend {name!r}; valid: {', '.join(BACKENDS)}")



def check_available(names: tuple[str, ...]) -> None:
    """Raise unless the backends ``names`` and the MPI control channel can start here.

    Cheap: imports only ``synccl`` (not torch or mpi4py), so a launcher can fail before starting ranks.

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
    for torch_backend in ("gloo", "torch-synccl"):
        if torch_backend in names and importlib.util.find_spec("torch") is None:
            raise SyncclError(f"bench: backend {torch_backend!r} needs torch (pip install torch)")
