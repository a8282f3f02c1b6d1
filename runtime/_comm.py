"""The Python API: ``comm = synccl.init()``, then collectives on numpy arrays and CPU torch tensors.

Every collective must be called by every rank of the communicator, in the same order, with
matching sizes, dtypes, ops and roots; a mismatch raises :class:`~synccl.exceptions.CommError`
(``SYNCCL_CHECK_CALLS=0`` turns the check off; it costs one integer per message). Out-of-place
calls leave the input untouched; in-place calls follow NCCL: ``allreduce(x)`` overwrites ``x``,
``allgather(IN_PLACE, out)`` finds each rank's share already in its slot of ``out``,
``reduce_scatter(x)`` leaves the result in the rank's slot of ``x``.
"""

from __future__ import annotations

import functools
import logging
import operator
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from synccl.cache import installed_files
from synccl.collectives import REDUCE_OPS, Buffer, Collective, Program, verify
from synccl.collectives._oracle import BITWISE_OPS
from synccl.exceptions import CommError, KernelBuildError, SyncclError
from synccl.runtime import _native as native
from synccl.runtime import _p2p as p2p
from synccl.runtime._buffers import as_array, is_torch
from synccl.runtime._config import RuntimeConfig, from_environment
from synccl.runtime._cuda import CudaEngine, CudaPlan
from synccl.runtime._cuda_arrays import on_device
from synccl.runtime._executor import Waiter, execute, prepare
from synccl.runtime._fingerprint import Fingerprint, call_fingerprint, signature
from synccl.runtime._log import enable_debug_log
from synccl.runtime._overlap import ComputeFn, require_native, run_alongside
from synccl.runtime._plan import Layout, RankPlan, ShareLayout, TrafficLayout, check_capacity, compile_plan, tile_count
from synccl.runtime._rendezvous import Rendezvous, detect
from synccl.runtime._selection import Selection, build_program, load_xml, registry_version, select
from synccl.runtime._world import World
from synccl.topologies import get_topology

__all__ = ["Communicator", "init", "IN_PLACE"]

log = logging.getLogger(__name__)


class _InPlace:
    def __repr__(self) -> str:
        return "IN_PLACE"


#: Registered data is read in place by peers only in slices of at least this many bytes.
LEND_MIN_BYTES = 64 << 10

#: Pass as ``sendbuf`` of :meth:`Communicator.allgather` when each rank's share already sits in ``recvbuf``.
IN_PLACE = _InPlace()
_F = TypeVar("_F", bound=Callable[..., Any])


def _collective_call(method: _F) -> _F:
    """Make a refused call visible to the peers.

    A call whose arguments this rank rejects raises here and leaves the communicator usable (as
    NCCL and gloo do), but peers already in the call would wait for this rank until their
    timeout: the refusal is posted on this rank's board, which they watch. (Failures during the
    call itself are recorded by :meth:`Communicator._launch` and end the communicator.)
    """

    @functools.wraps(method)
    def call(self: Communicator, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except CommError as err:
            self._refuse(err)
            raise

    return call  # type: ignore[return-value]


def init(*, rendezvous: Rendezvous | None = None, **settings: Any) -> Communicator:
    """Join the job this process belongs to and return its communicator.

    The job comes from the launcher: ``mpiexec -n N python app.py`` (rank and size from MPI) or
    ``torchrun --nproc-per-node N app.py`` (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT``); a plain ``python app.py`` is a job of one rank. Keyword settings override
    the ``SYNCCL_*`` environment (``timeout_s``, ``slice_bytes``, ``slots``, ``max_lanes``,
    ``local_size``, ``algorithm``, ``check_calls``, ``engine``).

    Examples
    --------
    >>> import numpy as np, synccl
    >>> comm = synccl.init()
    >>> comm.allreduce(np.arange(4.0)).tolist()
    [0.0, 1.0, 2.0, 3.0]
    >>> comm.close()
    """
    config = from_environment(**settings)
    return Communicator(rendezvous or detect(config.timeout_s), config)


class Communicator:
    """The ranks of one job and the collectives among them (create it with :func:`init`)."""

    def __init__(self, rendezvous: Rendezvous, config: RuntimeConfig) -> None:
        if config.debug:
            enable_debug_log(config.debug, rendezvous.rank)
        self.config = config = replace(config, engine=_engine(config.engine, rendezvous.rank))
        self.world = World(rendezvous, config)
        self.rank = self.world.rank
        self.size = self.world.size
        self._seq = 0
        self._closed = False
        self._calls: OrderedDict[tuple, _Call] = OrderedDict()  # prepared calls by buffers and arguments
        self._pinned_bytes = 0  # user memory the prepared calls keep alive
        self._spares: dict[tuple[int, np.dtype], np.ndarray] = {}  # receive buffers of non-roots
        self._workspaces: dict[str, np.ndarray] = {}  # scratch bytes of layer-level calls, by purpose
        self._verified: dict[int, Program] = {}  # user Programs alltoallv has verified, by id
        self._announced: set[tuple] = set()  # selections already logged
        self._cuda: CudaEngine | None = None  # the GPU side, set up by the first call on GPU buffers
        log.info("rank %d of %d, %d node(s) of %d rank(s); settings: %s", self.rank, self.size, self.world.nnodes, self.local_size, _settings(config))
        if config.topology:
            self._load_installed(config.topology)

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size}, nodes={self.world.nnodes})"

    def _load_installed(self, name: str) -> None:
        """Register the algorithms ``synccl synth --install`` installed for topology ``name``."""
        topology = get_topology(name)
        if topology.nranks != self.size:
            raise CommError(f"init: SYNCCL_TOPOLOGY={name!r} has {topology.nranks} ranks but the job has {self.size}", rank=self.rank)
        for path in installed_files(topology.fingerprint()):
            load_xml(str(path))

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def local_size(self) -> int:
        """Ranks on each node."""
        return self.world.local_size

    def close(self) -> None:
        """Release connections; registered buffers stay valid until the process exits.

        Peers still waiting for this rank in a call raise :class:`CommError`; later calls on this
        communicator raise too.
        """
        if self._closed:
            return
        self._closed = True
        if self._cuda is not None:
            self._cuda.close()  # after its queued calls have run
        self._calls.clear()
        self._pinned_bytes = 0
        self.world.close()

    # -- registered memory -----------------------------------------------------------------
    def empty(self, shape: int | tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        """Collectively allocate an array in registered shared memory (zero-copy transfers).

        Every rank must call it; sizes may differ. ``torch.from_numpy(...)`` gives a tensor
        over the same memory.

        >>> import synccl
        >>> comm = synccl.init()
        >>> comm.empty((2, 3), "float64").shape
        (2, 3)
        >>> comm.close()
        """
        self._check_usable("empty")
        dt = np.dtype(dtype)
        count = int(np.prod(shape))
        raw = self.world.register(count * dt.itemsize)
        return raw.view(dt).reshape(shape)

    # -- collectives -------------------------------------------------------------------------
    def allreduce(self, sendbuf: Any, recvbuf: Any = None, *, op: str = "sum", algorithm: str | None = None) -> Any:
        """Reduce ``sendbuf`` over all ranks into ``recvbuf`` (or in place) and return the result.

        >>> import numpy as np, synccl
        >>> with synccl.init() as comm:
        ...     comm.allreduce(np.ones(3), op="max").tolist()
        [1.0, 1.0, 1.0]
        """
        # The hot path of small messages: a call repeated on the same buffer objects runs its
        # prepared plan directly (the slow path below is where arguments are checked).
        key = (Collective.ALL_REDUCE, id(sendbuf), id(recvbuf), op, algorithm, registry_version())
        call = self._calls.get(key)
        if call is not None and call.objects[0] is sendbuf and call.objects[1] is recvbuf:
            self._launch(call)
        else:
            self._allreduce_first(key, sendbuf, recvbuf, op=op, algorithm=algorithm)
        return sendbuf if recvbuf is None else recvbuf

    @_collective_call
    def _allreduce_first(self, key: tuple, sendbuf: Any, recvbuf: Any, *, op: str, algorithm: str | None) -> None:
        send = as_array(sendbuf, name="sendbuf", op="allreduce", writable=recvbuf is None)
        recv = send if recvbuf is None else as_array(recvbuf, name="recvbuf", op="allreduce", writable=True)
        self._same_shape("allreduce", send, recv)
        self._run(Collective.ALL_REDUCE, send, recv, share=send.size, op=op, algorithm=algorithm, key=key, objects=(sendbuf, recvbuf))

    @_collective_call
    def allgather(self, sendbuf: Any, recvbuf: Any, *, algorithm: str | None = None) -> Any:
        """Gather every rank's ``sendbuf`` into ``recvbuf`` (``size`` times larger) on every rank."""
        recv = as_array(recvbuf, name="recvbuf", op="allgather", writable=True)
        share = self._share("allgather", recv.size)
        if sendbuf is IN_PLACE:
            send = recv
        else:
            send = as_array(sendbuf, name="sendbuf", op="allgather", writable=False)
            self._expect("allgather", "sendbuf", send, share, recv.dtype)
        self._run(Collective.ALL_GATHER, send, recv, share=share, algorithm=algorithm)
        return recvbuf

    @_collective_call
    def reduce_scatter(self, sendbuf: Any, recvbuf: Any = None, *, op: str = "sum", algorithm: str | None = None) -> Any:
        """Reduce ``sendbuf`` (``size`` shares) over all ranks; rank r gets share r in ``recvbuf``.

        Without ``recvbuf`` the result stays in the rank's share of ``sendbuf``, which is returned.
        """
        send = as_array(sendbuf, name="sendbuf", op="reduce_scatter", writable=recvbuf is None)
        share = self._share("reduce_scatter", send.size)
        if recvbuf is None:
            self._run(Collective.REDUCE_SCATTER, send, send, share=share, op=op, algorithm=algorithm)
            return _slot(sendbuf, self.rank * share, share)
        recv = as_array(recvbuf, name="recvbuf", op="reduce_scatter", writable=True)
        self._expect("reduce_scatter", "recvbuf", recv, share, send.dtype)
        self._run(Collective.REDUCE_SCATTER, send, recv, share=share, op=op, algorithm=algorithm)
        return recvbuf

    @_collective_call
    def alltoall(self, sendbuf: Any, recvbuf: Any = None, *, algorithm: str | None = None) -> Any:
        """Send share j of ``sendbuf`` to rank j; receive rank i's share into share i of ``recvbuf``."""
        send = as_array(sendbuf, name="sendbuf", op="alltoall", writable=recvbuf is None)
        recv = send if recvbuf is None else as_array(recvbuf, name="recvbuf", op="alltoall", writable=True)
        self._same_shape("alltoall", send, recv)
        self._run(Collective.ALL_TO_ALL, send, recv, share=self._share("alltoall", send.size), algorithm=algorithm)
        return sendbuf if recvbuf is None else recvbuf

    @_collective_call
    def alltoallv(self, sendbuf: Any, send_counts: list[int], recvbuf: Any, recv_counts: list[int], *, program: Program | None = None, traffic: Any = None) -> Any:
        """All-to-all with uneven counts: ``send_counts[j]`` elements go to rank j, packed in rank order.

        The ranks first exchange their send counts (an all-gather of ``size`` integers), so every
        rank knows the whole traffic matrix; ``traffic`` -- that ``size x size`` matrix of element
        counts, the same on every rank -- skips the exchange when the caller has it already
        (:func:`synccl.moe.dispatch` does). ``program`` runs an all_to_all Program (verified
        here) instead of the direct pairwise exchange: each pair's block travels as the
        Program's chunks of it, at the size it has in this call, relays included -- e.g. the
        schedule ``synccl synth all_to_all --traffic m.npy`` synthesized for this traffic.
        """
        op = "alltoallv"
        send = as_array(sendbuf, name="sendbuf", op=op, writable=False)
        recv = as_array(recvbuf, name="recvbuf", op=op, writable=True)
        counts = []
        for name, arr, given in (("send_counts", send, send_counts), ("recv_counts", recv, recv_counts)):
            values = tuple(int(c) for c in given)
            if len(values) != self.size or min(values, default=0) < 0 or sum(values) != arr.size:
                raise CommError(f"{op}: {name} must be {self.size} counts >= 0 summing to {arr.size}, got {list(given)!r}", rank=self.rank, op=op)
            counts.append(values)
        if send.dtype != recv.dtype:
            raise CommError(f"{op}: sendbuf is {send.dtype} but recvbuf is {recv.dtype}", rank=self.rank, op=op)
        program = self._all_to_all_program(program)
        matrix = self._traffic(counts[0], traffic)
        if tuple(row[self.rank] for row in matrix) != counts[1]:
            raise CommError(f"{op}: recv_counts {list(counts[1])} differ from what the ranks send rank {self.rank}: {[row[self.rank] for row in matrix]}", rank=self.rank, op=op)
        key = (op, _address(send), _address(recv), send.dtype, id(program), matrix)
        call = self._calls.get(key)
        if call is None:
            layout = TrafficLayout(self.rank, matrix, program.spec.chunk_factor)
            fingerprint = call_fingerprint(None, None, send.dtype, None, None, False, program.name)  # counts differ by rank
            call = self._compile(program, layout, {Buffer.INPUT: send, Buffer.OUTPUT: recv}, op="sum", label=op, fingerprint=fingerprint)
            self._remember(key, call)
        self._launch(call)
        return recvbuf

    def _all_to_all_program(self, program: Program | None) -> Program:
        """The Program an alltoallv runs: the library's pairwise exchange, or ``program`` once it is verified."""
        if program is None:
            return build_program(Collective.ALL_TO_ALL, "pairwise", self.size, False, None, self.local_size, ())
        if not isinstance(program, Program):
            raise CommError(f"alltoallv: program must be a synccl Program, got {type(program).__name__}", rank=self.rank, op="alltoallv")
        if program.collective is not Collective.ALL_TO_ALL or program.nranks != self.size or program.spec.inplace:
            raise CommError(f"alltoallv: program {program.name!r} is {program.spec.describe()}; expected an out-of-place all_to_all on {self.size} ranks", rank=self.rank, op="alltoallv")
        if id(program) not in self._verified:
            verify(program)
            self._verified[id(program)] = program  # kept, so its id is not reused
        return program

    def _traffic(self, send_counts: tuple[int, ...], traffic: Any) -> tuple[tuple[int, ...], ...]:
        """The ``size x size`` element counts of an alltoallv: ``traffic`` as given, or every rank's send counts."""
        if traffic is None:
            every = self.allgather(np.array(send_counts, dtype=np.int64), np.empty(self.size * self.size, dtype=np.int64))
            return tuple(tuple(int(c) for c in row) for row in every.reshape(self.size, self.size))
        matrix = np.asarray(traffic)
        if matrix.shape != (self.size, self.size) or not np.issubdtype(matrix.dtype, np.integer) or (matrix < 0).any():
            raise CommError(f"alltoallv: traffic must be a {self.size} x {self.size} matrix of counts >= 0, got shape {matrix.shape} of {matrix.dtype}", rank=self.rank, op="alltoallv")
        if tuple(int(c) for c in matrix[self.rank]) != send_counts:
            raise CommError(f"alltoallv: row {self.rank} of traffic {matrix[self.rank].tolist()} differs from send_counts {list(send_counts)}", rank=self.rank, op="alltoallv")
        return tuple(tuple(int(c) for c in row) for row in matrix)

    @_collective_call
    def broadcast(self, buf: Any, *, root: int = 0, recvbuf: Any = None, algorithm: str | None = None) -> Any:
        """Copy the root's ``buf`` to every rank's ``buf`` (or ``recvbuf``)."""
        root = self._root("broadcast", root)
        send = as_array(buf, name="buf", op="broadcast", writable=recvbuf is None)
        recv = send if recvbuf is None else as_array(recvbuf, name="recvbuf", op="broadcast", writable=True)
        self._same_shape("broadcast", send, recv)
        self._run(Collective.BROADCAST, send, recv, share=send.size, root=root, algorithm=algorithm)
        return buf if recvbuf is None else recvbuf

    @_collective_call
    def reduce(self, sendbuf: Any, recvbuf: Any = None, *, root: int = 0, op: str = "sum", algorithm: str | None = None) -> Any:
        """Reduce every rank's ``sendbuf`` into the root's ``recvbuf`` (or its ``sendbuf``)."""
        root = self._root("reduce", root)
        send = as_array(sendbuf, name="sendbuf", op="reduce", writable=recvbuf is None and self.rank == root)
        recv = send if recvbuf is None else as_array(recvbuf, name="recvbuf", op="reduce", writable=True)
        self._same_shape("reduce", send, recv)
        self._run(Collective.REDUCE, send, recv, share=send.size, root=root, op=op, algorithm=algorithm)
        return sendbuf if recvbuf is None else recvbuf

    @_collective_call
    def gather(self, sendbuf: Any, recvbuf: Any = None, *, root: int = 0, algorithm: str | None = None) -> Any:
        """Collect every rank's ``sendbuf`` into the root's ``recvbuf`` (``size`` shares)."""
        root = self._root("gather", root)
        send = as_array(sendbuf, name="sendbuf", op="gather", writable=False)
        if self.rank == root:
            if recvbuf is None:
                raise CommError("gather: the root needs a recvbuf", rank=self.rank, op="gather")
            recv = as_array(recvbuf, name="recvbuf", op="gather", writable=True)
            self._expect("gather", "recvbuf", recv, send.size * self.size, send.dtype)
        else:
            recv = self._spare(send.size * self.size, send.dtype)  # never touched off the root
        self._run(Collective.GATHER, send, recv, share=send.size, root=root, algorithm=algorithm)
        return recvbuf

    @_collective_call
    def scatter(self, sendbuf: Any, recvbuf: Any, *, root: int = 0, algorithm: str | None = None) -> Any:
        """Send share r of the root's ``sendbuf`` to rank r's ``recvbuf``."""
        root = self._root("scatter", root)
        recv = as_array(recvbuf, name="recvbuf", op="scatter", writable=True)
        if self.rank == root:
            send = as_array(sendbuf, name="sendbuf", op="scatter", writable=False)
            self._expect("scatter", "sendbuf", send, recv.size * self.size, recv.dtype)
        else:
            send = self._spare(recv.size * self.size, recv.dtype)  # never read off the root
        self._run(Collective.SCATTER, send, recv, share=recv.size, root=root, algorithm=algorithm)
        return recvbuf

    def send(self, buf: Any, dst: int) -> None:
        """Send ``buf`` to rank ``dst`` (which must call :meth:`recv` with a buffer of the same size)."""
        self._check_usable("send")
        p2p.send(self.world, as_array(buf, name="buf", op="send", writable=False, device_ok=False), dst, timeout_s=self.config.timeout_s)

    def recv(self, buf: Any, src: int) -> Any:
        """Receive from rank ``src`` into ``buf`` and return it."""
        self._check_usable("recv")
        p2p.recv(self.world, as_array(buf, name="buf", op="recv", writable=True, device_ok=False), src, timeout_s=self.config.timeout_s)
        return buf

    def barrier(self) -> None:
        """Return once every rank has entered the barrier."""
        self.allreduce(np.zeros(1, dtype=np.int8), algorithm="one_shot" if self.world.nnodes == 1 else None)

    def synchronize(self) -> None:
        """Wait until the collectives issued on GPU buffers have run; raise :class:`CommError` if one failed.

        A collective on GPU buffers returns once queued on the caller's current CUDA stream, as
        NCCL's do (later work on that stream runs after it); its failure shows here or at the next
        call. Collectives on host buffers have completed when they return.

        >>> import synccl
        >>> with synccl.init() as comm:
        ...     comm.synchronize()
        """
        if self._cuda is not None:
            self._cuda.synchronize()

    # -- machinery -------------------------------------------------------------------------------
    def _refuse(self, err: CommError) -> None:
        """Post this rank's refusal of its next call on its board, so peers already in it raise instead of waiting.

        For refusals made before any collective of a call runs: the collectives themselves
        (:func:`_collective_call`), and the layer-level calls of :mod:`synccl.overlap` and
        :mod:`synccl.moe`, whose argument checks fail on one rank only.
        """
        if self.world.broken is None and not self._closed:
            self.world.refuse(self._seq + 1, str(err))

    def _check_usable(self, op: str) -> None:
        if self._closed:
            raise CommError(f"{op}: the communicator is closed", rank=self.rank, op=op)
        if self.world.broken is not None:
            raise CommError(f"{op}: the communicator is unusable after an earlier failure ({self.world.broken})", rank=self.rank, op=op)

    def _root(self, op: str, root: Any) -> int:
        """``root`` as a rank number: any integer type, but not a bool."""
        try:
            if isinstance(root, bool | np.bool_):
                raise TypeError
            value = operator.index(root)
        except TypeError:
            raise CommError(f"{op}: root must be an integer rank, got {root!r} of type {type(root).__name__}", rank=self.rank, op=op) from None
        if not 0 <= value < self.size:
            raise CommError(f"{op}: root must be a rank in 0..{self.size - 1}, got {value}", rank=self.rank, op=op)
        return value

    def _spare(self, count: int, dtype: np.dtype) -> np.ndarray:
        """A scratch array of ``count`` elements, reused across calls (kept per dtype)."""
        key = (count, np.dtype(dtype))
        spare = self._spares.get(key)
        if spare is None:
            self._spares = {k: v for k, v in self._spares.items() if k[1] != key[1]}
            spare = self._spares[key] = np.empty(count, dtype=dtype)
        return spare

    def _workspace(self, purpose: str, nbytes: int) -> np.ndarray:
        """``nbytes`` of scratch kept for ``purpose`` across calls, grown by half again when too small.

        Calls whose sizes change every time (MoE dispatch) reuse the same memory: fresh arrays
        would each cost page faults (and the prepared-call cache keeps recent ones alive).
        """
        space = self._workspaces.get(purpose)
        if space is None or space.size < nbytes:
            space = self._workspaces[purpose] = np.empty(max(nbytes, 3 * (0 if space is None else space.size) // 2), dtype=np.uint8)
        return space[:nbytes]

    def _share(self, op: str, total: int) -> int:
        if total % self.size:
            raise CommError(f"{op}: buffer of {total} elements does not split into {self.size} equal shares", rank=self.rank, op=op)
        return total // self.size

    def _same_shape(self, op: str, send: np.ndarray, recv: np.ndarray) -> None:
        if send.size != recv.size or send.dtype != recv.dtype:
            raise CommError(f"{op}: sendbuf ({send.size} x {send.dtype}) and recvbuf ({recv.size} x {recv.dtype}) differ", rank=self.rank, op=op)

    def _expect(self, op: str, name: str, arr: np.ndarray, size: int, dtype: np.dtype) -> None:
        if arr.size != size or arr.dtype != dtype:
            raise CommError(f"{op}: {name} must hold {size} x {dtype}, got {arr.size} x {arr.dtype}", rank=self.rank, op=op)

    def _run(
        self,
        collective: Collective,
        send: np.ndarray,
        recv: np.ndarray,
        *,
        share: int,
        op: str = "sum",
        root: int | None = None,
        algorithm: str | None = None,
        key: tuple | None = None,
        objects: tuple = (),
    ) -> None:
        """Prepare (or find) the call for these arrays and run it.

        With ``key``, the prepared call is remembered for the user's buffer ``objects`` (kept
        alive by the cache, so their identity stands for their memory).
        """
        key = key or (collective, _address(send), send.size, _address(recv), recv.size, send.dtype, op, root, algorithm, share, registry_version())
        call = self._calls.get(key)
        if call is None or not _identical(call.objects, objects):
            call = self._prepare(collective, send, recv, share=share, op=op, root=root, algorithm=algorithm)
            call = replace(call, objects=objects)
            self._remember(key, call)
        self._launch(call)

    def _prepare(self, collective: Collective, send: np.ndarray, recv: np.ndarray, *, share: int, op: str, root: int | None, algorithm: str | None) -> _Call:
        """Everything about a call that does not change when it is repeated on the same buffers."""
        label = collective.value
        if op not in REDUCE_OPS:
            raise CommError(f"{label}: unknown op {op!r}; valid: {', '.join(REDUCE_OPS)}", rank=self.rank, op=label)
        if collective.is_combining and send.dtype == np.bool_ and op not in ("min", "max", *BITWISE_OPS):
            raise CommError(f"{label}: op {op!r} is not defined on bool; use min, max, band, bor or bxor", rank=self.rank, op=label)
        if collective.is_combining and op in BITWISE_OPS and not (np.issubdtype(send.dtype, np.integer) or send.dtype == np.bool_):
            raise CommError(f"{label}: op {op!r} needs integers or bools, got {send.dtype}", rank=self.rank, op=label)
        inplace = _same_memory(send, recv)
        nbytes = max(send.nbytes, recv.nbytes)
        try:
            selection = select(collective, nbytes, nranks=self.size, inplace=inplace, root=root, local_size=self.local_size, algorithm=algorithm, override=self.config.algorithm)
        except SyncclError as err:
            raise CommError(f"{label}: {err}", rank=self.rank, op=label) from None
        self._announce(selection, inplace)
        program = selection.program
        average = None
        if op == "avg" and collective.is_combining and (collective is not Collective.REDUCE or self.rank == root):
            # The reduction runs as a sum; the result is divided where it lands.
            average = recv[self.rank * share : (self.rank + 1) * share] if collective is Collective.REDUCE_SCATTER and inplace else recv
        layout = ShareLayout(share, program.spec.chunk_factor)
        fingerprint = call_fingerprint(collective, share, send.dtype, op if collective.is_combining else None, root, inplace, program.name)
        return self._compile(program, layout, {Buffer.INPUT: send, Buffer.OUTPUT: recv}, op=op, label=label, fingerprint=fingerprint, average=average)

    def _run_fused(self, program: Program, layout: Layout, buffers: dict[Buffer, np.ndarray], compute: ComputeFn, *, share: int, label: str) -> None:
        """Run a verified fused Program (a collective with compute steps) over ``buffers``, computing on this thread.

        See :mod:`synccl.runtime._overlap`; :mod:`synccl.overlap` builds the Program, the layout and ``compute``.
        """
        send = buffers[Buffer.INPUT]
        inplace = _same_memory(send, buffers[Buffer.OUTPUT])
        combining = program.collective.is_combining
        fingerprint = call_fingerprint(program.collective, share, send.dtype, "sum" if combining else None, None, inplace, program.name)
        call = self._compile(program, layout, buffers, op="sum", label=label, fingerprint=fingerprint)
        require_native(self.config.engine, call.native is not None, label, self.rank)
        self._launch(call, compute=compute)

    def _announce(self, selection: Selection, inplace: bool) -> None:
        """Log each distinct choice of Program once (``SYNCCL_DEBUG=INFO``)."""
        key = (selection.program.collective, selection.min_bytes, selection.max_bytes, selection.program.name, inplace)
        if key not in self._announced:
            self._announced.add(key)
            log.info("%s", selection.describe(inplace=inplace, engine=self.config.engine))

    def _compile(self, program: Program, layout: Layout, buffers: dict[Buffer, np.ndarray], *, op: str, label: str, fingerprint: Fingerprint, average: np.ndarray | None = None) -> _Call:
        dtype = buffers[Buffer.INPUT].dtype
        located = [self.world.locate(buffers[b]) for b in (Buffer.INPUT, Buffer.OUTPUT)]
        registered = (located[0] is not None, located[1] is not None)
        tiles = tile_count(program, layout.largest_piece, dtype.itemsize, self.config.slice_bytes)
        check_capacity(program, self.config.slots)
        lanes = program.nlanes
        if lanes > self.world.p2p_lane:
            raise CommError(f"{program.name}: uses {lanes} lanes but SYNCCL_MAX_LANES={self.config.max_lanes} leaves {self.world.p2p_lane} for collectives", rank=self.rank, op=label)
        plan = compile_plan(program, self.rank, layout, buffers, tiles=tiles, registered=registered)
        world = self.world
        for steps in plan.channels:
            for step in steps:
                step.bind(
                    world.receiver(step.recv_peer, step.lane) if step.recv_peer is not None else None,
                    world.sender(step.send_peer, step.lane) if step.send_peer is not None else None,
                    world.locate(step.src) if step.lend and step.nbytes >= LEND_MIN_BYTES and step.send_peer in world.local_index else None,
                )
        # Lent data costs a round trip at the end of the call (peers must have read it): only lend large slices.
        plan.lends = any(step.lent_at is not None for steps in plan.channels for step in steps)
        prepare(plan)
        encoded, resync, gpu = None, (), None
        if on_device(buffers):  # GPU buffers: the CUDA engine runs the plan (runtime/_cuda.py)
            self._cuda = self._cuda or CudaEngine(world, self.config)
            gpu = self._cuda.prepare(plan, buffers, op=op, label=label, average=average)
        elif self.config.engine == "native":
            if native.runs_natively(plan):
                encoded = native.encode(plan, buffers, op=op, check=self.config.check_calls, local_index=world.local_index, slots=self.config.slots, slot_stride=world.layout.slot_stride)
            else:
                log.info("%s: connections over MPI run in the Python executor", label)
                # Its shared-memory connections' counters may have moved in native calls since.
                resync = tuple({id(end): end for steps in plan.channels for s in steps for end in (s.receiver, s.sender) if hasattr(end, "resync")}.values())
        # The plan's views keep unregistered user buffers alive: count them against the cache's budget.
        unregistered = {_address(buffers[b]): buffers[b].nbytes for b, where in zip((Buffer.INPUT, Buffer.OUTPUT), located, strict=True) if where is None}
        checked = fingerprint if self.config.check_calls else None
        # A rank that receives every call's messages checks their signatures; ranks of rooted
        # collectives (a root may receive nothing) compare fingerprints on the boards as well.
        receives = any(step.recv_peer is not None for steps in plan.channels for step in steps)
        compares = program.collective.is_rooted or not receives or isinstance(layout, TrafficLayout)
        return _Call(program, plan, checked, signature(fingerprint) if checked else 0, REDUCE_OPS[op], label, average, pinned=sum(unregistered.values()), compares=compares, native=encoded, resync=resync, cuda=gpu)

    def _remember(self, key: tuple, call: _Call) -> None:
        """Keep ``call`` for reuse; drop the oldest calls beyond 32, or beyond the pinned-memory budget.

        The newest call always stays, so a large buffer used repeatedly is never re-prepared.
        """
        old = self._calls.pop(key, None)
        if old is not None:
            self._pinned_bytes -= old.pinned
        self._calls[key] = call
        self._pinned_bytes += call.pinned
        while len(self._calls) > 1 and (len(self._calls) > 32 or self._pinned_bytes > self.config.cache_bytes):
            _, dropped = self._calls.popitem(last=False)
            self._pinned_bytes -= dropped.pinned

    def _launch(self, call: _Call, *, compute: ComputeFn | None = None) -> None:
        if self._closed or self.world.broken is not None:
            self._check_usable(call.label)
        if call.cuda is None and self._cuda is not None:
            self._cuda.synchronize()  # a host call starts once the GPU calls before it have run (calls end in order)
        self._seq += 1
        seq = self._seq
        label = f"{call.label} #{seq}"
        world = self.world
        fingerprint = call.fingerprint
        signature = (call.signature + seq * 0x9E3779B97F4A7C15) & 0x7FFF_FFFF_FFFF_FFFF if fingerprint is not None else 0
        try:
            pending = world.begin_call(seq, fingerprint, label, compare=call.compares)
            if call.cuda is not None:  # queued on the caller's stream; the CUDA engine ends the call once its kernel has run
                self._cuda.launch(call.cuda, signature, label=label, seq=seq, fingerprint=fingerprint, pending=pending)
                return
            if compute is not None:  # a fused Program: this thread runs its compute steps beside the kernel
                run_alongside(call.native, world, signature, self.config.timeout_s, label, seq, compute)
            elif call.native is not None:
                native.run(call.native, world, signature, self.config.timeout_s, label, seq)
            else:
                for end in call.resync:
                    end.resync()
                execute(call.plan, world, call.combine, signature, fingerprint is not None, self.config.timeout_s, label, seq)
                if call.plan.lends:
                    self._drain(call.plan, label, seq)
            world.end_call(seq, fingerprint, label, pending)
        except CommError as err:
            world.fail_from(err, seq)
            raise
        if call.average is not None:
            target = call.average
            if np.issubdtype(target.dtype, np.integer):
                np.floor_divide(target, self.size, out=target)
            else:
                np.divide(target, self.size, out=target, casting="unsafe")

    def _drain(self, plan: RankPlan, label: str, seq: int) -> None:
        """Wait until peers have read everything lent to them in place."""
        senders = {id(s.sender): s.sender for steps in plan.channels for s in steps if s.sender is not None}
        waiter = Waiter(self.world, self.config.timeout_s, lambda: (f"in {label}: waiting for peers to read lent data", None), seq=seq)
        for sender in senders.values():
            while not sender.drained():
                waiter.wait()


@dataclass(frozen=True, slots=True)
class _Call:
    """A prepared call: its Program, this rank's plan over the buffers, and its checks."""

    program: Program
    plan: RankPlan
    fingerprint: Fingerprint | None  # None: calls are not checked (SYNCCL_CHECK_CALLS=0)
    signature: int
    combine: np.ufunc
    label: str
    average: np.ndarray | None
    objects: tuple = ()  # the user's buffer objects the call was prepared for
    pinned: int = 0  # bytes of unregistered user memory the plan keeps alive
    compares: bool = True  # compare fingerprints on the peers' boards (see World.begin_call)
    native: native.NativePlan | None = None  # the plan in the executor kernel's layout (SYNCCL_ENGINE=native)
    resync: tuple = ()  # connection ends to bring up to date before the Python executor runs the call
    cuda: CudaPlan | None = None  # the plan on the GPU (buffers in device memory)


def _engine(requested: str, rank: int) -> str:
    """The engine that runs this rank's plans: the native one is built (or loaded) now, at ``init``.

    ``auto`` falls back to the Python executor when the kernel cannot be built here, saying why.
    """
    if requested == "python":
        return "python"
    from synccl.runtime._host_build import host_library

    try:
        host_library()
    except KernelBuildError as err:
        if requested == "native":
            raise CommError(f"init: SYNCCL_ENGINE=native: {err}", rank=rank) from None
        log.warning("rank %d: the native engine is unavailable (%s); using the Python executor", rank, err)
        return "python"
    return "native"


def _settings(config: RuntimeConfig) -> str:
    return ", ".join(f"{name}={getattr(config, name)!r}" for name in config.__dataclass_fields__)


def _identical(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (_address(a) == _address(b) and a.size == b.size)


def _slot(buffer: Any, start: int, count: int) -> Any:
    """Elements ``[start, start+count)`` of a buffer, as the same kind of object."""
    flat = buffer.view(-1) if is_torch(buffer) else buffer.reshape(-1)
    return flat[start : start + count]
