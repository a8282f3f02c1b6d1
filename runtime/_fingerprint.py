"""Call fingerprints: the arguments every rank must agree on for a collective call.

Ranks compare fingerprints through their status boards (local peers, field by field, so the
error says which argument differs) and through a 63-bit signature that every message carries
(any peer, local or remote).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np

from synccl.collectives import REDUCE_OPS, Collective
from synccl.runtime._buffers import DTYPES, dtype_code

__all__ = ["FIELDS", "REFUSAL", "Fingerprint", "call_fingerprint", "describe_mismatch", "first_mismatch", "signature"]

#: What each field of a :class:`Fingerprint` is called in mismatch messages.
FIELDS = ("collective", "count", "dtype", "op", "root", "in-place mode", "Program")
_COLLECTIVES = tuple(Collective)
_ALLTOALLV = len(_COLLECTIVES)
_OPS = tuple(REDUCE_OPS)
_UNCOMPARED = -1


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The agreed arguments of one call as seven integers (``-1``: not compared), see :data:`FIELDS`."""

    values: tuple[int, int, int, int, int, int, int]
    program: str
    packed: bytes = b""  # the values as seven little-endian int64, as boards store them

    def __post_init__(self) -> None:
        if not self.packed:
            object.__setattr__(self, "packed", struct.pack("<7q", *self.values))


#: What a rank posts instead of a fingerprint when it refuses a call's arguments (see ``Board.refuse``).
REFUSAL = Fingerprint((-2, -2, -2, -2, -2, -2, -2), "refused")


def call_fingerprint(collective: Collective | None, count: int | None, dtype: np.dtype, op: str | None, root: int | None, inplace: bool, program: str) -> Fingerprint:
    """The fingerprint of a call; ``collective=None`` is an all-to-allv, ``count=None`` is not compared.

    >>> call_fingerprint(Collective.BROADCAST, 8, np.dtype("float32"), None, 1, True, "direct").values[4]
    1
    """
    return Fingerprint(
        (
            _ALLTOALLV if collective is None else _COLLECTIVES.index(collective),
            _UNCOMPARED if count is None else count,
            dtype_code(dtype),
            _UNCOMPARED if op is None else _OPS.index(op),
            _UNCOMPARED if root is None else root,
            int(inplace),
            _name_code(program),
        ),
        program,
    )


def _name_code(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") >> 2


def signature(fingerprint: Fingerprint) -> int:
    """A nonzero 63-bit hash of ``fingerprint`` for message headers."""
    payload = struct.pack("<7q", *fingerprint.values)
    return (int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "little") >> 1) or 1


def first_mismatch(mine: Fingerprint, theirs: Fingerprint) -> int | None:
    """Index of the first compared field where two fingerprints differ.

    >>> a = call_fingerprint(Collective.REDUCE, 8, np.dtype("int32"), "sum", 0, False, "direct")
    >>> b = call_fingerprint(Collective.REDUCE, 8, np.dtype("int32"), "sum", 1, False, "direct")
    >>> FIELDS[first_mismatch(a, b)]
    'root'
    """
    for k, (a, b) in enumerate(zip(mine.values, theirs.values, strict=True)):
        if a != b and a != _UNCOMPARED and b != _UNCOMPARED:
            return k
    return None


def describe_mismatch(mine: Fingerprint, theirs: Fingerprint, me: int, peer: int) -> str | None:
    """``ranks disagree on the root: rank 0 has 0, rank 1 has 1``, or ``None`` when they agree.

    >>> a = call_fingerprint(Collective.ALL_REDUCE, 8, np.dtype("int32"), "sum", None, False, "ring")
    >>> b = call_fingerprint(Collective.ALL_REDUCE, 8, np.dtype("int32"), "max", None, False, "ring")
    >>> describe_mismatch(b, a, 1, 0)
    "ranks disagree on the op: rank 0 has 'sum', rank 1 has 'max'"
    """
    field = first_mismatch(mine, theirs)
    if field is None:
        return None
    if FIELDS[field] == "Program":
        return f"ranks disagree on the Program: rank {me} runs {mine.program!r}, rank {peer} another one"
    sides = sorted([(me, _describe_value(field, mine.values[field])), (peer, _describe_value(field, theirs.values[field]))])
    return f"ranks disagree on the {FIELDS[field]}: " + ", ".join(f"rank {rank} has {value}" for rank, value in sides)


def _describe_value(field: int, value: int) -> str:
    name = FIELDS[field]
    if value == _UNCOMPARED:
        return "none"
    if name == "collective":
        return "alltoallv" if value == _ALLTOALLV else _COLLECTIVES[value].value
    if name == "dtype":
        return str(DTYPES[value])
    if name == "op":
        return repr(_OPS[value])
    if name == "in-place mode":
        return "in place" if value else "out of place"
    return str(value)
