"""Compute steps in Programs: fused all-gather + matmul and matmul + reduce-scatter are proven, and broken ones are caught."""

from dataclasses import replace

import pytest

from synccl.collectives import Buffer, Channel, Dependency, Instruction, Op, Slice, XmlError, check, library, to_msccl_xml, verify
from synccl.collectives._fuse import compute_channel, consume_output, produce_input
from synccl.exceptions import ProgramError, VerificationError


def _fused_gather(n: int, pieces: int = 1, inplace: bool = False):
    return consume_output(library.build("ring", "all_gather", n, pieces=pieces, inplace=inplace), "matmul")


def _fused_scatter(n: int, pieces: int = 1, inplace: bool = False):
    return produce_input(library.build("ring", "reduce_scatter", n, pieces=pieces, inplace=inplace), "matmul")


def _with_stream(program, rank: int, instructions):
    """``program`` with rank ``rank``'s compute stream replaced by ``instructions``."""
    rp = program.ranks[rank]
    stream = compute_channel(rp)
    channels = tuple(replace(stream, instructions=tuple(instructions)) if ch is stream else ch for ch in rp.channels)
    ranks = tuple(replace(r, channels=channels) if r.rank == rank else r for r in program.ranks)
    return replace(program, ranks=ranks)


def _kinds(program) -> set[str]:
    return {v.kind for v in check(program)}


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("pieces", [1, 3])
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "in_place"])
def test_fused_ring_programs_verify(n, pieces, inplace):
    for fused, kind in ((_fused_gather(n, pieces, inplace), Op.CONSUME), (_fused_scatter(n, pieces, inplace), Op.PRODUCE)):
        verify(fused)
        assert fused.computes
        for rp in fused.ranks:
            steps = compute_channel(rp).instructions
            assert {ins.op for ins in steps} == {kind} and {ins.kernel for ins in steps} == {"matmul"}
            # Every block of the rank's shard of the work is computed exactly once.
            chunks = [(ins.src or ins.dst).index for ins in steps]
            expected = fused.spec.postcondition(rp.rank) if kind is Op.CONSUME else fused.spec.precondition(rp.rank)
            assert sorted(chunks) == sorted(expected)


def test_gather_consumes_own_block_first_then_in_ring_order():
    fused = _fused_gather(4)
    order = [ins.src.index for ins in compute_channel(fused.ranks[1]).instructions]
    assert order == [1, 0, 3, 2]  # own, then as the ring brings them: from 0, then 3, then 2


def test_scatter_produces_blocks_in_the_order_the_ring_sends_them_and_transfers_wait():
    fused = _fused_scatter(4)
    rp = fused.ranks[0]
    stream = compute_channel(rp)
    assert [ins.dst.index for ins in stream.instructions] == [3, 2, 1, 0]
    first_send = rp.channels[0].instructions[0]
    assert first_send.op is Op.SEND and Dependency(stream.id, 0) in first_send.deps


def test_a_consume_without_its_dependency_reads_data_that_has_not_arrived():
    fused = _fused_gather(3)
    steps = list(compute_channel(fused.ranks[0]).instructions)
    steps[-1] = replace(steps[-1], deps=())
    kinds = _kinds(_with_stream(fused, 0, steps))
    assert kinds & {"race", "compute"}


def test_a_transfer_that_does_not_wait_for_its_producer_reads_uninitialized_data():
    fused = _fused_scatter(3)
    rp = fused.ranks[1]
    comm = rp.channels[0]
    stripped = replace(comm, instructions=(replace(comm.instructions[0], deps=()), *comm.instructions[1:]))
    broken = replace(fused, ranks=tuple(replace(r, channels=(stripped, *r.channels[1:])) if r.rank == 1 else r for r in fused.ranks))
    with pytest.raises(VerificationError) as err:
        verify(broken)
    assert {v.kind for v in err.value.violations} & {"race", "reduction", "postcondition"}


def test_a_missing_or_repeated_block_is_named():
    fused = _fused_gather(3)
    steps = list(compute_channel(fused.ranks[2]).instructions)
    missing = check(_with_stream(fused, 2, steps[:-1]))
    assert any(v.kind == "compute" and "never computes from output" in v.message and v.rank == 2 for v in missing)
    repeated = check(_with_stream(fused, 2, [*steps, steps[-1]]))
    assert any("a second time" in v.message for v in repeated)


def test_a_produce_that_runs_twice_is_named():
    fused = _fused_scatter(2)
    steps = list(compute_channel(fused.ranks[0]).instructions)
    # Ordered after every transfer of the rank, so no race: the symbolic pass names it.
    after_all = tuple(Dependency(ch.id, len(ch.instructions) - 1) for ch in fused.ranks[0].channels if ch.send_peer is not None or ch.recv_peer is not None)
    violations = check(_with_stream(fused, 0, [*steps, replace(steps[0], deps=after_all)]))
    assert any("input[" in v.message and "a second time" in v.message for v in violations)


def test_one_kernel_must_compute_every_block():
    fused = _fused_gather(2)
    steps = list(compute_channel(fused.ranks[0]).instructions)
    steps[0] = replace(steps[0], kernel="gelu")
    assert any("different kernels" in v.message for v in check(_with_stream(fused, 0, steps)))


def test_structure_of_compute_steps():
    fused = _fused_gather(2)
    steps = list(compute_channel(fused.ranks[0]).instructions)
    no_kernel = check(_with_stream(fused, 0, [replace(steps[0], kernel=None), *steps[1:]]))
    assert any("needs a kernel name" in v.message for v in no_kernel)
    from_input = check(_with_stream(fused, 0, [replace(steps[0], src=Slice(Buffer.INPUT, 0)), *steps[1:]]))
    assert any("consume computes from output chunks" in v.message for v in from_input)
    # A compute step on a channel that talks to a peer.
    rp = fused.ranks[0]
    comm = rp.channels[0]
    mixed = replace(comm, instructions=(*comm.instructions, Instruction(Op.CONSUME, src=Slice(Buffer.OUTPUT, 0), kernel="matmul")))
    broken = replace(fused, ranks=(replace(rp, channels=(mixed, *rp.channels[1:])), *fused.ranks[1:]))
    assert any("channel with no peers" in v.message for v in check(broken))
    moving = Channel(0, None, None, (Instruction(Op.COPY, src=Slice(Buffer.INPUT, 0), dst=Slice(Buffer.OUTPUT, 0), kernel="matmul"),))
    assert any("takes no kernel" in v.message for v in check(replace(fused, ranks=(replace(rp, channels=(moving,)), *fused.ranks[1:]))))


def test_msccl_xml_refuses_compute_steps_in_one_line():
    with pytest.raises(XmlError, match="compute steps") as err:
        to_msccl_xml(_fused_gather(2))
    assert "\n" not in str(err.value)


def test_fusing_twice_is_refused():
    with pytest.raises(ProgramError, match="already has compute steps"):
        consume_output(_fused_gather(2), "matmul")


def test_describe_shows_the_compute_stream():
    text = _fused_scatter(2).describe()
    assert "produce matmul dst=input[1:2]" in text and "send src=input[1:2] deps=2.0" in text
