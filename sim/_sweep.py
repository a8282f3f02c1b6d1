"""Simulations over many message sizes and several Programs (for tables and plots)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from synccl.collectives import Program
from synccl.exceptions import CollectiveError, ProgramError
from synccl.sim._engine import simulate
from synccl.sim._result import SimResult
from synccl.topologies import Topology

__all__ = ["size_range", "sweep", "compare"]


def size_range(min_bytes: int, max_bytes: int, *, factor: int = 2) -> list[int]:
    """Message sizes from ``min_bytes`` up to ``max_bytes``, each ``factor`` times the last.

    The sizes nccl-tests runs for ``-b min_bytes -e max_bytes -f factor``.

    Parameters
    ----------
    min_bytes, max_bytes : int
        First and largest size, ``0 < min_bytes <= max_bytes``.
    factor : int
        Growth factor, at least 2.

    Returns
    -------
    list of int
        The sizes, ascending.

    Raises
    ------
    CollectiveError
        If the bounds or the factor are out of range.

    Examples
    --------
    >>> size_range(1024, 8192)
    [1024, 2048, 4096, 8192]
    """
    if not isinstance(min_bytes, int) or not isinstance(max_bytes, int) or not 0 < min_bytes <= max_bytes:
        raise CollectiveError(f"size_range: need integers 0 < min_bytes <= max_bytes, got {min_bytes!r} and {max_bytes!r}")
    if not isinstance(factor, int) or factor < 2:
        raise CollectiveError(f"size_range: factor must be an integer >= 2, got {factor!r}")
    sizes = [min_bytes]
    while sizes[-1] * factor <= max_bytes:
        sizes.append(sizes[-1] * factor)
    return sizes


def sweep(program: Program, topology: Topology, sizes: Iterable[int], *, local_cost: bool = True) -> list[SimResult]:
    """:func:`~synccl.sim.simulate` ``program`` at every size in ``sizes``, in order.

    Parameters
    ----------
    program : Program
        The algorithm.
    topology : Topology
        The network.
    sizes : iterable of int
        Message sizes in bytes (see :func:`size_range`).
    local_cost : bool
        Passed to :func:`~synccl.sim.simulate`.

    Returns
    -------
    list of SimResult
        One result per size.

    Examples
    --------
    >>> from synccl.collectives import Buffer, Channel, Collective, CollectiveSpec, Instruction, Op, Program, RankProgram, Slice
    >>> from synccl.topologies import TopologyBuilder
    >>> b = TopologyBuilder()
    >>> _ = b.add_rank(), b.add_rank()
    >>> b.add_link(0, 1, bandwidth=10.0, latency=2.0, kind="nvlink")
    >>> chunk = Slice(Buffer.INPUT, 0)
    >>> prog = Program("bcast", CollectiveSpec(Collective.BROADCAST, 2, inplace=True), (
    ...     RankProgram(0, (Channel(0, 1, None, (Instruction(Op.SEND, src=chunk),)),)),
    ...     RankProgram(1, (Channel(0, None, 0, (Instruction(Op.RECV, dst=chunk),)),))))
    >>> [r.time_us for r in sweep(prog, b.build("pair"), [10_000, 20_000])]
    [3.0, 4.0]
    """
    return [simulate(program, topology, size, local_cost=local_cost) for size in sizes]


def compare(
    programs: Mapping[str, Program] | Iterable[Program],
    topology: Topology,
    sizes: Iterable[int],
    *,
    local_cost: bool = True,
) -> dict[str, list[SimResult]]:
    """:func:`sweep` several Programs over the same sizes.

    Parameters
    ----------
    programs : mapping of str to Program, or iterable of Program
        The Programs, labelled by the mapping's keys or else by their names.
    topology : Topology
        The network.
    sizes : iterable of int
        Message sizes in bytes.
    local_cost : bool
        Passed to :func:`~synccl.sim.simulate`.

    Returns
    -------
    dict of str to list of SimResult
        Label -> one result per size, in the order the Programs were given.

    Raises
    ------
    ProgramError
        If two unlabelled Programs share a name.

    Examples
    --------
    >>> from synccl.collectives import Buffer, Channel, Collective, CollectiveSpec, Instruction, Op, Program, RankProgram, Slice
    >>> from synccl.topologies import TopologyBuilder
    >>> b = TopologyBuilder()
    >>> _ = b.add_rank(), b.add_rank()
    >>> b.add_link(0, 1, bandwidth=10.0, latency=2.0, kind="nvlink")
    >>> chunk = Slice(Buffer.INPUT, 0)
    >>> prog = Program("bcast", CollectiveSpec(Collective.BROADCAST, 2, inplace=True), (
    ...     RankProgram(0, (Channel(0, 1, None, (Instruction(Op.SEND, src=chunk),)),)),
    ...     RankProgram(1, (Channel(0, None, 0, (Instruction(Op.RECV, dst=chunk),)),))))
    >>> {k: [r.time_us for r in v] for k, v in compare({"direct": prog}, b.build("pair"), [10_000]).items()}
    {'direct': [3.0]}
    """
    if isinstance(programs, Mapping):
        labelled = dict(programs)
    else:
        labelled = {}
        for program in programs:
            if program.name in labelled:
                raise ProgramError(f"compare: two programs are named {program.name!r}; pass a mapping of labels")
            labelled[program.name] = program
    size_list = list(sizes)
    return {label: sweep(program, topology, size_list, local_cost=local_cost) for label, program in labelled.items()}
