"""The verifier accepts correct Programs and rejects broken ones, naming where and why."""

from dataclasses import replace

import pytest

from synccl.collectives import (
    Buffer,
    Channel,
    CollectiveSpec,
    Dependency,
    Instruction,
    Op,
    Program,
    RankProgram,
    Slice,
    check,
    library,
    verify,
)
from synccl.exceptions import VerificationError

IN, OUT, SCR = Buffer.INPUT, Buffer.OUTPUT, Buffer.SCRATCH


def s(buffer, index, count=1):
    return Slice(buffer, index, count)


def swap_allgather(rank0=None, rank1=None, *, inplace=False):
    """A correct 2-rank allgather; either rank's channels can be replaced."""
    spec = CollectiveSpec("all_gather", 2, inplace=inplace)

    def rank(r):
        return RankProgram(
            r,
            (
                Channel(
                    0,
                    1 - r,
                    1 - r,
                    (
                        Instruction(Op.COPY, s(IN, 0), s(OUT, r)),
                        Instruction(Op.SEND, s(IN, 0)),
                        Instruction(Op.RECV, None, s(OUT, 1 - r)),
                    ),
                ),
            ),
        )

    return Program("swap", spec, (rank0 or rank(0), rank1 or rank(1)))


def only(program):
    """The single violation the program has (fails the test if there are several kinds)."""
    found = check(program)
    assert found, "the verifier accepted a broken program"
    return found[0]


def test_correct_program_passes():
    report = verify(swap_allgather())
    assert (report.nranks, report.messages, report.instructions) == (2, 2, 6)


def test_error_lists_every_violation_and_the_first_in_its_message():
    prog = swap_allgather(rank1=RankProgram(1, ()))
    with pytest.raises(VerificationError) as err:
        verify(prog)
    assert len(err.value.violations) >= 2
    assert "verify 'swap'" in str(err.value)


def test_1_receive_never_sent_is_a_deadlock_located_at_the_receive():
    r1 = RankProgram(1, (Channel(0, None, 0, (Instruction(Op.COPY, s(IN, 0), s(OUT, 1)), Instruction(Op.RECV, None, s(OUT, 0)))),))
    r0 = RankProgram(0, (Channel(0, None, 1, (Instruction(Op.COPY, s(IN, 0), s(OUT, 0)), Instruction(Op.RECV, None, s(OUT, 1)))),))
    v = only(swap_allgather(r0, r1))
    assert v.kind == "deadlock" and (v.rank, v.channel, v.instruction) == (0, 0, 1)
    assert "connection 1->0 lane 0, which is never sent" in v.message


def test_2_circular_wait_between_two_ranks():
    def rank(r):
        return RankProgram(r, (Channel(0, 1 - r, 1 - r, (Instruction(Op.RECV, None, s(OUT, 1 - r)), Instruction(Op.SEND, s(IN, 0)), Instruction(Op.COPY, s(IN, 0), s(OUT, r)))),))

    found = check(swap_allgather(rank(0), rank(1)))
    assert {(v.kind, v.rank, v.instruction) for v in found} == {("deadlock", 0, 0), ("deadlock", 1, 0)}


def test_3_message_size_mismatch():
    spec = CollectiveSpec("all_gather", 2, chunk_factor=2)
    r0 = RankProgram(0, (Channel(0, 1, 1, (Instruction(Op.COPY, s(IN, 0, 2), s(OUT, 0, 2)), Instruction(Op.SEND, s(IN, 0, 2)), Instruction(Op.RECV, None, s(OUT, 2, 2)))),))
    r1 = RankProgram(1, (Channel(0, 0, 0, (Instruction(Op.COPY, s(IN, 0, 2), s(OUT, 2, 2)), Instruction(Op.SEND, s(IN, 0, 2)), Instruction(Op.RECV, None, s(OUT, 0, 1)))),))
    v = only(Program("mismatch", spec, (r0, r1)))
    assert v.kind == "size mismatch" and (v.rank, v.channel, v.instruction) == (1, 0, 2)
    assert "carries 2 chunk(s)" in v.message and "expects 1" in v.message


def test_4_send_never_received():
    base = swap_allgather()
    ch = base.ranks[0].channels[0]
    r0 = replace(base.ranks[0], channels=(replace(ch, instructions=(*ch.instructions, Instruction(Op.SEND, s(IN, 0)))),))
    v = only(replace(base, ranks=(r0, base.ranks[1])))
    assert v.kind == "unmatched send" and v.rank == 0 and "0->1 lane 0" in v.message


def test_5_slice_out_of_bounds():
    base = swap_allgather()
    ch = base.ranks[1].channels[0]
    bad = replace(ch, instructions=(ch.instructions[0], ch.instructions[1], Instruction(Op.RECV, None, s(OUT, 2))))
    v = only(replace(base, ranks=(base.ranks[0], replace(base.ranks[1], channels=(bad,)))))
    assert (v.kind, v.rank, v.channel, v.instruction) == ("structure", 1, 0, 2)
    assert "output[2:3] is out of bounds: output has 2 chunks" in v.message


def test_6_peer_is_the_rank_itself():
    base = swap_allgather()
    r0 = replace(base.ranks[0], channels=(replace(base.ranks[0].channels[0], send_peer=0),))
    v = only(replace(base, ranks=(r0, base.ranks[1])))
    assert v.rank == 0 and v.channel == 0 and "send peer is the rank itself" in v.message


def test_7_two_channels_on_one_connection():
    base = swap_allgather()
    extra = Channel(1, 1, None, ())
    r0 = replace(base.ranks[0], channels=(base.ranks[0].channels[0], extra))
    v = only(replace(base, ranks=(r0, base.ranks[1])))
    assert (v.rank, v.channel) == (0, 1) and "channels 0 and 1 both send to rank 1 on lane 0" in v.message


def test_8_unordered_writes_are_a_race():
    # Rank 0 copies its input to output[0] on two channels with no dependency between them.
    base = swap_allgather()
    extra = Channel(1, None, None, (Instruction(Op.COPY, s(IN, 0), s(OUT, 0)),))
    r0 = replace(base.ranks[0], channels=(base.ranks[0].channels[0], extra))
    v = only(replace(base, ranks=(r0, base.ranks[1])))
    assert v.kind == "race" and v.rank == 0 and v.chunk == 0 and "output[0]" in v.message


def test_8b_a_dependency_removes_the_race():
    base = swap_allgather()
    extra = Channel(1, None, None, (Instruction(Op.COPY, s(IN, 0), s(OUT, 0), (Dependency(0, 0),)),))
    r0 = replace(base.ranks[0], channels=(base.ranks[0].channels[0], extra))
    verify(replace(base, ranks=(r0, base.ranks[1])))


def test_9_reduction_counting_a_contribution_twice():
    spec = CollectiveSpec("all_reduce", 2, inplace=True)

    def rank(r):
        ins = (Instruction(Op.SEND, s(IN, 0)), Instruction(Op.RECV_REDUCE_COPY, s(IN, 0), s(IN, 0)), Instruction(Op.REDUCE, s(IN, 0), s(IN, 0)))
        return RankProgram(r, (Channel(0, 1 - r, 1 - r, ins),))

    found = check(Program("twice", spec, (rank(0), rank(1))))
    kinds = {v.kind for v in found}
    assert "reduction" in kinds
    v = next(v for v in found if v.kind == "reduction")
    assert v.instruction == 2 and "counts contributions twice" in v.message


def test_10_reducing_uninitialized_scratch():
    spec = CollectiveSpec("all_reduce", 2, inplace=True)

    def rank(r):
        ins = (Instruction(Op.SEND, s(IN, 0)), Instruction(Op.RECV_REDUCE_COPY, s(SCR, 0), s(IN, 0)))
        return RankProgram(r, (Channel(0, 1 - r, 1 - r, ins),), scratch_chunks=1)

    v = only(Program("garbage", spec, (rank(0), rank(1))))
    assert v.kind == "reduction" and v.instruction == 1 and "reduces uninitialized data (local operand)" in v.message


def test_11_wrong_chunk_in_output():
    base = swap_allgather()
    ch = base.ranks[1].channels[0]
    bad = replace(ch, instructions=(Instruction(Op.COPY, s(IN, 0), s(OUT, 0)), ch.instructions[1], Instruction(Op.RECV, None, s(OUT, 1))))
    found = check(replace(base, ranks=(base.ranks[0], replace(base.ranks[1], channels=(bad,)))))
    by_chunk = {v.chunk: v for v in found}
    assert by_chunk[0].kind == "postcondition" and "expected {r0[0]}, found {r1[0]}" in by_chunk[0].message
    assert (by_chunk[0].rank, by_chunk[0].channel, by_chunk[0].instruction) == (1, 0, 0)


def test_12_output_never_written():
    base = swap_allgather()
    ch = base.ranks[0].channels[0]
    r0 = replace(base.ranks[0], channels=(replace(ch, instructions=ch.instructions[1:]),))
    v = only(replace(base, ranks=(r0, base.ranks[1])))
    assert v.kind == "postcondition" and v.rank == 0 and v.chunk == 0 and "never written" in v.message


def test_13_out_of_place_program_writing_its_input():
    base = swap_allgather()
    ch = base.ranks[1].channels[0]
    bad = replace(ch, instructions=(*ch.instructions, Instruction(Op.COPY, s(OUT, 0), s(IN, 0))))
    v = only(replace(base, ranks=(base.ranks[0], replace(base.ranks[1], channels=(bad,)))))
    assert (v.rank, v.instruction) == (1, 3) and "must leave its input buffer unchanged" in v.message


def test_14_dependency_on_missing_instruction():
    base = swap_allgather()
    ch = base.ranks[0].channels[0]
    first = replace(ch.instructions[0], deps=(Dependency(0, 7),))
    r0 = replace(base.ranks[0], channels=(replace(ch, instructions=(first, *ch.instructions[1:])),))
    v = only(replace(base, ranks=(r0, base.ranks[1])))
    assert (v.rank, v.channel, v.instruction) == (0, 0, 0) and "channel 0 instruction 7, which does not exist" in v.message


def test_15_receive_on_a_channel_without_receive_peer():
    base = swap_allgather()
    r1 = replace(base.ranks[1], channels=(replace(base.ranks[1].channels[0], recv_peer=None),))
    v = only(replace(base, ranks=(base.ranks[0], r1)))
    assert (v.rank, v.instruction) == (1, 2) and "receives but the channel has no receive peer" in v.message


def test_16_dependency_cycle_across_channels_deadlocks():
    spec = CollectiveSpec("all_gather", 1)
    a = Channel(0, None, None, (Instruction(Op.NOP, deps=(Dependency(1, 0),)), Instruction(Op.COPY, s(IN, 0), s(OUT, 0))))
    b = Channel(1, None, None, (Instruction(Op.NOP, deps=(Dependency(0, 1),)),))
    found = check(Program("cycle", spec, (RankProgram(0, (a, b)),)))
    assert {(v.kind, v.channel, v.instruction) for v in found} == {("deadlock", 0, 0), ("deadlock", 1, 0)}


def test_17_wrong_rank_count():
    base = swap_allgather()
    v = only(replace(base, ranks=base.ranks[:1]))
    assert "expected 2 rank programs, found 1" in v.message


def test_mutated_library_program_is_caught():
    prog = library.build("ring", "all_reduce", 4)
    ch = prog.ranks[2].channels[0]
    dropped = replace(ch, instructions=ch.instructions[:-1])
    broken = replace(prog, ranks=tuple(replace(rp, channels=(dropped,)) if rp.rank == 2 else rp for rp in prog.ranks))
    v = only(broken)
    assert v.kind == "unmatched send" and v.rank == 1
