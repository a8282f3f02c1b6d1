"""Launching real multi-process jobs the ways users do: mpiexec, torchrun, or torchrun's environment."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
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


def run_mpiexec(n: int, script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [mpiexec(), "-n", str(n), sys.executable, str(HERE / script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False)


def run_torchrun(n: int, script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    torchrun = BIN / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed (pip install torch)")
    cmd = [str(torchrun), "--standalone", f"--nproc-per-node={n}", str(HERE / script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def spawn_with_torch_env(n: int, script: str, *args: str, env: dict[str, str] | None = None) -> list[subprocess.Popen]:
    """Start ``n`` ranks with torchrun's variables but no agent, so a test controls each process."""
    port = free_port()
    procs = []
    for rank in range(n):
        rank_env = {**os.environ, **(env or {}), "RANK": str(rank), "WORLD_SIZE": str(n), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, str(HERE / script), *args], env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def our_segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("synccl-*")}


@pytest.fixture
def no_leftover_segments():
    """The test must leave no synccl shared-memory segment behind."""
    before = our_segments()
    yield
    assert our_segments() - before == set()


@pytest.fixture
def jobs():
    """The launchers, for tests (pytest's importlib mode keeps conftest out of imports)."""

    class Jobs:
        mpiexec = staticmethod(run_mpiexec)
        torchrun = staticmethod(run_torchrun)
        spawn = staticmethod(spawn_with_torch_env)
        segments = staticmethod(our_segments)

    return Jobs
