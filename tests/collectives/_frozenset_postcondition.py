"""The postcondition pass the verifier had before it scaled: symbolic values as frozensets of contributions.

Kept as the reference the bitmask pass is checked against: same verdict, same violations (same
messages), in the same order. Its sets of 1,024 pairs per reduced chunk are what made the
1,024-rank all_reduce out of reach.
"""

from __future__ import annotations

from synccl.collectives import Buffer, Event, Op, Program, Schedule, Slice
from synccl.collectives._execution import replay
from synccl.collectives._spec import Contribution
from synccl.collectives._verifier import _MAX_VIOLATIONS
from synccl.exceptions import Violation

Value = frozenset[Contribution] | None


def reference_postcondition(program: Program, sched: Schedule) -> list[Violation]:
    """The old pass: reduction and compute violations, then postcondition mismatches."""
    return _check_postcondition(program, sched)



class _SymbolicMachine:
    """Chunk contents as sets of contributions; ``None`` is uninitialized memory."""

    def __init__(self, program: Program) -> None:
        self.program = program
        spec = program.spec
        self.memory: dict[tuple[int, Buffer, int], Value] = {}
        self.writer: dict[tuple[int, Buffer, int], Event] = {}
        # A rank that computes its input (PRODUCE) starts with it uninitialized.
        producers = {rank for rank, _, _, ins in program.instructions() if ins.op is Op.PRODUCE}
        for rank in range(spec.nranks):
            if rank not in producers:
                for k, contribution in spec.precondition(rank).items():
                    self.memory[(rank, *spec.resolve(rank, Buffer.INPUT, k))] = frozenset({contribution})
        self.produced: set[tuple[int, int]] = set()  # (rank, input chunk)
        self.consumed: dict[tuple[int, int], tuple[str, Value, Event]] = {}  # (rank, output chunk) -> (kernel, value, step)
        self.violations: list[Violation] = []

    def read(self, event: Event, rank: int, where: Slice) -> tuple[Value, ...]:
        spec = self.program.spec
        return tuple(self.memory.get((rank, *spec.resolve(rank, where.buffer, i))) for i in range(where.index, where.index + where.count))

    def write(self, event: Event, rank: int, where: Slice, value: tuple[Value, ...]) -> None:
        spec = self.program.spec
        for offset, v in enumerate(value):
            loc = (rank, *spec.resolve(rank, where.buffer, where.index + offset))
            self.memory[loc] = v
            self.writer[loc] = event

    def combine(self, event: Event, local: tuple[Value, ...], received: tuple[Value, ...]) -> tuple[Value, ...]:
        out = []
        ins = event.instruction
        operand = ins.dst if ins.op.reads_dst else ins.src  # the local operand (see OpSemantics)
        for offset, (a, b) in enumerate(zip(local, received, strict=True)):
            chunk = operand.index + offset if operand is not None else None
            if a is None or b is None:
                self._flag(event, chunk, "reduces uninitialized data" + (" (local operand)" if a is None else " (received operand)"))
                out.append(None)
                continue
            twice = a & b
            if twice:
                self._flag(event, chunk, f"counts contributions twice: {_format(twice)}")
            out.append(a | b)
        return tuple(out)

    def produce(self, event: Event, rank: int, where: Slice) -> tuple[Value, ...]:
        precondition = self.program.spec.precondition(rank)
        out = []
        for k in range(where.index, where.index + where.count):
            if (rank, k) in self.produced:
                self._flag(event, k, f"computes input[{k}] a second time", check="compute")
            self.produced.add((rank, k))
            out.append(frozenset({precondition[k]}) if k in precondition else None)
        return tuple(out)

    def consume(self, event: Event, rank: int, value: tuple[Value, ...]) -> None:
        kernel = event.instruction.kernel
        for offset, v in enumerate(value):
            k = event.instruction.src.index + offset
            if v is None:
                self._flag(event, k, f"computes from output[{k}] before it holds data", check="compute")
            elif (rank, k) in self.consumed:
                self._flag(event, k, f"computes from output[{k}] a second time", check="compute")
            self.consumed.setdefault((rank, k), (kernel, v, event))

    def _flag(self, event: Event, chunk: int | None, message: str, *, check: str = "reduction") -> None:
        if len(self.violations) < _MAX_VIOLATIONS:
            self.violations.append(Violation(check, message, rank=event.rank, channel=event.channel, instruction=event.index, chunk=chunk))


def _check_postcondition(program: Program, sched: Schedule) -> list[Violation]:
    machine = _SymbolicMachine(program)
    replay(sched, machine)
    out = list(machine.violations)
    out.extend(_check_results(program, machine))
    spec = program.spec
    for rank in range(spec.nranks):
        for idx, expected in spec.postcondition(rank).items():
            loc = (rank, *spec.resolve(rank, Buffer.OUTPUT, idx))
            found = machine.memory.get(loc)
            if found == expected:
                continue
            writer = machine.writer.get(loc)
            where = f" (last written by channel {writer.channel} instruction {writer.index})" if writer else " (never written)"
            out.append(
                Violation(
                    "postcondition",
                    f"output[{idx}] expected {_format(expected)}, found {_format(found)}{where}",
                    rank=rank,
                    channel=writer.channel if writer else None,
                    instruction=writer.index if writer else None,
                    chunk=idx,
                )
            )
            if len(out) >= _MAX_VIOLATIONS:
                return out
    return out


def _check_results(program: Program, machine: _SymbolicMachine) -> list[Violation]:
    """A rank that consumes computes ``kernel(output)``: every constrained chunk, once, final, one kernel."""
    out: list[Violation] = []
    spec = program.spec
    for rank in sorted({r for r, _ in machine.consumed}):
        kernels = sorted({kernel for (r, _), (kernel, _, _) in machine.consumed.items() if r == rank})
        if len(kernels) > 1:
            out.append(Violation("compute", f"computes its result with different kernels {kernels}; one kernel must compute every block", rank=rank))
        for idx, expected in spec.postcondition(rank).items():
            entry = machine.consumed.get((rank, idx))
            if entry is None:
                out.append(Violation("compute", f"never computes from output[{idx}]: its block of the result is missing", rank=rank, chunk=idx))
            elif entry[1] != expected:
                step = entry[2]
                out.append(
                    Violation(
                        "compute",
                        f"computes from output[{idx}] holding {_format(entry[1])}, expected the final {_format(expected)}",
                        rank=rank,
                        channel=step.channel,
                        instruction=step.index,
                        chunk=idx,
                    )
                )
    return out[:_MAX_VIOLATIONS]


def _format(value: Value) -> str:
    """``{r0[1], r2[1]}`` style rendering, shortened when long."""
    if value is None:
        return "uninitialized data"
    items = [f"r{r}[{k}]" for r, k in sorted(value)]
    if len(items) > 6:
        items = items[:3] + [f"... {len(items) - 5} more ..."] + items[-2:]
    return "{" + ", ".join(items) + "}"
