"""The scalable verifier agrees with the one it replaced: same verdict, same violations, same order.

Two passes changed for scale: races (rank-local clocks plus an exact search, where vector clocks
over every channel used to be) and the postcondition (bitmask sets of contributions, where
frozensets of pairs used to be; both replayed in one pass now). Each is checked against the old
pass, kept in this folder, on library algorithms, the MSCCL corpus, fused Programs, and random
mutations of them (dependencies dropped or added, slices moved) -- so both verdicts are
exercised, including pairs ordered only through other ranks, which the rank-local clocks leave
to the exact search, and reductions that count a contribution twice.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synccl.collectives import (
    Buffer,
    Channel,
    Collective,
    CollectiveSpec,
    Dependency,
    Instruction,
    Op,
    Program,
    RankProgram,
    Slice,
    XmlError,
    _verifier,
    check,
    fused_ring,
    library,
    load_msccl_xml,
    schedule,
)
from synccl.collectives._verifier import _check_postcondition, _check_progress, _check_races, _check_structure


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_reference = _load("_vector_clock_races")
_old_postcondition = _load("_frozenset_postcondition")


def _agree(program: Program) -> bool:
    """Assert old and new passes agree (when the Program is well formed and runs); whether it ran.

    Also the whole verdict: ``check`` must report what the old sequence of passes reported.
    """
    if _check_structure(program):
        return False
    sched = schedule(program)
    if _check_progress(program, sched):
        return False
    races = _check_races(program, sched)
    assert races == _reference.reference_races(program, sched)
    postcondition = _check_postcondition(program, sched)
    assert postcondition == _old_postcondition.reference_postcondition(program, sched)
    assert check(program) == (races or postcondition)
    return True


def _library_programs() -> list[Program]:
    out = []
    for info in library.algorithms():
        for n, local in ((2, 2), (3, 3), (4, 2), (8, 4)):
            if info.unsupported_reason(n, local) is None:
                options = {"root": 1} if "root" in info.options else {}
                out.append(library.build(info.name, info.collective, n, local_size=local, **options))
    return [*out, fused_ring("all_gather_matmul", 4, pieces=2), fused_ring("matmul_reduce_scatter", 3)]


PROGRAMS = _library_programs()


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.name for p in PROGRAMS])
def test_library_and_fused_programs(program):
    assert _agree(program)


def test_corpus(msccl_corpus):
    ran = 0
    for path in sorted(msccl_corpus.glob("*.xml")):
        try:
            program = load_msccl_xml(path, check_program=False)
        except XmlError:
            continue  # files the importer refuses (tests/interop/test_corpus.py says which, and why)
        ran += _agree(program)
    assert ran >= 20


def test_a_pair_ordered_only_through_another_rank_is_not_a_race():
    """Rank 0 writes output[0] on one channel, then a round trip through rank 1 orders a second write on another."""
    spec = CollectiveSpec(Collective.ALL_GATHER, 2, inplace=False)
    r0 = (
        Channel(0, 1, None, (Instruction(Op.COPY, src=Slice(Buffer.INPUT, 0), dst=Slice(Buffer.OUTPUT, 0)), Instruction(Op.SEND, src=Slice(Buffer.OUTPUT, 0)))),
        Channel(1, None, 1, (Instruction(Op.RECV, dst=Slice(Buffer.OUTPUT, 1)), Instruction(Op.COPY, src=Slice(Buffer.INPUT, 0), dst=Slice(Buffer.OUTPUT, 0)))),
    )
    r1 = (
        Channel(0, None, 0, (Instruction(Op.RECV, dst=Slice(Buffer.OUTPUT, 0)),)),
        Channel(1, 0, None, (Instruction(Op.COPY, src=Slice(Buffer.INPUT, 0), dst=Slice(Buffer.OUTPUT, 1)), Instruction(Op.SEND, src=Slice(Buffer.OUTPUT, 1), deps=(Dependency(0, 0),)))),
    )
    program = Program("round_trip", spec, (RankProgram(0, r0), RankProgram(1, r1)))
    sched = schedule(program)
    assert _check_races(program, sched) == _reference.reference_races(program, sched) == []
    # Without rank 1's dependency the round trip no longer orders rank 0's two writes.
    unordered = replace(r1[1], instructions=(r1[1].instructions[0], replace(r1[1].instructions[1], deps=())))
    loose = replace(program, ranks=(program.ranks[0], RankProgram(1, (r1[0], unordered))))
    sched = schedule(loose)
    found = _check_races(loose, sched)
    assert found == _reference.reference_races(loose, sched) and found and found[0].kind == "race"


@st.composite
def mutated(draw: st.DrawFn) -> Program:
    program = draw(st.sampled_from(PROGRAMS))
    ranks = list(program.ranks)
    for _ in range(draw(st.integers(1, 4))):
        r = draw(st.integers(0, len(ranks) - 1))
        rp = ranks[r]
        if not rp.channels:
            continue
        c = draw(st.integers(0, len(rp.channels) - 1))
        ch = rp.channels[c]
        if not ch.instructions:
            continue
        i = draw(st.integers(0, len(ch.instructions) - 1))
        ins = ch.instructions[i]
        action = draw(st.sampled_from(["drop deps", "add dep", "move dst", "move src"]))
        if action == "drop deps":
            ins = replace(ins, deps=())
        elif action == "add dep" and len(rp.channels) > 1:
            other = draw(st.integers(0, len(rp.channels) - 1))
            if other != c and rp.channels[other].instructions:
                ins = replace(ins, deps=(*ins.deps, Dependency(other, draw(st.integers(0, len(rp.channels[other].instructions) - 1)))))
        elif action == "move dst" and ins.dst is not None:
            ins = replace(ins, dst=replace(ins.dst, index=draw(st.integers(0, max(0, program.buffer_chunks(r, ins.dst.buffer) - ins.dst.count)))))
        elif action == "move src" and ins.src is not None:
            ins = replace(ins, src=replace(ins.src, index=draw(st.integers(0, max(0, program.buffer_chunks(r, ins.src.buffer) - ins.src.count)))))
        instructions = (*ch.instructions[:i], ins, *ch.instructions[i + 1 :])
        ranks[r] = replace(rp, channels=(*rp.channels[:c], replace(ch, instructions=instructions), *rp.channels[c + 1 :]))
    return replace(program, ranks=tuple(ranks))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_programs(program):
    _agree(program)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated(), st.sampled_from(PROGRAMS)))
def test_two_core_verification_reports_what_one_core_does(on_two_cores, program):
    with on_two_cores(_verifier) as forked:
        two_cores = check(program)
    assert two_cores == check(program)
    assert any(forked)
