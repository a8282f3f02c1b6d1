"""The DSL: references, copies, reductions, channels, fusion, instances and its errors."""

import pytest

from synccl.collectives import Buffer, CollectiveSpec, Op, chunk, current_program, program, verify
from synccl.exceptions import ProgramError, VerificationError


def ring_allgather(n, **kwargs):
    with program("ring", CollectiveSpec("all_gather", n), **kwargs) as p:
        for r in range(n):
            c = chunk(r, Buffer.INPUT, 0).copy(r, Buffer.OUTPUT, r)
            for step in range(1, n):
                c = c.copy((r + step) % n, Buffer.OUTPUT, r)
    return p.program


def test_ring_lowers_to_one_forwarding_channel_with_fused_instructions(check_program):
    prog = ring_allgather(4)
    for rp in prog.ranks:
        (ch,) = rp.channels
        assert (ch.send_peer, ch.recv_peer) == ((rp.rank + 1) % 4, (rp.rank - 1) % 4)
        assert [i.op for i in ch.instructions] == [Op.COPY, Op.SEND, Op.RECV_COPY_SEND, Op.RECV_COPY_SEND, Op.RECV]
    check_program(prog)


def test_instances_replicate_on_separate_lanes(check_program):
    prog = ring_allgather(3, instances=2)
    assert prog.spec.chunk_factor == 2
    assert sorted(ch.lane for ch in prog.ranks[0].channels) == [0, 1]
    check_program(prog)


def test_explicit_channels_are_honoured(check_program):
    spec = CollectiveSpec("all_gather", 2)
    with program("pinned", spec) as p:
        for r in range(2):
            chunk(r, Buffer.INPUT, 0).copy(r, Buffer.OUTPUT, r, send_channel=1)
            chunk(r, Buffer.INPUT, 0).copy(1 - r, Buffer.OUTPUT, r, send_channel=0, recv_channel=1)
    ch0, ch1 = p.program.ranks[0].channels
    assert ch0.send_peer == 1 and ch0.recv_peer is None
    assert ch1.recv_peer == 1 and ch1.send_peer is None
    check_program(p.program)


def test_conflicting_explicit_channel_is_named():
    spec = CollectiveSpec("all_gather", 3)
    with pytest.raises(ProgramError, match=r"copy #1 .*channel 0 of rank 0 already sends to rank 1 on lane 0"):
        with program("clash", spec, check=False):
            chunk(0, Buffer.INPUT, 0).copy(1, Buffer.OUTPUT, 0, send_channel=0)
            chunk(0, Buffer.INPUT, 0).copy(2, Buffer.OUTPUT, 0, send_channel=0)


def test_cross_channel_dependencies_are_derived(check_program):
    # Rank 1 receives from 0 and from 2, then forwards its sum to 3: the send must wait for both.
    spec = CollectiveSpec("reduce", 4, root=3)
    with program("deps", spec) as p:
        acc = chunk(1, Buffer.INPUT, 0).reduce(chunk(0, Buffer.INPUT, 0), into=p.ref(1, Buffer.SCRATCH, 0))
        acc = acc.reduce(chunk(2, Buffer.INPUT, 0))
        chunk(3, Buffer.INPUT, 0).reduce(acc, into=p.ref(3, Buffer.OUTPUT, 0))
    rank1 = p.program.ranks[1]
    assert any(ins.deps for ch in rank1.channels for ins in ch.instructions)
    check_program(p.program)


def test_split_and_group():
    spec = CollectiveSpec("all_reduce", 2, chunk_factor=4)
    with program("split", spec, check=False) as p:
        halves = chunk(0, Buffer.INPUT, 0, 4).split(2)
        assert [(h.index, h.size) for h in halves] == [(0, 2), (2, 2)]
        assert halves[0].group(halves[1]).size == 4
        with pytest.raises(ProgramError, match="does not directly follow"):
            halves[1].group(halves[0])
        with pytest.raises(ProgramError, match="cannot cut"):
            halves[0].split(3)
    assert p.program.num_instructions() == 0


def test_scratch_grows_on_demand(check_program):
    spec = CollectiveSpec("broadcast", 3)
    with program("via_scratch", spec) as p:
        c = chunk(0, Buffer.INPUT, 0).copy(1, Buffer.SCRATCH, 4)
        c.copy(1, Buffer.OUTPUT, 0)
        c.copy(2, Buffer.OUTPUT, 0)
        chunk(0, Buffer.INPUT, 0).copy(0, Buffer.OUTPUT, 0)
    assert p.program.ranks[1].scratch_chunks == 5
    check_program(p.program)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: chunk(5, Buffer.INPUT, 0), "no rank 5 in a 2-rank program"),
        (lambda: chunk(0, Buffer.OUTPUT, 2), r"rank 0 output\[2:2\+1\] is out of bounds"),
        (lambda: chunk(0, "registers", 0), "buffer must be input, output or scratch, got 'registers'"),
        (lambda: chunk(0, Buffer.INPUT, 0, 0), "size must be an integer >= 1, got 0"),
        (lambda: chunk(0, Buffer.OUTPUT, 0, 2).reduce(chunk(1, Buffer.INPUT, 0)), "differ in size"),
    ],
)
def test_bad_references_are_named(call, fragment):
    with pytest.raises(ProgramError, match=fragment):
        with program("bad", CollectiveSpec("all_gather", 2), check=False):
            call()


def test_no_current_program():
    with pytest.raises(ProgramError, match="no current program"):
        current_program()


def test_wrong_program_fails_verification_on_exit():
    with pytest.raises(VerificationError, match=r"rank 1, chunk 0: output\[0\] expected \{r0\[0\]\}"):
        with program("incomplete", CollectiveSpec("all_gather", 2)):
            chunk(0, Buffer.INPUT, 0).copy(0, Buffer.OUTPUT, 0)
            chunk(1, Buffer.INPUT, 0).copy(1, Buffer.OUTPUT, 1)
            chunk(1, Buffer.INPUT, 0).copy(0, Buffer.OUTPUT, 1)


def test_explicit_program_argument_without_context():
    from synccl.collectives import ProgramBuilder

    b = ProgramBuilder("explicit", CollectiveSpec("broadcast", 2))
    src = chunk(0, Buffer.INPUT, 0, program=b)
    src.copy(1, Buffer.OUTPUT, 0)
    src.copy(0, Buffer.OUTPUT, 0)
    verify(b.build())


def test_recording_after_build_is_refused():
    with program("done", CollectiveSpec("broadcast", 1)) as p:
        ref = chunk(0, Buffer.INPUT, 0)
        ref.copy(0, Buffer.OUTPUT, 0)
    with pytest.raises(ProgramError, match="already built"):
        ref.copy(0, Buffer.OUTPUT, 0)
    assert p.program.num_instructions() == 1


def test_a_chunk_past_the_buffer_says_which_chunk_factor_fits_it():
    # The classic newcomer slip: a ring allreduce written for n chunks on a spec made with the default chunk_factor=1.
    with pytest.raises(ProgramError) as info:
        with program("ring", CollectiveSpec("all_reduce", 4), check=False):
            chunk(0, Buffer.INPUT, 1)
    message = str(info.value)
    assert "input[1:1+1] is out of bounds (index must be 0..0): the program was made with chunk_factor=1" in message
    assert "pass chunk_factor=2 or more, e.g. CollectiveSpec('all_reduce', 4, chunk_factor=2) (a ring all_reduce on 4 ranks uses chunk_factor=4)" in message
    with pytest.raises(ProgramError, match=r"output\[5:5\+2\] .* pass chunk_factor=4 or more"):
        with program("ag", CollectiveSpec("all_gather", 2), check=False):
            chunk(0, Buffer.OUTPUT, 5, 2)


def test_a_far_scratch_chunk_allocates_no_table_over_the_whole_buffer():
    # Lowering and verification keep per-chunk tables; over every chunk of a 50-million-chunk
    # scratch buffer they would take gigabytes, so sparse use gets dictionaries.
    import tracemalloc

    spec = CollectiveSpec("broadcast", 2)
    tracemalloc.start()
    try:
        with program("far_scratch", spec) as p:
            c = chunk(0, Buffer.INPUT, 0).copy(1, Buffer.SCRATCH, 50_000_000)
            c.copy(1, Buffer.OUTPUT, 0)
            chunk(0, Buffer.INPUT, 0).copy(0, Buffer.OUTPUT, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert p.program.ranks[1].scratch_chunks == 50_000_001
    assert verify(p.program).messages == 1
    assert peak < 50 * 2**20, f"lowering and verifying a 4-op program traced {peak / 2**20:.0f} MiB"


def test_lowering_on_two_cores_makes_the_same_programs(on_two_cores):
    from synccl.collectives import _lowering, library

    cases = [info for info in library.algorithms() if info.unsupported_reason(8, 4) is None and "root" not in info.options]
    one_core = [library.build(info.name, info.collective, 8, local_size=4) for info in cases]
    with on_two_cores(_lowering) as forked:
        two_cores = [library.build(info.name, info.collective, 8, local_size=4) for info in cases]
    assert len(cases) >= 10 and forked and all(forked)
    assert two_cores == one_core
