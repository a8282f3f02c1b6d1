"""Export -> import of every library algorithm: the same spec, verified; the XML has what MSCCL's executor reads."""

from dataclasses import replace

import defusedxml.ElementTree as SafeET
import pytest

from synccl.collectives import (
    MSCCL_LIMITS,
    Buffer,
    CollectiveSpec,
    Op,
    Program,
    XmlError,
    chunk,
    from_msccl_xml,
    library,
    program,
    replicate,
    to_msccl_xml,
    verify,
)

#: The attributes MSCCL's executor (and msccl-tools' output) has on each element.
ALGO_ATTRS = {"name", "proto", "nchannels", "nchunksperloop", "ngpus", "coll", "inplace", "outofplace", "minBytes", "maxBytes"}
GPU_ATTRS = {"id", "i_chunks", "o_chunks", "s_chunks"}
TB_ATTRS = {"id", "send", "recv", "chan"}
STEP_ATTRS = {"s", "type", "srcbuf", "srcoff", "dstbuf", "dstoff", "cnt", "depid", "deps", "hasdep"}
TYPES = {Op.SEND: "s", Op.RECV: "r", Op.COPY: "cpy", Op.REDUCE: "re", Op.RECV_COPY_SEND: "rcs", Op.RECV_REDUCE_COPY: "rrc", Op.RECV_REDUCE_SEND: "rrs", Op.RECV_REDUCE_COPY_SEND: "rrcs", Op.NOP: "nop"}


def _cases():
    for info in library.algorithms():
        for n in range(2, 9):
            shapes = [k for k in range(1, n + 1) if n % k == 0] if info.needs_local_size else [None]
            for local_size in shapes:
                if info.unsupported_reason(n, local_size) is None:
                    shape = f"-local{local_size}" if local_size else ""
                    yield pytest.param(info, n, local_size, id=f"{info.collective.value}-{info.name}-n{n}{shape}")


def _roots(info, n):
    return sorted({0, n // 2, n - 1}) if info.collective.is_rooted else [None]


def _programs(info, n, local_size):
    for inplace in (False, True):
        for root in _roots(info, n):
            options = {"inplace": inplace} if root is None else {"inplace": inplace, "root": root}
            yield library.build(info.name, info.collective, n, local_size=local_size, **options)
    if "channels" in info.options:
        yield library.build(info.name, info.collective, n, channels=2)
    if "chunks" in info.options:
        yield library.build(info.name, info.collective, n, chunks=3)


def check_export(prog: Program, xml: str) -> None:
    """Attribute sets, step layout (extra dependencies on nop steps before), hasdep exactly on dependency targets."""
    algo = SafeET.fromstring(xml)
    assert algo.tag == "algo" and set(algo.attrib) == ALGO_ATTRS | ({"root"} if prog.collective.is_rooted else set())
    assert int(algo.get("ngpus")) == prog.nranks and int(algo.get("nchunksperloop")) == prog.spec.size_chunks
    assert (algo.get("inplace"), algo.get("outofplace")) == (("1", "0") if prog.spec.inplace else ("0", "1"))
    gpus = algo.findall("gpu")
    assert [int(g.get("id")) for g in gpus] == list(range(prog.nranks))
    for gpu, rp in zip(gpus, prog.ranks, strict=True):
        assert set(gpu.attrib) == GPU_ATTRS
        tbs = gpu.findall("tb")
        assert [int(t.get("id")) for t in tbs] == [ch.id for ch in rp.channels] == list(range(len(tbs)))
        targets = set()
        for tb in tbs:
            assert set(tb.attrib) == TB_ATTRS
            for step in tb.findall("step"):
                if int(step.get("depid")) >= 0:
                    targets.add((int(step.get("depid")), int(step.get("deps"))))
        for tb, ch in zip(tbs, rp.channels, strict=True):
            steps = tb.findall("step")
            assert all(set(st.attrib) == STEP_ATTRS for st in steps)
            assert [int(st.get("s")) for st in steps] == list(range(len(steps)))
            expected_types = [t for ins in ch.instructions for t in ["nop"] * max(0, len(ins.deps) - 1) + [TYPES[ins.op]]]
            assert [st.get("type") for st in steps] == expected_types
            assert sum(int(st.get("depid")) >= 0 for st in steps) == sum(len(ins.deps) for ins in ch.instructions)
            for k, st in enumerate(steps):
                assert st.get("hasdep") == ("1" if (ch.id, k) in targets else "0"), (rp.rank, ch.id, k)
            # Extra dependencies sit on nop steps, each carrying one.
            position = 0
            for ins in ch.instructions:
                for _ in range(len(ins.deps) - 1):
                    assert steps[position].get("type") == "nop" and int(steps[position].get("depid")) >= 0
                    position += 1
                position += 1
        for depid, deps in targets:
            assert 0 <= depid < len(tbs) and 0 <= deps < len(tbs[depid].findall("step"))


@pytest.mark.parametrize(("info", "n", "local_size"), list(_cases()))
def test_round_trip_keeps_the_spec_and_verifies(info, n, local_size):
    for prog in _programs(info, n, local_size):
        xml = to_msccl_xml(prog)
        check_export(prog, xml)
        back = from_msccl_xml(xml)
        assert back.spec == prog.spec, (prog.name, back.spec, prog.spec)
        verify(back)
        assert back.num_instructions() == sum(1 + max(0, len(ins.deps) - 1) for _, _, _, ins in prog.instructions())


def test_some_library_program_needs_nop_steps():
    prog = library.build("hierarchical_2d", "all_to_all", 8, local_size=4)
    assert max(len(ins.deps) for *_, ins in prog.instructions()) > 1
    assert 'type="nop"' in to_msccl_xml(prog)


# -- the executor's limits ---------------------------------------------------------------------------


def _one_block_all_gather(chunks: int) -> Program:
    """2-rank allgather moving each rank's whole share (``chunks`` chunks) in one step."""
    with program(f"block{chunks}", CollectiveSpec("all_gather", nranks=2, chunk_factor=chunks)) as p:
        for r in range(2):
            chunk(r, Buffer.INPUT, 0, size=chunks).copy(r, Buffer.OUTPUT, r * chunks)
            chunk(r, Buffer.INPUT, 0, size=chunks).copy(1 - r, Buffer.OUTPUT, r * chunks)
    return p.program


def _chunkwise_all_gather(chunks: int) -> Program:
    """2-rank allgather moving one chunk per step: channel 0 of each rank gets 2 x ``chunks`` steps."""
    with program(f"chunkwise{chunks}", CollectiveSpec("all_gather", nranks=2, chunk_factor=chunks)) as p:
        for r in range(2):
            for k in range(chunks):
                chunk(r, Buffer.INPUT, k).copy(1 - r, Buffer.OUTPUT, r * chunks + k)
                chunk(r, Buffer.INPUT, k).copy(r, Buffer.OUTPUT, r * chunks + k)
    return p.program


def test_count_limit_names_rank_channel_and_step():
    assert MSCCL_LIMITS.max_count == 72
    from_msccl_xml(to_msccl_xml(_one_block_all_gather(71)))
    with pytest.raises(XmlError, match=r"export 'block72': rank 0 channel \d+ step \d+ moves 72 chunks; MSCCL's executor needs cnt < 72"):
        to_msccl_xml(_one_block_all_gather(72))


def test_steps_per_thread_block_limit_names_rank_and_channel():
    at_limit = _chunkwise_all_gather(32)
    assert max(len(ch.instructions) for ch in at_limit.ranks[0].channels) == 64
    from_msccl_xml(to_msccl_xml(at_limit))
    with pytest.raises(XmlError, match=r"export 'chunkwise33': rank 0 channel \d+ has 66 steps; MSCCL's executor allows at most 64 per thread block"):
        to_msccl_xml(_chunkwise_all_gather(33))


def test_channel_limit():
    ring = library.build("ring", "all_gather", 2)
    from_msccl_xml(to_msccl_xml(replicate(ring, 32)))
    with pytest.raises(XmlError, match=r"uses 33 channels \(lanes\); MSCCL's executor allows at most 32"):
        to_msccl_xml(replicate(ring, 33))


def _flat_broadcast(nranks: int) -> Program:
    """Rank 0 sends to every other rank directly, all on lane 0: a send peer per rank."""
    with program(f"flat{nranks}", CollectiveSpec("broadcast", nranks)) as p:
        chunk(0, Buffer.INPUT, 0).copy(0, Buffer.OUTPUT, 0)
        for r in range(1, nranks):
            chunk(0, Buffer.INPUT, 0).copy(r, Buffer.OUTPUT, 0)
    return p.program


def test_peers_per_lane_limit_names_rank_and_lane():
    assert MSCCL_LIMITS.max_peers_per_channel == 32
    from_msccl_xml(to_msccl_xml(_flat_broadcast(33)))
    with pytest.raises(XmlError, match=r"^export 'flat34': rank 0 sends to 33 peers on lane 0; MSCCL's executor allows 32 per channel \(lane\): give the schedule more lanes$"):
        to_msccl_xml(_flat_broadcast(34))


def test_thread_block_and_offset_limits():
    with pytest.raises(XmlError, match=r"^export 'flat4': rank 0 has 3 channels; MSCCL's executor runs at most 2 thread blocks per rank$"):
        to_msccl_xml(_flat_broadcast(4), limits=replace(MSCCL_LIMITS, max_thread_blocks=2))
    with pytest.raises(XmlError, match=r"^export 'chunkwise3': rank 0 channel \d+ step \d+ reaches chunk 4; MSCCL's executor addresses chunks 0..3$"):
        to_msccl_xml(_chunkwise_all_gather(3), limits=replace(MSCCL_LIMITS, max_offset=3))


def test_blocks_waited_for_are_numbered_first_when_ids_run_past_the_int8():
    """MSCCL names the block a step waits for in an int8: export moves the blocks waited for to the low ids."""
    from synccl.synth import pack_trees
    from synccl.topologies import get_topology

    prog = pack_trees("all_reduce", get_topology("dgx-a100:2")).to_program(pipeline=1)
    waited = [{d.channel for ch in rp.channels for ins in ch.instructions for d in ins.deps} for rp in prog.ranks]
    rank = max(range(prog.nranks), key=lambda r: max(waited[r], default=-1) - len(waited[r]))
    assert max(waited[rank]) > len(waited[rank]) - 1  # renumbering is needed at the tightest limit that fits
    tight = replace(MSCCL_LIMITS, max_dependency_block=max(len(w) for w in waited) - 1)
    xml = to_msccl_xml(prog, limits=tight)
    steps = SafeET.fromstring(xml).iter("step")
    assert max(int(step.get("depid")) for step in steps) <= tight.max_dependency_block
    back = from_msccl_xml(xml)  # verified on import
    assert back.spec == prog.spec and back.num_instructions() == prog.num_instructions()
    with pytest.raises(XmlError, match=rf"^export '{prog.name}': rank \d+ has {len(waited[rank])} channels that others wait for; MSCCL's executor names the block a step waits for in an int8, so at most {len(waited[rank]) - 1} can be waited for$"):
        to_msccl_xml(prog, limits=replace(MSCCL_LIMITS, max_dependency_block=len(waited[rank]) - 2))
