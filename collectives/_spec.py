"""Collective specifications at chunk level: who holds what at the start, what each output must combine.

A rank's buffers are divided into equal chunks. The input chunk ``k`` of rank ``r`` starts
holding the *contribution* ``(r, k)``. At the end, every constrained output chunk must hold
exactly a given set of contributions: one for non-combining collectives (a copy), several for
combining ones (a reduction). ``chunk_factor`` (MSCCLang's name) says how many chunks make one
rank's share; buffer sizes follow the table in :meth:`CollectiveSpec.input_chunks`.

In-place collectives alias the input and output buffers the way NCCL does: allgather's input is
the rank's slot of the output, reduce-scatter's output is the rank's slot of the input, and the
other collectives use one buffer for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from synccl.exceptions import CollectiveError

__all__ = ["Collective", "Buffer", "Contribution", "CollectiveSpec", "ChunkLocations", "parse_collective"]


class Collective(str, Enum):
    """The collectives synccl knows, by their canonical snake_case names."""

    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_REDUCE = "all_reduce"
    ALL_TO_ALL = "all_to_all"
    BROADCAST = "broadcast"
    REDUCE = "reduce"
    GATHER = "gather"
    SCATTER = "scatter"

    @property
    def is_combining(self) -> bool:
        """Whether outputs combine several contributions (a reduction)."""
        return self in (Collective.REDUCE_SCATTER, Collective.ALL_REDUCE, Collective.REDUCE)

    @property
    def is_rooted(self) -> bool:
        """Whether the collective has a root rank."""
        return self in (Collective.BROADCAST, Collective.REDUCE, Collective.GATHER, Collective.SCATTER)


_ALIASES = {
    "allgather": Collective.ALL_GATHER,
    "reducescatter": Collective.REDUCE_SCATTER,
    "allreduce": Collective.ALL_REDUCE,
    "alltoall": Collective.ALL_TO_ALL,
}


def parse_collective(name: str | Collective) -> Collective:
    """Accept canonical names and the usual spellings (``allreduce``, ``all-reduce``, ``AllReduce``).

    >>> parse_collective("AllGather")
    <Collective.ALL_GATHER: 'all_gather'>
    >>> parse_collective("reduce-scatter").value
    'reduce_scatter'
    """
    if isinstance(name, Collective):
        return name
    key = str(name).strip().lower().replace("-", "_")
    try:
        return Collective(key)
    except ValueError:
        pass
    if key.replace("_", "") in _ALIASES:
        return _ALIASES[key.replace("_", "")]
    valid = ", ".join(c.value for c in Collective)
    raise CollectiveError(f"collective: unknown collective {name!r}; valid: {valid}")


class Buffer(str, Enum):
    """A rank's buffers, as in MSCCL: input, output and scratch."""

    INPUT = "input"
    OUTPUT = "output"
    SCRATCH = "scratch"


#: One rank's input chunk ``(rank, index)`` -- the atom that outputs are made of.
Contribution = tuple[int, int]


@dataclass(frozen=True, slots=True)
class CollectiveSpec:
    """What a collective must do, at chunk granularity.

    Parameters
    ----------
    collective : Collective
        Which collective.
    nranks : int
        Number of ranks, at least 1.
    chunk_factor : int
        Chunks per rank share (see :meth:`input_chunks`), at least 1.
    inplace : bool
        Whether input and output alias as in NCCL's in-place calls.
    root : int or None
        The root of rooted collectives; ``None`` for the others.

    Examples
    --------
    >>> spec = CollectiveSpec(Collective.ALL_GATHER, nranks=4)
    >>> spec.input_chunks, spec.output_chunks
    (1, 4)
    >>> spec.postcondition(2)[3]
    frozenset({(3, 0)})
    """

    collective: Collective
    nranks: int
    chunk_factor: int = 1
    inplace: bool = False
    root: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "collective", parse_collective(self.collective))
        name = self.collective.value
        if not isinstance(self.nranks, int) or self.nranks < 1:
            raise CollectiveError(f"{name}: nranks must be an integer >= 1, got {self.nranks!r}")
        if not isinstance(self.chunk_factor, int) or self.chunk_factor < 1:
            raise CollectiveError(f"{name}: chunk_factor must be an integer >= 1, got {self.chunk_factor!r}")
        if self.collective.is_rooted:
            if self.root is None:
                object.__setattr__(self, "root", 0)
            elif not isinstance(self.root, int) or not 0 <= self.root < self.nranks:
                raise CollectiveError(f"{name}: root must be a rank in 0..{self.nranks - 1}, got {self.root!r}")
        elif self.root is not None:
            raise CollectiveError(f"{name}: takes no root, got root={self.root!r}")

    # -- buffer sizes ------------------------------------------------------------
    @property
    def input_chunks(self) -> int:
        """Chunks in every rank's input buffer.

        ``c`` = chunk_factor, ``n`` = nranks:

        ============== ====== ======
        collective      input output
        ============== ====== ======
        all_gather      c      n*c
        reduce_scatter  n*c    c
        all_reduce      c      c
        all_to_all      n*c    n*c
        broadcast       c      c
        reduce          c      c
        gather          c      n*c
        scatter         n*c    c
        ============== ====== ======
        """
        c, n = self.chunk_factor, self.nranks
        return n * c if self.collective in (Collective.REDUCE_SCATTER, Collective.ALL_TO_ALL, Collective.SCATTER) else c

    @property
    def output_chunks(self) -> int:
        """Chunks in every rank's output buffer (see :meth:`input_chunks`)."""
        c, n = self.chunk_factor, self.nranks
        return n * c if self.collective in (Collective.ALL_GATHER, Collective.ALL_TO_ALL, Collective.GATHER) else c

    @property
    def size_chunks(self) -> int:
        """Chunks in the buffer whose byte size nccl-tests reports as the message size.

        That is the larger of input and output: allgather's output, reduce-scatter's input,
        the single buffer of allreduce, broadcast and reduce, all-to-all's buffer, and the
        root's full buffer of gather and scatter.
        """
        return max(self.input_chunks, self.output_chunks)

    def resolve(self, rank: int, buffer: Buffer, index: int) -> tuple[Buffer, int]:
        """Map a position of ``rank``'s buffers to the storage it names, following in-place aliasing.

        >>> CollectiveSpec(Collective.ALL_GATHER, 4, inplace=True).resolve(2, Buffer.INPUT, 0)
        (<Buffer.OUTPUT: 'output'>, 2)
        """
        if not self.inplace or buffer is Buffer.SCRATCH:
            return buffer, index
        c = self.chunk_factor
        if self.collective is Collective.ALL_GATHER:
            return (Buffer.OUTPUT, index + rank * c) if buffer is Buffer.INPUT else (buffer, index)
        if self.collective is Collective.REDUCE_SCATTER:
            return (Buffer.INPUT, index + rank * c) if buffer is Buffer.OUTPUT else (buffer, index)
        if self.collective is Collective.GATHER:
            # NCCL-style in-place gather at the root: the input is the root's slot of the output.
            return (Buffer.OUTPUT, index + rank * c) if buffer is Buffer.INPUT else (buffer, index)
        if self.collective is Collective.SCATTER:
            return (Buffer.INPUT, index + rank * c) if buffer is Buffer.OUTPUT else (buffer, index)
        return Buffer.INPUT, index

    # -- pre- and postconditions ------------------------------------------------------
    def precondition(self, rank: int) -> dict[int, Contribution]:
        """Input chunks that hold data at the start: ``index -> (rank, index)``.

        Rooted collectives whose data starts at the root (broadcast, scatter) give the other
        ranks no meaningful input.
        """
        self._check_rank(rank)
        if self.collective in (Collective.BROADCAST, Collective.SCATTER) and rank != self.root:
            return {}
        return {k: (rank, k) for k in range(self.input_chunks)}

    def postcondition(self, rank: int) -> dict[int, frozenset[Contribution]]:
        """Output chunks constrained at the end: ``index -> contributions it must combine``.

        The sets :meth:`postcondition_ranges` describes, written out.
        """
        return {idx: frozenset((r, k) for r in ranks) for idx, (ranks, k) in self.postcondition_ranges(rank).items()}

    def postcondition_ranges(self, rank: int) -> dict[int, tuple[range, int]]:
        """The postcondition in compact form: ``index -> (ranks, k)``, the contributions ``(r, k)`` of ``r`` in ``ranks``.

        Every collective's output chunk combines one input index of a run of ranks (all of
        them for a reduction, one for a copy), so this form stays small at any scale: a
        reduction over 1,024 ranks is one ``range``, where :meth:`postcondition` spells out
        1,024 pairs. The verifier checks this form.

        >>> CollectiveSpec(Collective.ALL_REDUCE, nranks=4).postcondition_ranges(0)
        {0: (range(0, 4), 0)}
        """
        self._check_rank(rank)
        n, c, coll = self.nranks, self.chunk_factor, self.collective
        everyone = range(n)
        if coll is Collective.ALL_GATHER or (coll is Collective.GATHER and rank == self.root):
            return {i * c + k: (range(i, i + 1), k) for i in range(n) for k in range(c)}
        if coll is Collective.REDUCE_SCATTER:
            return {k: (everyone, rank * c + k) for k in range(c)}
        if coll is Collective.ALL_REDUCE or (coll is Collective.REDUCE and rank == self.root):
            return {k: (everyone, k) for k in range(c)}
        if coll is Collective.ALL_TO_ALL:
            return {i * c + k: (range(i, i + 1), rank * c + k) for i in range(n) for k in range(c)}
        if coll is Collective.BROADCAST:
            return {k: (range(self.root, self.root + 1), k) for k in range(c)}
        if coll is Collective.SCATTER:
            return {k: (range(self.root, self.root + 1), rank * c + k) for k in range(c)}
        return {}  # REDUCE and GATHER constrain only the root's output

    def describe(self) -> str:
        """A short human label, e.g. ``'all_gather n=8 c=1 out-of-place'``."""
        root = f" root={self.root}" if self.root is not None else ""
        place = "in-place" if self.inplace else "out-of-place"
        return f"{self.collective.value} n={self.nranks} c={self.chunk_factor}{root} {place}"

    def _check_rank(self, rank: int) -> None:
        if not isinstance(rank, int) or not 0 <= rank < self.nranks:
            raise CollectiveError(f"{self.collective.value}: no rank {rank!r} (ranks are 0..{self.nranks - 1})")


class ChunkLocations:
    """An integer for every chunk of storage of every rank, in-place aliasing resolved.

    ``base(rank, buffer) + index`` is where ``buffer[index]`` of ``rank`` lives: aliasing
    shifts a whole buffer onto another by one offset (see :meth:`CollectiveSpec.resolve`), so
    one addition per chunk does what ``resolve`` does, and integers make smaller and faster
    dictionary keys than ``(rank, buffer, index)`` tuples -- lowering and verification keep
    one entry per chunk of every rank, millions at a thousand ranks.

    Parameters
    ----------
    spec : CollectiveSpec
        Gives the input and output sizes and the aliasing.
    scratch : sequence of int
        Every rank's scratch size in chunks.

    Examples
    --------
    >>> locations = ChunkLocations(CollectiveSpec(Collective.ALL_GATHER, 4, inplace=True), [0] * 4)
    >>> locations.base(2, Buffer.INPUT) + 0 == locations.base(2, Buffer.OUTPUT) + 2
    True
    >>> locations.describe(locations.base(2, Buffer.INPUT))
    (2, <Buffer.OUTPUT: 'output'>, 2)
    """

    _STORAGE = (Buffer.INPUT, Buffer.OUTPUT, Buffer.SCRATCH)

    def __init__(self, spec: CollectiveSpec, scratch: list[int] | tuple[int, ...]) -> None:
        self.stride = max(spec.input_chunks, spec.output_chunks, *scratch)
        #: ``bases[rank][buffer]`` is :meth:`base` as a table, for loops that run per chunk.
        self.bases: list[dict[Buffer, int]] = []
        for rank in range(spec.nranks):
            bases = {}
            for buffer in self._STORAGE:
                storage, offset = spec.resolve(rank, buffer, 0)
                bases[buffer] = (rank * 3 + self._STORAGE.index(storage)) * self.stride + offset
            self.bases.append(bases)

    def base(self, rank: int, buffer: Buffer) -> int:
        """The location of ``rank``'s ``buffer[0]``."""
        return self.bases[rank][buffer]

    def describe(self, location: int) -> tuple[int, Buffer, int]:
        """The ``(rank, buffer, index)`` of the storage a location names."""
        rank_storage, index = divmod(location, self.stride)
        rank, storage = divmod(rank_storage, 3)
        return rank, self._STORAGE[storage], index

    def table(self, entries: int) -> list | _NoneForMissing:
        """A table ``t[location]`` that holds None until set, for ``entries`` locations expected to be used.

        A list over every location when they are not many more than ``entries`` (indexing a list
        costs a third of a dictionary lookup, and at a thousand ranks the tables have millions of
        entries); else a dictionary that answers None for locations never set, so that a few
        operations on huge buffers do not allocate a slot for every chunk.

        >>> locations = ChunkLocations(CollectiveSpec(Collective.ALL_GATHER, 4), [0] * 4)
        >>> t = locations.table(8)
        >>> t[locations.base(1, Buffer.OUTPUT) + 2] is None
        True
        """
        size = len(self.bases) * len(self._STORAGE) * self.stride
        if size <= 4 * entries + 4096:
            return [None] * size
        return _NoneForMissing()


class _NoneForMissing(dict):
    """A dictionary whose missing keys read as None (see :meth:`ChunkLocations.table`)."""

    def __missing__(self, key: int) -> None:
        return None
