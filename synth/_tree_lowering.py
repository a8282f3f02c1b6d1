"""Lowering a tree packing to a pipelined chunk schedule (an :class:`~synccl.collectives.Algorithm`).

Each root's shard is split into ``chunks_per_root`` chunks and every tree carries its share of
them. A chunk moves one tree level per step, and a tree's ``q``-th chunk starts ``q`` steps
after its first, so consecutive chunks are in flight on consecutive levels at once (the
pipeline). In-trees reduce leaves first: a child sends its partial, already combined with its
own children's, in the step after the deepest of them; all_reduce's all_gather phase starts
after the reduce_scatter phase's last step. The Algorithm lowers through the DSL, which
assigns channels and fuses receive-then-send, and the verifier checks the Program.
"""

from __future__ import annotations

from collections import defaultdict

from synccl._gcpause import gc_paused
from synccl.collectives import Algorithm, Collective, CollectiveSpec, Step, Transfer
from synccl.exceptions import CollectiveError
from synccl.synth._trees import Tree, TreePacking

__all__ = ["packing_algorithm", "DEFAULT_LANES"]

#: Lanes (parallel connections per rank pair) trees are spread over; the runtime's default
#: ``SYNCCL_MAX_LANES`` keeps its last lane for point-to-point traffic.
DEFAULT_LANES = 7


@gc_paused()
def packing_algorithm(packing: TreePacking, *, inplace: bool = False, pipeline: int = 1, lanes: int = DEFAULT_LANES) -> Algorithm:
    """The chunk schedule of ``packing`` (module docstring), every chunk cut into ``pipeline`` pieces.

    More pieces fill the pipeline better (a tree of height ``h`` carrying ``c`` pieces takes
    ``c + h - 1`` piece-steps for ``c`` pieces' worth of data) at the cost of more instructions.
    Tree ``i`` of a phase uses lane ``(i + h) % lanes`` on its edges into host ``h`` (the host
    of the edge's end away from the root), so trees sharing a link run on separate channels
    and a tree waiting for its data does not stall the others (head-of-line blocking) -- up to
    ``lanes`` apart. Within a host a tree keeps one lane, so a rank still forwards what it
    receives on the channel it received it on; across hosts a root's star is spread over the
    lanes, which keeps the peers a rank talks to on one lane within MSCCL's 32 per channel at
    1,024 ranks (on one lane, a star's root would talk to every other host).

    >>> from synccl.synth import pack_trees
    >>> from synccl.topologies import get_topology
    >>> alg = packing_algorithm(pack_trees("reduce_scatter", get_topology("ring:4")))
    >>> alg.spec.collective.value, alg.to_program().nranks
    ('reduce_scatter', 4)
    """
    for option, value in (("pipeline", pipeline), ("lanes", lanes)):
        if not isinstance(value, int) or value < 1:
            raise CollectiveError(f"packing_algorithm: {option} must be a positive integer, got {value!r}")
    base = packing.spec
    spec = CollectiveSpec(base.collective, base.nranks, chunk_factor=base.chunk_factor * pipeline, inplace=inplace, root=base.root)
    per_root = packing.chunks_per_root * pipeline
    steps: dict[int, list[Transfer]] = defaultdict(list)
    offset = 0
    host = [packing.topology.host_of(r) or 0 for r in range(base.nranks)]
    lane_of = [[(offset + h) % lanes for h in host] for offset in range(lanes)]  # tree i: lane_of[i % lanes][rank]
    for phase in packing.phases:
        next_chunk: dict[int, int] = defaultdict(int)
        last = -1
        for index, tree in enumerate(phase.trees):
            first = next_chunk[tree.root]
            next_chunk[tree.root] += tree.chunks * pipeline
            chunks = [_global_chunk(spec, per_root, tree.root, first + q) for q in range(tree.chunks * pipeline)]
            for step, transfer in _tree_transfers(tree, chunks, reduce=phase.direction == "in", lanes=lane_of[index % lanes]):
                steps[offset + step].append(transfer)
                last = max(last, offset + step)
        offset = last + 1
    name = f"trees-{packing.collective.value}-{packing.topology.name}-c{per_root}"
    return Algorithm(name, spec, tuple(Step(tuple(steps[s])) for s in sorted(steps)), topology=packing.topology.name)


def _global_chunk(spec: CollectiveSpec, chunks_per_root: int, root: int, q: int) -> int:
    """The Algorithm's global chunk number of ``root``'s ``q``-th chunk (see ``chunk_sources``)."""
    if spec.collective in (Collective.BROADCAST, Collective.REDUCE):
        return q
    return root * chunks_per_root + q


def _tree_transfers(tree: Tree, chunks: list[int], *, reduce: bool, lanes: list[int]) -> list[tuple[int, Transfer]]:
    """``(step, transfer)`` for every chunk on every edge: down an out-tree, up an in-tree.

    ``lanes[r]`` is the lane of the edge between rank ``r`` and its parent.
    """
    depth = tree.depths()
    height = max(depth)
    out = []
    for q, chunk in enumerate(chunks):
        for child, parent in enumerate(tree.parent):
            if parent is None:
                continue
            if reduce:
                out.append((height - depth[child] + q, Transfer(chunk, child, parent, reduce=True, lane=lanes[child])))
            else:
                out.append((depth[child] - 1 + q, Transfer(chunk, parent, child, lane=lanes[child])))
    return out
