"""Program-to-Program transforms."""

from __future__ import annotations

from dataclasses import replace

from synccl.collectives._program import Channel, Dependency, Instruction, Program, RankProgram, Slice
from synccl.exceptions import ProgramError

__all__ = ["replicate"]


def replicate(program: Program, instances: int) -> Program:
    """Run ``instances`` copies of ``program`` side by side on k-fold finer chunks (MSCCLang's instances).

    Chunk ``i`` of copy ``j`` becomes chunk ``i * instances + j`` of every buffer, so each copy
    moves an interleaved 1/k of the data; copy ``j``'s channels and lanes are renumbered so the
    copies share no channel and no connection. The collective's postcondition is preserved
    because every spec maps input chunk ``i`` to output chunks linearly in the chunk factor.

    >>> from synccl.collectives import library
    >>> p = replicate(library.build("ring", "all_gather", nranks=3), 2)
    >>> p.spec.chunk_factor, len(p.ranks[0].channels)
    (2, 2)
    """
    if not isinstance(instances, int) or instances < 1:
        raise ProgramError(f"replicate: instances must be an integer >= 1, got {instances!r}")
    if instances == 1:
        return program
    k = instances
    lanes = program.nlanes

    def scale(sl: Slice | None, j: int) -> Slice | None:
        if sl is None:
            return None
        if sl.count != 1:
            # A multi-chunk slice would interleave with the other copies' chunks.
            raise ProgramError(f"replicate: {program.name!r} uses multi-chunk slice {sl}; instances need single-chunk slices")
        return Slice(sl.buffer, sl.index * k + j, 1)

    ranks = []
    for rp in program.ranks:
        nch = len(rp.channels)
        channels = []
        for j in range(k):
            for ch in rp.channels:
                instructions = tuple(
                    Instruction(ins.op, scale(ins.src, j), scale(ins.dst, j), tuple(Dependency(j * nch + d.channel, d.instruction) for d in ins.deps))
                    for ins in ch.instructions
                )
                channels.append(Channel(j * nch + ch.id, ch.send_peer, ch.recv_peer, instructions, j * lanes + ch.lane))
        ranks.append(RankProgram(rp.rank, tuple(channels), rp.scratch_chunks * k))
    spec = replace(program.spec, chunk_factor=program.spec.chunk_factor * k)
    return replace(program, spec=spec, ranks=tuple(ranks))
