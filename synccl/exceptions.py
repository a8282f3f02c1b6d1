"""Every error synccl raises.

Bad input raises a subclass of both :class:`SyncclError` and :class:`ValueError`;
valid input with no solution raises :class:`Infeasible`; a Program that breaks the
collective's contract raises :class:`VerificationError` carrying every violation found.

Messages put the operation first, then what was expected and what was found, with the
culprit shown with ``!r``::

    all_gather: no link 3 -> 5 in topology 'dgx1'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "SyncclError",
    "TopologyError",
    "CollectiveError",
    "ProgramError",
    "Violation",
    "VerificationError",
    "Infeasible",
    "SolverTimeout",
    "CommError",
    "KernelBuildError",
]


class SyncclError(Exception):
    """Base class of every synccl error."""


class TopologyError(SyncclError, ValueError):
    """A topology, its JSON file or its name is malformed or unknown."""


class CollectiveError(SyncclError, ValueError):
    """A collective specification has bad parameters (rank count, root, chunk factor)."""


class ProgramError(SyncclError, ValueError):
    """A Program or DSL call is malformed (bad rank, buffer slice, channel or instruction)."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One way in which a Program fails its collective's contract.

    ``rank``, ``channel``, ``instruction`` and ``chunk`` locate the problem (``None`` where
    a field does not apply); ``message`` says what was expected and what was found.
    """

    kind: str
    message: str
    rank: int | None = None
    channel: int | None = None
    instruction: int | None = None
    chunk: int | None = None

    def __str__(self) -> str:
        where = [
            f"{name} {value}"
            for name, value in (
                ("rank", self.rank),
                ("channel", self.channel),
                ("instruction", self.instruction),
                ("chunk", self.chunk),
            )
            if value is not None
        ]
        location = ", ".join(where)
        return f"{self.kind} at {location}: {self.message}" if location else f"{self.kind}: {self.message}"


class VerificationError(SyncclError):
    """A Program does not implement its collective; ``violations`` lists why."""

    def __init__(self, program_name: str, violations: list[Violation]) -> None:
        self.program_name = program_name
        self.violations = list(violations)
        first = str(self.violations[0]) if self.violations else "no violation recorded"
        more = f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
        super().__init__(f"verify {program_name!r}: {first}{more}")


class Infeasible(SyncclError):
    """The request is well-formed but has no solution (e.g. a disconnected topology)."""


class SolverTimeout(SyncclError):
    """A solver hit its time limit before proving a result."""


class CommError(SyncclError, RuntimeError):
    """A communication failed at run time; ``rank``, ``op`` and ``peer`` say where."""

    def __init__(self, message: str, *, rank: int | None = None, op: str | None = None, peer: int | None = None) -> None:
        self.rank = rank
        self.op = op
        self.peer = peer
        super().__init__(message)


class KernelBuildError(SyncclError, RuntimeError):
    """Building the executor kernel failed (NVRTC or the host C++ compiler); ``log`` holds the compiler's output."""

    def __init__(self, message: str, *, log: str = "") -> None:
        self.log = log
        super().__init__(message)
