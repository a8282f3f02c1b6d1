"""Shared test fixtures: one invariant checker for every Program, whoever produced it."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from synccl.cache import kernels_dir
from synccl.collectives import Collective, Program, expected_outputs, verify
from synccl.runtime import run_reference

# Every job of the session finds the executor kernel where `make setup` built it, even in tests
# that point SYNCCL_CACHE_DIR elsewhere (they would otherwise rebuild it, about 8 s a time).
os.environ.setdefault("SYNCCL_KERNEL_CACHE", str(kernels_dir()))

SHARED = Path(__file__).resolve().parents[2] / "shared"
#: The MSCCL XML corpus: $SYNCCL_MSCCL_CORPUS, else ../shared/msccl-xml beside the repository
#: (tests/interop/test_corpus.py and test_fuzz.py, which need it at import time, read it the same way).
MSCCL_CORPUS = Path(os.environ.get("SYNCCL_MSCCL_CORPUS") or SHARED / "msccl-xml")


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


@pytest.fixture
def msccl_corpus() -> Path:
    """The MSCCL XML corpus folder (skips when absent)."""
    if not (MSCCL_CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip(f"the MSCCL XML corpus is absent: no {MSCCL_CORPUS / 'MANIFEST.tsv'}; set SYNCCL_MSCCL_CORPUS to its folder")
    return MSCCL_CORPUS


# -- real multi-process jobs, launched the ways users launch them ---------------------------------

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mpiexec() -> str:
    found = BIN / "mpiexec"
    if found.exists():
        return str(found)
    path = shutil.which("mpiexec")
    if path is None:
        pytest.skip("no mpiexec: pip install mpich mpi4py")
    return path


def run_mpiexec(n: int, script: str | Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [mpiexec(), "-n", str(n), sys.executable, str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False)


def run_torchrun(n: int, script: str | Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    torchrun = BIN / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed (pip install torch)")
    cmd = [str(torchrun), "--standalone", f"--nproc-per-node={n}", str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def spawn_with_torch_env(n: int, script: str | Path, *args: str, env: dict[str, str] | None = None) -> list[subprocess.Popen]:
    """Start ``n`` ranks with torchrun's variables but no agent, so a test controls each process."""
    port = free_port()
    procs = []
    for rank in range(n):
        rank_env = {**os.environ, **(env or {}), "RANK": str(rank), "WORLD_SIZE": str(n), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, str(script), *args], env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def our_segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("synccl-*")}


@pytest.fixture
def no_leftover_segments():
    """The test must leave no synccl shared-memory segment behind."""
    before = our_segments()
    yield
    assert our_segments() - before == set()


def raised_by_rank(stdout: str) -> dict[int, tuple[float, str]]:
    """A failure worker's reports ``RANK r RAISED <seconds> <message>``: rank -> (seconds, message).

    Two ranks' reports may share a line of the merged output: a report ends where the next begins.
    """
    found = re.findall(r"RANK (\d+) RAISED ([0-9.]+) (.*?)(?=RANK \d+ |\n|$)", stdout)
    return {int(r): (float(t), msg) for r, t, msg in found}


@pytest.fixture
def jobs():
    """The launchers, and the parser of failure reports, for tests (pytest's importlib mode keeps conftest out of imports)."""

    class Jobs:
        mpiexec = staticmethod(run_mpiexec)
        torchrun = staticmethod(run_torchrun)
        spawn = staticmethod(spawn_with_torch_env)
        segments = staticmethod(our_segments)
        raised = staticmethod(raised_by_rank)

    return Jobs


@pytest.fixture(scope="session")
def on_two_cores() -> Callable:
    """``with on_two_cores(module) as forked:`` forces the module's lowering or verification onto two cores.

    ``forked`` lists, per :class:`~synccl._beside.Beside` made inside, whether it forked a
    child (to show the two-core path really ran). Skips where forking is not safe.
    """
    from synccl import _beside
    from synccl._beside import Beside, can_fork

    if not can_fork():
        pytest.skip("the two-core paths fork: they need Linux, a second CPU and no other Python thread")

    @contextmanager
    def forced(module) -> Iterator[list[bool]]:
        forked: list[bool] = []

        class CountingBeside(Beside):
            def __init__(self, task):
                super().__init__(task)
                forked.append(self._pid is not None)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(module, "WORTH_FORKING_FROM", 0)
            patch.setattr(_beside, "Beside", CountingBeside)  # what map_beside uses
            if hasattr(module, "Beside"):
                patch.setattr(module, "Beside", CountingBeside)
            yield forked

    return forced
