"""Which Program runs a call: by message size, as MSCCL selects by byte ranges.

Order of precedence: the call's ``algorithm=``, then ``SYNCCL_ALGORITHM``, then Programs
registered with :func:`register_program` (synthesized or imported ones) whose byte range holds
the message, then the defaults below.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from synccl.collectives import Collective, Program, library, load_msccl_xml, parse_collective, verify
from synccl.exceptions import CollectiveError

__all__ = ["Choice", "DEFAULTS", "Selection", "select", "load_xml", "register_program", "unregister_program", "registered_programs", "registry_version", "build_program"]

_KIB, _MIB = 1 << 10, 1 << 20


@dataclass(frozen=True, slots=True)
class Choice:
    """Use library ``algorithm`` (with ``options``) for messages in ``[min_bytes, max_bytes)``."""

    algorithm: str
    min_bytes: int = 0
    max_bytes: int | None = None
    options: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True, slots=True)
class Selection:
    """The Program chosen for a call, why (``source``), and the byte range the choice covers."""

    program: Program
    source: str  # "default", "algorithm= argument", "SYNCCL_ALGORITHM", "file PATH" or "registered"
    min_bytes: int = 0
    max_bytes: int | None = None

    def describe(self, *, inplace: bool, engine: str) -> str:
        """One line for ``SYNCCL_DEBUG=INFO``: collective, size range, Program, its source and the engine."""
        from synccl.units import format_size

        hi = "inf" if self.max_bytes is None else format_size(self.max_bytes)
        mode = "in place" if inplace else "out of place"
        return f"{self.program.collective.value} [{format_size(self.min_bytes)}, {hi}) {mode} -> {self.program.name} ({self.source}), engine {engine}"


#: Single-node defaults, measured on the CPU runtime (see the README's table).
DEFAULTS: dict[Collective, tuple[Choice, ...]] = {
    Collective.ALL_REDUCE: (Choice("one_shot", 0, 256 * _KIB), Choice("ring", 256 * _KIB)),
    Collective.ALL_GATHER: (Choice("direct"),),
    Collective.REDUCE_SCATTER: (Choice("ring"),),
    Collective.ALL_TO_ALL: (Choice("pairwise"),),
    Collective.BROADCAST: (Choice("direct", 0, 64 * _KIB), Choice("binomial", 64 * _KIB, options=(("chunks", 4),))),
    Collective.REDUCE: (Choice("direct", 0, 64 * _KIB), Choice("binomial", 64 * _KIB, options=(("chunks", 4),))),
    Collective.GATHER: (Choice("direct"),),
    Collective.SCATTER: (Choice("direct"),),
}
#: Defaults when the job spans several nodes.
MULTI_NODE: dict[Collective, tuple[Choice, ...]] = {
    Collective.ALL_REDUCE: (Choice("hierarchical"),),
    Collective.ALL_TO_ALL: (Choice("hierarchical_2d"),),
}

_REGISTERED: list[tuple[Program, int, int | None]] = []
_SOURCES: dict[int, str] = {}  # id(program) -> where a registered Program came from
_CHANGES = [0]  # bumped on every (un)registration: communicators' prepared calls include it in their keys


def registry_version() -> int:
    """A number that changes whenever the registered Programs change (prepared calls key on it)."""
    return _CHANGES[0]


def register_program(program: Program, *, min_bytes: int | None = None, max_bytes: int | None = None, source: str | None = None) -> None:
    """Make the runtime use ``program`` for matching calls whose size is in ``[min_bytes, max_bytes)``.

    Defaults to the Program's own ``min_bytes``/``max_bytes`` (MSCCL XML carries them).
    ``source`` (e.g. the file it came from) is shown by ``SYNCCL_DEBUG=INFO``.
    """
    verify(program)  # nothing runs unverified
    lo = program.min_bytes if min_bytes is None else min_bytes
    hi = program.max_bytes if max_bytes is None else max_bytes
    _REGISTERED.insert(0, (program, lo, hi))
    _SOURCES[id(program)] = source or "registered"
    _CHANGES[0] += 1


def unregister_program(program: Program) -> None:
    """Stop using ``program`` (registered with :func:`register_program` or :func:`load_xml`) for any call.

    Raises ``ValueError`` if it is not registered.

    >>> from synccl.collectives import library
    >>> prog = library.build("ring", "all_reduce", 2)
    >>> register_program(prog)
    >>> unregister_program(prog)
    >>> any(p is prog for p, _, _ in registered_programs())
    False
    """
    kept = [entry for entry in _REGISTERED if entry[0] is not program]
    if len(kept) == len(_REGISTERED):
        raise ValueError(f"unregister_program: {program.name!r} is not registered")
    _REGISTERED[:] = kept
    _SOURCES.pop(id(program), None)
    _CHANGES[0] += 1


def load_xml(path: str, *, min_bytes: int | None = None, max_bytes: int | None = None, **options: object) -> Program:
    """Import an MSCCL XML file, verify it, and register it for the runtime and the torch backend.

    Its ``minBytes``/``maxBytes`` (or the given range) decide the message sizes it is used for.

    >>> import synccl, tempfile, os
    >>> from synccl.collectives import library, save_msccl_xml
    >>> path = os.path.join(tempfile.mkdtemp(), "ring.xml")
    >>> save_msccl_xml(library.build("ring", "all_reduce", 1), path)
    >>> synccl.load_xml(path).collective.value
    'all_reduce'
    """
    program = load_msccl_xml(path, check_program=False, **options)  # register_program verifies it, once
    register_program(program, min_bytes=min_bytes, max_bytes=max_bytes, source=f"file {path}")
    return program


def registered_programs() -> list[tuple[Program, int, int | None]]:
    """The registered Programs with their byte ranges, most recent first."""
    return list(_REGISTERED)


def _parse_override(text: str | None, collective: Collective) -> str | None:
    if not text:
        return None
    general = None
    for part in text.split(","):
        if "=" in part:
            name, algo = part.split("=", 1)
            if parse_collective(name.strip()) is collective:
                return algo.strip()
        else:
            general = part.strip()
    return general


def select(
    collective: Collective | str,
    nbytes: int,
    *,
    nranks: int,
    inplace: bool,
    root: int | None,
    local_size: int,
    algorithm: str | None = None,
    override: str | None = None,
) -> Selection:
    """The Program for one call (built once per distinct choice and cached), why, and the byte range the choice covers.

    >>> select("all_reduce", 4096, nranks=4, inplace=True, root=None, local_size=4).program.name
    'one_shot_all_reduce_n4'

    >>> select("all_reduce", 1 << 20, nranks=4, inplace=True, root=None, local_size=4).source
    'default'
    """
    coll = parse_collective(collective)
    if algorithm is not None:
        name, source = algorithm, "algorithm= argument"
    else:
        name, source = _parse_override(override, coll), "SYNCCL_ALGORITHM"
    if name is None:
        for prog, lo, hi in _REGISTERED:
            if prog.collective is coll and prog.nranks == nranks and prog.spec.inplace == inplace and prog.spec.root in (root, None) and lo <= nbytes and (hi is None or nbytes < hi):
                return Selection(prog, _SOURCES.get(id(prog), "registered"), lo, hi)
    options: tuple[tuple[str, object], ...] = ()
    lo, hi = 0, None
    if name is None:
        table = MULTI_NODE if local_size < nranks and coll in MULTI_NODE else DEFAULTS
        for choice in table[coll]:
            if choice.min_bytes <= nbytes and (choice.max_bytes is None or nbytes < choice.max_bytes):
                info = library.get(choice.algorithm, coll)
                if info.unsupported_reason(nranks, local_size) is None:
                    name, options, lo, hi = choice.algorithm, choice.options, choice.min_bytes, choice.max_bytes
                    break
        if name is None:
            candidates = library.applicable(coll, nranks, local_size=local_size)
            if not candidates:
                raise CollectiveError(f"{coll.value}: no library algorithm supports {nranks} ranks")
            name = candidates[0].name
        source = "default"
    return Selection(build_program(coll, name, nranks, inplace, root, local_size, options), source, lo, hi)


@lru_cache(maxsize=256)
def build_program(collective: Collective, name: str, nranks: int, inplace: bool, root: int | None, local_size: int, options: tuple[tuple[str, object], ...]) -> Program:
    """Build (once) library algorithm ``name`` for these parameters."""
    kwargs: dict[str, object] = dict(options)
    kwargs["inplace"] = inplace
    if collective.is_rooted:
        kwargs["root"] = root
    info = library.get(name, collective)
    kwargs = {k: v for k, v in kwargs.items() if k in info.options}
    return library.build(name, collective, nranks, local_size=local_size, **kwargs)
