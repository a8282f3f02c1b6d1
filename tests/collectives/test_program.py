"""The Program IR: its lane count and the one table of opcode semantics."""

import dataclasses

import pytest

from synccl.collectives import (
    OP_SEMANTICS,
    Buffer,
    Channel,
    CollectiveSpec,
    Dependency,
    Instruction,
    Op,
    OpSemantics,
    Program,
    RankProgram,
    Slice,
    library,
    replicate,
)


def _program(lanes_by_rank):
    spec = CollectiveSpec("all_gather", len(lanes_by_rank))
    ranks = tuple(RankProgram(r, tuple(Channel(k, None, None, (), lane) for k, lane in enumerate(lanes))) for r, lanes in enumerate(lanes_by_rank))
    return Program("lanes", spec, ranks)


@pytest.mark.parametrize(("lanes_by_rank", "expected"), [([[], []], 1), ([[0], [0]], 1), ([[0, 2], [1]], 3), ([[0], [4]], 5)])
def test_nlanes_is_one_more_than_the_largest_lane(lanes_by_rank, expected):
    assert _program(lanes_by_rank).nlanes == expected


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_nlanes_of_library_rings_and_their_replicas(channels):
    prog = library.build("ring", "all_gather", 4, channels=channels)
    assert prog.nlanes == channels
    assert replicate(prog, 3).nlanes == 3 * channels


def test_every_op_has_exactly_one_row_and_the_table_is_read_only():
    assert set(OP_SEMANTICS) == set(Op)
    assert all(isinstance(row, OpSemantics) for row in OP_SEMANTICS.values())
    with pytest.raises(TypeError):
        OP_SEMANTICS[Op.NOP] = OpSemantics(sends=True)  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        OP_SEMANTICS[Op.SEND].sends = False  # type: ignore[misc]


@pytest.mark.parametrize("op", list(Op))
def test_op_properties_read_the_table(op):
    row = OP_SEMANTICS[op]
    assert op.semantics is row
    assert (op.receives, op.sends, op.reads_src, op.reads_dst, op.writes_dst) == (row.receives, row.sends, row.reads_src, row.reads_dst, row.writes_dst)


@pytest.mark.parametrize("op", list(Op))
def test_rows_are_consistent(op):
    s = op.semantics
    # The name says what the op does (MSCCL's naming: recv, reduce, copy, send).
    words = op.value.split("_")
    assert s.receives == ("recv" in words)
    assert s.sends == ("send" in words)
    assert s.reduces == ("reduce" in words)
    assert s.reads_dst == (op is Op.REDUCE)  # only the local reduce combines into dst
    assert not s.reads_src or s.accepts_src
    # Local work is a copy out of src or a reduction: what the simulator charges memory bandwidth for.
    assert s.local_work == (s.reduces or (s.reads_src and s.writes_dst))
    # Compute steps move nothing between ranks and are charged as compute, not memory traffic.
    assert not s.computes or not (s.receives or s.sends or s.local_work or s.reduces)
    # Every op but NOP has a value to do something with (a CONSUME's goes to the rank's result).
    assert (s.writes_dst or s.sends or s.computes) == (op is not Op.NOP)


def test_a_reduce_send_writes_nothing_locally_and_recv_copy_send_ignores_a_src():
    assert not Op.RECV_REDUCE_SEND.semantics.writes_dst
    assert Op.RECV_COPY_SEND.semantics.accepts_src and not Op.RECV_COPY_SEND.semantics.reads_src
    assert not Op.RECV.semantics.accepts_src


def test_replay_follows_the_table(check_program):
    # Rank 0 copies through scratch and sends; rank 1 receive-reduce-copy-sends back; rank 0 receives.
    spec = CollectiveSpec("all_reduce", 2, inplace=True)
    s = Slice(Buffer.INPUT, 0)
    scratch = Slice(Buffer.SCRATCH, 0)
    r0 = (Instruction(Op.COPY, src=s, dst=scratch), Instruction(Op.SEND, src=scratch), Instruction(Op.RECV, dst=s))
    r1 = (Instruction(Op.RECV_REDUCE_COPY_SEND, src=s, dst=s),)
    prog = Program("table", spec, (RankProgram(0, (Channel(0, 1, 1, r0),), scratch_chunks=1), RankProgram(1, (Channel(0, 0, 0, r1),))))
    check_program(prog)


@pytest.mark.parametrize("local_reduce", [False, True], ids=["recv_reduce_copy", "recv_then_reduce"])
def test_replay_follows_the_table_along_a_chain(local_reduce, check_program):
    # 0 -> 1 (receive-reduce-send: nothing written) -> 2 (reduces) -> 1 (receive-copy-send) -> 0.
    spec = CollectiveSpec("all_reduce", 3, inplace=True)
    s = Slice(Buffer.INPUT, 0)
    scratch = Slice(Buffer.SCRATCH, 0)
    if local_reduce:
        tail = (Instruction(Op.RECV, dst=scratch), Instruction(Op.REDUCE, src=scratch, dst=s))
    else:
        tail = (Instruction(Op.RECV_REDUCE_COPY, src=s, dst=s),)
    ranks = (
        RankProgram(0, (Channel(0, 1, 1, (Instruction(Op.SEND, src=s), Instruction(Op.RECV, dst=s))),)),
        RankProgram(1, (Channel(0, 2, 0, (Instruction(Op.RECV_REDUCE_SEND, src=s),)), Channel(1, 0, 2, (Instruction(Op.RECV_COPY_SEND, dst=s),)))),
        RankProgram(2, (Channel(0, 1, 1, (*tail, Instruction(Op.SEND, src=s))),), scratch_chunks=int(local_reduce)),
    )
    check_program(Program("chain", spec, ranks))


def test_programs_pickle_field_by_field_and_keep_shared_instructions_shared():
    import pickle

    prog = library.build("hierarchical", "all_reduce", 8, local_size=4)
    shared = Instruction(Op.PRODUCE, dst=Slice(Buffer.INPUT, 0), deps=(Dependency(1, 2),), kernel="k")
    back = pickle.loads(pickle.dumps((prog, shared, shared)))
    assert back[0] == prog and back[0].ranks[3].channels == prog.ranks[3].channels
    assert back[1] == shared and back[1] is back[2]
    for obj in (Slice(Buffer.SCRATCH, 3, 2), prog.ranks[0], prog.ranks[0].channels[0]):
        assert type(obj).__reduce__(obj)[0] is type(obj)  # a constructor call, not dataclasses' per-object field lookup
