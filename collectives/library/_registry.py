"""The registry of library algorithms: name + collective -> a function that builds a verified Program.

Builders take the rank count first and keyword-only options after it, e.g.
``ring_all_reduce(nranks, *, channels=1, inplace=False)``. Rooted collectives take ``root``;
algorithms for multi-node machines take ``local_size`` (ranks per machine), which :func:`build`
fills in from a topology.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from synccl.collectives._program import Program
from synccl.collectives._spec import Collective, parse_collective
from synccl.exceptions import CollectiveError, ProgramError

__all__ = ["AlgorithmInfo", "register", "algorithms", "get", "build", "applicable"]

Builder = Callable[..., Program]
#: Returns ``None`` when the rank count (and ranks per machine) is supported, else the reason.
Support = Callable[[int, int | None], str | None]


@dataclass(frozen=True, slots=True)
class AlgorithmInfo:
    """A library algorithm: what it implements and how to build it."""

    name: str
    collective: Collective
    description: str
    builder: Builder
    support: Support
    #: The builder's keyword options (``channels``, ``root``, ``inplace`` ...).
    options: tuple[str, ...] = ()

    @property
    def needs_local_size(self) -> bool:
        """Whether the builder needs the number of ranks per machine."""
        return "local_size" in self.options

    def unsupported_reason(self, nranks: int, local_size: int | None = None) -> str | None:
        """Why the algorithm cannot run on ``nranks`` ranks (``None`` if it can)."""
        if not isinstance(nranks, int) or nranks < 1:
            return f"nranks must be an integer >= 1, got {nranks!r}"
        if self.needs_local_size and local_size is None:
            return "needs the number of ranks per machine (local_size or a multi-node topology)"
        return self.support(nranks, local_size)


_REGISTRY: dict[tuple[Collective, str], AlgorithmInfo] = {}


def register(name: str, collective: Collective | str, description: str, *, support: Support | None = None) -> Callable[[Builder], Builder]:
    """Decorator adding a builder to the library under ``(collective, name)``."""
    coll = parse_collective(collective)

    def decorate(builder: Builder) -> Builder:
        key = (coll, name)
        if key in _REGISTRY:
            raise ProgramError(f"register: algorithm {name!r} for {coll.value} is already registered")
        params = inspect.signature(builder).parameters.values()
        options = tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)
        _REGISTRY[key] = AlgorithmInfo(name, coll, description, builder, support or _any_size, options)
        return builder

    return decorate


def algorithms(collective: Collective | str | None = None) -> list[AlgorithmInfo]:
    """Every registered algorithm, optionally only those for ``collective``, sorted by collective and name.

    >>> sorted({a.name for a in algorithms("all_gather")}) [:2]
    ['direct', 'recursive_doubling']
    """
    coll = parse_collective(collective) if collective is not None else None
    infos = [info for (c, _), info in _REGISTRY.items() if coll is None or c is coll]
    return sorted(infos, key=lambda i: (list(Collective).index(i.collective), i.name))


def get(name: str, collective: Collective | str) -> AlgorithmInfo:
    """The algorithm ``name`` for ``collective``; the error lists the valid names."""
    coll = parse_collective(collective)
    info = _REGISTRY.get((coll, name))
    if info is None:
        valid = ", ".join(i.name for i in algorithms(coll)) or "none"
        raise CollectiveError(f"library: no algorithm {name!r} for {coll.value}; valid: {valid}")
    return info


def applicable(collective: Collective | str, nranks: int, *, local_size: int | None = None) -> list[AlgorithmInfo]:
    """The algorithms for ``collective`` that support ``nranks`` ranks (and ``local_size`` per machine)."""
    return [info for info in algorithms(collective) if info.unsupported_reason(nranks, local_size) is None]


def build(name: str, collective: Collective | str, nranks: int, *, local_size: int | None = None, **options: object) -> Program:
    """Build library algorithm ``name`` for ``collective`` on ``nranks`` ranks.

    Options go to the builder (``channels=2``, ``inplace=True``, ``root=3`` ...); an option the
    builder does not take raises an error naming it.

    >>> build("ring", "all_reduce", 4, channels=2).spec.chunk_factor
    8
    """
    info = get(name, collective)
    reason = info.unsupported_reason(nranks, local_size)
    if reason is not None:
        raise CollectiveError(f"{info.collective.value} {name!r} on {nranks} ranks: {reason}")
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise CollectiveError(f"{info.collective.value} {name!r}: unknown option {unknown[0]!r}; options: {', '.join(info.options) or 'none'}")
    if info.needs_local_size:
        options["local_size"] = local_size
    return info.builder(nranks, **options)


def _any_size(nranks: int, local_size: int | None) -> str | None:
    return None


def power_of_two(nranks: int, local_size: int | None) -> str | None:
    """Support check for algorithms that need a power-of-two rank count."""
    return None if nranks & (nranks - 1) == 0 else f"needs a power-of-two rank count, got {nranks}"


def at_least_two(nranks: int, local_size: int | None) -> str | None:
    """Support check for algorithms that need a peer."""
    return None if nranks >= 2 else "needs at least 2 ranks"


def hierarchical(nranks: int, local_size: int | None) -> str | None:
    """Support check for node-aware algorithms: ranks split evenly into machines."""
    if local_size is None or local_size < 1 or nranks % local_size:
        return f"needs nranks divisible by the ranks per machine, got {nranks} ranks and local_size {local_size!r}"
    return None
