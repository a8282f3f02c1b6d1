"""Shared test fixtures: one invariant checker for every Program, whoever produced it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from synccl.collectives import Collective, Program, expected_outputs, verify
from synccl.runtime import run_reference

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _input_size(program: Program, base: int) -> int:
    split = program.collective in (Collective.REDUCE_SCATTER, Collective.ALL_TO_ALL, Collective.SCATTER)
    return base * program.nranks if split else base


def check_numerics(program: Program, *, ops: tuple[str, ...] = ("sum",), elements: int = 5, seed: int = 0) -> None:
    """Verify ``program``, run it on random data and compare every rank with the numpy oracle."""
    verify(program)
    rng = np.random.default_rng(seed)
    size = _input_size(program, elements)
    inputs = [rng.integers(-50, 50, size=size).astype(np.int64) for _ in range(program.nranks)]
    for op in ops:
        got = run_reference(program, inputs, op=op)
        want = expected_outputs(program.collective, inputs, op=op, root=program.spec.root or 0)
        for rank, (g, w) in enumerate(zip(got, want, strict=True)):
            if w is not None:
                np.testing.assert_array_equal(g, w, err_msg=f"{program.name} rank {rank} op {op}")


@pytest.fixture
def check_program() -> Callable[..., None]:
    """The shared invariant checker: verify + numeric comparison with the numpy oracle."""
    return check_numerics


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the repository (skips when absent)."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent")
    return SHARED
