"""The race pass the verifier had before it scaled: vector clocks over every channel of every rank.

Kept as the reference the scalable pass (rank-local clocks, exact search when they do not order
a pair) is checked against: same verdict, same violations, in the same order.
"""

from __future__ import annotations

import numpy as np

from synccl.collectives import OP_SEMANTICS, Buffer, Event, Program, Schedule, Slice
from synccl.collectives._verifier import _MAX_VIOLATIONS
from synccl.exceptions import Violation


class VectorClockRaces:
    """Vector-clock happens-before over all channels of all ranks: the verifier's race pass before it scaled (the reference)."""

    def __init__(self, program: Program, sched: Schedule) -> None:
        self.program = program
        self.events = sched.events
        self.ids = {(rp.rank, ch.id): k for rp in program.ranks for k, ch in enumerate(rp.channels, start=sum(len(r.channels) for r in program.ranks[: rp.rank]))}
        width = len(self.ids)
        self.clock = {k: np.zeros(width, dtype=np.int64) for k in self.ids.values()}
        self.snapshots: dict[tuple[int, int, int], np.ndarray] = {}  # (rank, channel, index) of dep targets
        self.sent_clock: dict[int, np.ndarray] = {}
        self.dep_targets = {(rank, d.channel, d.instruction) for rank, _, _, ins in program.instructions() for d in ins.deps}
        self.last_write: dict[tuple[int, Buffer, int], tuple[int, int, int]] = {}  # -> (channel id, seq, event pos)
        self.reads: dict[tuple[int, Buffer, int], dict[int, tuple[int, int]]] = {}
        self.violations: list[Violation] = []

    def on_event(self, pos: int, ev: Event) -> None:
        me = self.ids[ev.rank, ev.channel]
        vc = self.clock[me]
        for dep in ev.instruction.deps:
            np.maximum(vc, self.snapshots[ev.rank, dep.channel, dep.instruction], out=vc)
        if ev.matched is not None:
            np.maximum(vc, self.sent_clock.pop(ev.matched), out=vc)
        vc[me] = ev.index + 1
        if ev.send_on is not None:
            self.sent_clock[pos] = vc.copy()
        if (ev.rank, ev.channel, ev.index) in self.dep_targets:
            self.snapshots[ev.rank, ev.channel, ev.index] = vc.copy()
        ins = ev.instruction
        sem = OP_SEMANTICS[ins.op]
        if sem.reads_src:
            self._access(pos, ev, me, vc, ins.src, write=False)
        if sem.reads_dst:
            self._access(pos, ev, me, vc, ins.dst, write=False)
        if sem.writes_dst:
            self._access(pos, ev, me, vc, ins.dst, write=True)

    def _access(self, pos: int, ev: Event, me: int, vc: np.ndarray, where: Slice, *, write: bool) -> None:
        spec = self.program.spec
        for i in range(where.index, where.index + where.count):
            loc = (ev.rank, *spec.resolve(ev.rank, where.buffer, i))
            prior = self.last_write.get(loc)
            if prior is not None and prior[0] != me and vc[prior[0]] < prior[1]:
                self._race(ev, loc, self.events[prior[2]], "writes", write)
            if write:
                for other, (seq, opos) in self.reads.get(loc, {}).items():
                    if other != me and vc[other] < seq:
                        self._race(ev, loc, self.events[opos], "reads", write)
                self.last_write[loc] = (me, ev.index + 1, pos)
                self.reads.pop(loc, None)
            else:
                self.reads.setdefault(loc, {})[me] = (ev.index + 1, pos)

    def _race(self, ev: Event, loc: tuple[int, Buffer, int], other: Event, other_does: str, write: bool) -> None:
        if len(self.violations) >= _MAX_VIOLATIONS:
            return
        _, buf, idx = loc
        self.violations.append(
            Violation(
                "race",
                f"{'writes' if write else 'reads'} {buf.value}[{idx}] while channel {other.channel} instruction {other.index} "
                f"{other_does} it with no dependency ordering the two",
                rank=ev.rank,
                channel=ev.channel,
                instruction=ev.index,
                chunk=idx,
            )
        )


def reference_races(program: Program, sched: Schedule) -> list[Violation]:
    """Every race the vector-clock pass finds in a scheduled Program."""
    detector = VectorClockRaces(program, sched)
    for pos, ev in enumerate(sched.events):
        detector.on_event(pos, ev)
    return detector.violations
