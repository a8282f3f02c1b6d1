"""The benchmark proper: one timing loop and one validation, shared by every backend.

Runs inside an MPI job (``mpiexec -n N``): every rank calls :func:`run_bench`; rank 0 prints.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np

from synccl.bench._backends import Backend, make_backend
from synccl.bench._config import BenchConfig
from synccl.bench._layout import Layout, count_wrong, expected_output, layout, rank_input
from synccl.bench._report import Record, comparison, footer, header, medians, plot, program_note, repeat_summary, row, write_json
from synccl.collectives import Collective
from synccl.sim import busbw_factor
from synccl.units import format_size

if TYPE_CHECKING:
    from mpi4py import MPI

__all__ = ["run_bench", "sweep", "allocate", "measure"]

logger = logging.getLogger(__name__)


def run_bench(config: BenchConfig) -> list[Record]:
    """Run ``config`` on every backend in turn, ``config.repeat`` times; every rank of the MPI job must call it.

    With one sweep, rank 0 prints nccl-tests' table for each backend as sizes complete, then
    (with several backends) a comparison. With ``config.repeat`` sweeps the backends take
    turns within each sweep (sweep 1 on every backend, then sweep 2 ...); rank 0 then prints, per
    backend, one table of the median times (:func:`~synccl.bench._report.medians`), the comparison
    of the medians and the repeat summary (:func:`~synccl.bench._report.repeat_summary`). With
    ``config.xml``, a note under synccl's table names the Program that ran each size and mode.
    Rank 0 writes every record to ``config.json_path`` and draws ``config.plot_path`` (medians).

    Parameters
    ----------
    config : BenchConfig
        What to measure.

    Returns
    -------
    list of Record
        Every measurement (the same on every rank), sweep by sweep, backend by backend, size by
        size, out-of-place before in-place.

    Raises
    ------
    ValueError
        If the root is not a rank.
    SyncclError
        If a backend cannot start (e.g. ``synccl`` without the runtime).

    Examples
    --------
    >>> recs = run_bench(BenchConfig("all_reduce", min_bytes=64, max_bytes=64, iters=1, warmup=0, backends=("mpi",)))
    ... # doctest: +ELLIPSIS
    # synccl bench: mpi (...)
    ...
    # Collective test concluded: all_reduce (mpi)
    >>> [(r.size_bytes, r.inplace, r.wrong) for r in recs]
    [(64, False, 0), (64, True, 0)]
    """
    from mpi4py import MPI

    control = MPI.COMM_WORLD.Dup()
    try:
        rank, nranks = control.Get_rank(), control.Get_size()
        if config.collective is Collective.BROADCAST and config.root >= nranks:
            raise ValueError(f"bench: root {config.root} is not a rank of {nranks}")
        devices = control.allgather((rank, os.getpid(), socket.gethostname()))
        live = rank == 0 and config.repeat == 1  # one sweep: print each table as its sizes complete
        records: list[Record] = []
        versions: dict[str, str] = {}
        for repeat in range(config.repeat):
            for name in config.backends:
                backend = make_backend(name, control, config)
                try:
                    versions[name] = backend.version
                    if live:
                        print(header(config, backend=name, version=backend.version, nranks=nranks, devices=devices), flush=True)
                    done = sweep(backend, config, control, on_row=_printer(live), repeat=repeat)
                finally:
                    backend.close()
                if live:
                    print(_table_end(config, done, name), flush=True)
                records += done
        if rank == 0:
            _finish(config, records, versions=versions, nranks=nranks, devices=devices)
        return records
    finally:
        control.Free()


def _printer(show: bool) -> Callable[[Record, Record], None] | None:
    if not show:
        return None
    return lambda oop, ip: print(row(oop, ip), flush=True)


def _table_end(config: BenchConfig, records: list[Record], backend: str) -> str:
    """The lines after a backend's rows: which Program ran what (with ``--xml``), then nccl-tests' footer."""
    end = footer(records, collective=config.collective.value, backend=backend)
    if config.xml is not None and any(r.program is not None for r in records):
        return program_note(records, xml=config.xml) + "\n" + end
    return end


def _finish(config: BenchConfig, records: list[Record], *, versions: dict[str, str], nranks: int, devices: list[tuple[int, int, str]]) -> None:
    shown = records
    if config.repeat > 1:
        shown = medians(records)
        for name in config.backends:
            mine = [r for r in shown if r.backend == name]
            print(header(config, backend=name, version=versions[name], nranks=nranks, devices=devices), flush=True)
            for oop, ip in zip(mine[::2], mine[1::2], strict=True):
                print(row(oop, ip), flush=True)
            print(_table_end(config, mine, name), flush=True)
    if len(config.backends) > 1:
        print(comparison(shown), flush=True)
    if config.repeat > 1:
        print(repeat_summary(records), flush=True)
    if config.json_path:
        write_json(records, config.json_path)
    if config.plot_path:
        plot(shown, config.plot_path)


def sweep(
    backend: Backend,
    config: BenchConfig,
    control: MPI.Comm,
    *,
    on_row: Callable[[Record, Record], None] | None = None,
    repeat: int = 0,
) -> list[Record]:
    """Measure every size of ``config`` on ``backend``, out of place then in place; collective.

    Parameters
    ----------
    backend : Backend
        The backend to time.
    config : BenchConfig
        Sizes, data type, op and iteration counts.
    control : MPI.Comm
        Communicator for barriers and for combining times and error counts.
    on_row : callable, optional
        Called with the out-of-place and in-place records of each size as they complete.
    repeat : int
        Which sweep this is (0-based), stamped on the records and shown by the progress line.

    Returns
    -------
    list of Record
        Two records per size.

    Examples
    --------
    >>> from mpi4py import MPI
    >>> config = BenchConfig("broadcast", min_bytes=1024, max_bytes=4096, iters=2, warmup=1, backends=("mpi",))
    >>> backend = make_backend("mpi", MPI.COMM_WORLD, config)
    >>> [(r.size_bytes, r.inplace, r.wrong) for r in sweep(backend, config, MPI.COMM_WORLD)][:3]
    [(1024, False, 0), (1024, True, 0), (2048, False, 0)]
    >>> backend.close()
    """
    records: list[Record] = []
    sizes = config.sizes
    itemsize = config.numpy_dtype.itemsize
    buffers = allocate(backend, layout(config.collective, sizes[-1], backend.size, itemsize), config.numpy_dtype)
    progress = config.progress and backend.rank == 0
    label = f"{config.collective.value} {backend.name}" + (f" sweep {repeat + 1}/{config.repeat}" if config.repeat > 1 else "")
    for i, size in enumerate(sizes, start=1):
        if progress:
            sys.stderr.write(f"\r[{label}] {format_size(size)} ({i}/{len(sizes)})\x1b[K")
            sys.stderr.flush()
        lay = layout(config.collective, size, backend.size, itemsize)
        pair = [measure(backend, config, control, lay, buffers, inplace=inplace, repeat=repeat) for inplace in (False, True)]
        logger.info("%s %s %s: %.2f us out of place, %.2f us in place", config.collective.value, backend.name, format_size(size), pair[0].time_us, pair[1].time_us)
        if progress:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        if on_row is not None:
            on_row(*pair)
        records += pair
    return records


def allocate(backend: Backend, lay: Layout, dtype: np.dtype) -> tuple[Any, Any]:
    """A send and a receive buffer for ``lay`` and every smaller size, as nccl-tests allocates them.

    Collective (registered synccl memory is allocated by every rank together). In-place calls
    use the larger of the two.

    Examples
    --------
    >>> from mpi4py import MPI
    >>> backend = make_backend("mpi", MPI.COMM_WORLD, BenchConfig("reduce_scatter", backends=("mpi",)))
    >>> [len(b) for b in allocate(backend, layout(Collective.REDUCE_SCATTER, 4096, 1, 4), np.dtype(np.float32))]
    [1024, 1024]
    >>> backend.close()
    """
    return backend.empty(lay.send_count, dtype), backend.empty(lay.recv_count, dtype)


def measure(backend: Backend, config: BenchConfig, control: MPI.Comm, lay: Layout, buffers: tuple[Any, Any], *, inplace: bool, repeat: int = 0) -> Record:
    """Time ``config.iters`` back-to-back calls at one size, then validate one more; collective.

    The call works on the leading elements of ``buffers`` (from :func:`allocate`). Every rank
    warms up, meets at a barrier, times the calls with the wall clock and averages them; the
    per-rank averages combine as ``config.average`` says (the maximum by default). Validation
    refills the input with :func:`~synccl.bench.rank_input` data, runs once and counts
    mismatches against the numpy reference over all ranks. The record names the Program the
    backend ran, where it has one (:meth:`Backend.selection`), and the sweep ``repeat``.

    Returns
    -------
    Record
        The measurement.

    Examples
    --------
    >>> from mpi4py import MPI
    >>> config = BenchConfig("all_gather", iters=2, warmup=1, dtype="bfloat16", backends=("mpi",))
    >>> backend = make_backend("mpi", MPI.COMM_WORLD, config)
    >>> lay = layout(config.collective, 4096, backend.size, 2)
    >>> rec = measure(backend, config, MPI.COMM_WORLD, lay, allocate(backend, lay, config.numpy_dtype), inplace=True)
    >>> rec.size_bytes, rec.dtype, rec.wrong, rec.time_us > 0
    (4096, 'bfloat16', 0, True)
    >>> backend.close()
    """
    dtype, rank = config.numpy_dtype, backend.rank
    send_all, recv_all = buffers
    if inplace:
        whole = recv_all if len(recv_all) >= lay.inplace_count else send_all
        recv = whole[: lay.inplace_count]
        send = recv[lay.input_slot(rank)]
    else:
        send, recv = send_all[: lay.send_count], recv_all[: lay.recv_count]
    data = rank_input(lay, rank, dtype, config.op)
    backend.write(send, data)

    def call() -> Any:
        return backend.run(config.collective, send, recv, inplace=inplace, op=config.op, root=config.root)

    seconds = _timed(call, backend.synchronize, config, control)
    wrong = None
    if config.check:
        if not inplace:
            backend.clear(recv)
        backend.write(send, data)
        got = backend.read(call())
        want = expected_output(lay, rank, dtype, config.op, config.root)
        wrong = int(control.allreduce(count_wrong(got, want, op=config.op, reduces=config.reduces)))
    algbw = lay.size_bytes / seconds / 1e9 if seconds > 0 else 0.0
    synccl = backend.name.startswith("synccl")
    selection = backend.selection(config.collective, send, recv, inplace=inplace, root=config.root)
    return Record(
        backend=backend.name,
        collective=config.collective.value,
        nranks=backend.size,
        size_bytes=lay.size_bytes,
        count=lay.count,
        dtype=config.dtype,
        op=config.op if config.reduces else None,
        root=config.root if config.collective is Collective.BROADCAST else None,
        inplace=inplace,
        time_us=seconds * 1e6,
        algbw_gbps=algbw,
        busbw_gbps=algbw * busbw_factor(config.collective, backend.size),
        wrong=wrong,
        registered=config.registered if synccl else None,
        algorithm=config.algorithm if synccl else None,
        program=selection.program.name if selection else None,
        program_source=selection.source if selection else None,
        repeat=repeat,
    )


def _timed(call: Callable[[], Any], synchronize: Callable[[], None], config: BenchConfig, control: MPI.Comm) -> float:
    from mpi4py import MPI

    for _ in range(config.warmup):
        call()
    synchronize()
    control.Barrier()
    start = perf_counter()
    for _ in range(config.iters):
        call()
    synchronize()  # GPU calls are queued: the clock stops when the device has run them, as nccl-tests' does
    local = (perf_counter() - start) / config.iters
    if config.average == "rank0":
        return float(control.bcast(local, root=0))
    if config.average == "avg":
        return float(control.allreduce(local, op=MPI.SUM)) / control.Get_size()
    return float(control.allreduce(local, op=MPI.MIN if config.average == "min" else MPI.MAX))
