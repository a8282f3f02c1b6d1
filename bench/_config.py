"""What one ``synccl bench`` run measures: the collective, sizes, data type, op and backends."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from synccl.collectives import Collective, ReduceOp, library, parse_collective
from synccl.sim import size_range
from synccl.units import nccl_type_name, parse_dtype

__all__ = [
    "BACKENDS",
    "COLLECTIVES",
    "CUDA_BACKENDS",
    "DEVICES",
    "BenchConfig",
    "parse_dtype",
    "nccl_type_name",
]

#: The collectives ``synccl bench`` measures.
COLLECTIVES = (Collective.ALL_REDUCE, Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_TO_ALL, Collective.BROADCAST)
#: Backends the benchmark can run: synccl's runtime (directly with the engine SYNCCL_ENGINE
#: selects, or with a named engine: "synccl-native", "synccl-python"; or through
#: torch.distributed as "torch-synccl"), torch.distributed's gloo and (on GPUs) NCCL, MPI through mpi4py.
BACKENDS = ("synccl", "synccl-native", "synccl-python", "torch-synccl", "gloo", "nccl", "mpi")
#: Where the buffers live: host memory, or each rank's GPU (the local rank's device).
DEVICES = ("cpu", "cuda")
#: The backends that run on GPU buffers (synccl's CUDA engine, through its API or torch's; NCCL).
CUDA_BACKENDS = ("synccl", "torch-synccl", "nccl")
_OPS = ("sum", "prod", "min", "max", "avg")
_AVERAGES = ("rank0", "avg", "min", "max")

Average = Literal["rank0", "avg", "min", "max"]


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """One benchmark run: a sweep of one collective over sizes, timed on every backend in turn.

    Parameters
    ----------
    collective : Collective or str
        ``all_reduce``, ``all_gather``, ``reduce_scatter``, ``all_to_all`` or ``broadcast`` (any spelling
        :func:`~synccl.collectives.parse_collective` accepts).
    min_bytes, max_bytes, factor : int
        Sizes ``min_bytes, min_bytes*factor, ...`` up to ``max_bytes`` (nccl-tests ``-b -e -f``), in
        nccl-tests' convention (see :func:`~synccl.bench.layout`).
    iters, warmup : int
        Timed and untimed iterations per size and mode.
    dtype : str
        Element type (see :func:`parse_dtype`); stored by its numpy name.
    op : str
        ``sum``, ``prod``, ``min``, ``max`` or ``avg`` (reductions only).
    root : int
        Root rank of broadcast.
    algorithm : str or None
        synccl library algorithm (checked against :mod:`synccl.collectives.library`); ``None`` lets
        the runtime choose by size.
    xml : str or None
        An MSCCL XML file the ``synccl`` backend imports with :func:`synccl.load_xml` before
        measuring; the runtime then uses its Program for the calls it matches (its collective,
        rank count and mode: in place or out of place). Excludes ``algorithm``.
    registered : bool
        synccl buffers from ``comm.empty`` (registered shared memory) instead of ordinary numpy arrays.
    check : bool
        Validate one extra run per size and mode against the numpy reference (nccl-tests ``-c``).
    average : str
        How the per-rank times combine (nccl-tests ``-a``): ``rank0``, ``avg``, ``min`` or ``max``.
    backends : tuple of str
        Backends in the order run; ratios in the comparison are the first one over each other one.
    json_path, plot_path : str or None
        Where rank 0 writes the records and the bus-bandwidth plot.
    progress : bool
        Show ``[all_reduce synccl] 16MiB (7/12)`` on stderr while sweeping.
    repeat : int
        Sweeps per backend, at least 1. The backends take turns within each sweep (sweep 1 on
        every backend, then sweep 2 ...), so that slow phases of a noisy machine hit them alike;
        with more than one, each backend's table shows the median time of each size and mode, and a
        repeat summary adds the fastest and slowest sweep and the ratios between backends.
    device : str
        ``cpu`` (host buffers) or ``cuda`` (each rank's buffers on GPU ``local rank``, calls
        timed until the device has finished them); ``cuda`` takes the backends of
        :data:`CUDA_BACKENDS` and ``nccl`` needs it.

    Raises
    ------
    ValueError
        If an option is out of range or unknown.

    Examples
    --------
    >>> config = BenchConfig("allreduce", min_bytes=4096, max_bytes=65536, factor=4, dtype="float")
    >>> config.collective.value, config.sizes, config.dtype
    ('all_reduce', (4096, 16384, 65536), 'float32')
    >>> BenchConfig.from_json(config.to_json()) == config
    True
    """

    collective: Collective
    min_bytes: int = 32 << 20
    max_bytes: int = 32 << 20
    factor: int = 2
    iters: int = 20
    warmup: int = 5
    dtype: str = "float32"
    op: ReduceOp = "sum"
    root: int = 0
    algorithm: str | None = None
    xml: str | None = None
    registered: bool = False
    check: bool = True
    average: Average = "max"
    backends: tuple[str, ...] = field(default=("synccl",))
    json_path: str | None = None
    plot_path: str | None = None
    progress: bool = False
    repeat: int = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        coll = parse_collective(self.collective)
        if coll not in COLLECTIVES:
            raise ValueError(f"bench: cannot benchmark {coll.value!r}; valid: {', '.join(c.value for c in COLLECTIVES)}")
        object.__setattr__(self, "collective", coll)
        if self.algorithm is not None:
            library.get(self.algorithm, coll)
        if self.xml is not None and (self.algorithm is not None or not any(b.startswith("synccl") for b in self.backends)):
            raise ValueError(f"bench: --xml {self.xml!r} applies to the 'synccl' backend and excludes --algorithm")
        object.__setattr__(self, "dtype", parse_dtype(self.dtype).name)
        object.__setattr__(self, "backends", tuple(self.backends))
        size_range(self.min_bytes, self.max_bytes, factor=self.factor)
        if self.repeat < 1:
            raise ValueError(f"bench: --repeat must be >= 1, got {self.repeat!r}")
        if self.iters < 1 or self.warmup < 0:
            raise ValueError(f"bench: need iters >= 1 and warmup >= 0, got {self.iters!r} and {self.warmup!r}")
        if self.op not in _OPS:
            raise ValueError(f"bench: unknown op {self.op!r}; valid: {', '.join(_OPS)}")
        if self.average not in _AVERAGES:
            raise ValueError(f"bench: unknown average {self.average!r}; valid: {', '.join(_AVERAGES)}")
        if self.root < 0:
            raise ValueError(f"bench: root must be >= 0, got {self.root!r}")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown or not self.backends or len(set(self.backends)) != len(self.backends):
            raise ValueError(f"bench: backends must be distinct names from {', '.join(BACKENDS)}, got {','.join(self.backends)!r}")
        if self.device not in DEVICES:
            raise ValueError(f"bench: unknown device {self.device!r}; valid: {', '.join(DEVICES)}")
        if self.device == "cuda":
            host_only = [b for b in self.backends if b not in CUDA_BACKENDS]
            if host_only:
                raise ValueError(f"bench: backend {host_only[0]!r} runs on host buffers; with --device cuda use {', '.join(CUDA_BACKENDS)}")
            if self.registered:
                raise ValueError("bench: --registered (synccl's shared host memory) does not apply to --device cuda")
        elif "nccl" in self.backends:
            raise ValueError("bench: backend 'nccl' runs on GPU buffers; add --device cuda")

    @property
    def sizes(self) -> tuple[int, ...]:
        """The message sizes in bytes, ascending."""
        return tuple(size_range(self.min_bytes, self.max_bytes, factor=self.factor))

    @property
    def numpy_dtype(self) -> np.dtype:
        """The element type as a numpy dtype."""
        return parse_dtype(self.dtype)

    @property
    def reduces(self) -> bool:
        """Whether the collective combines values with :attr:`op`."""
        return self.collective.is_combining

    def to_json(self) -> str:
        """This configuration as a JSON object (read back with :meth:`from_json`)."""
        data = asdict(self)
        data["collective"] = self.collective.value
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BenchConfig:
        """The configuration :meth:`to_json` wrote."""
        data = json.loads(text)
        data["backends"] = tuple(data["backends"])
        return cls(**data)
