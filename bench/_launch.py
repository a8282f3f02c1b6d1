"""Start the benchmark's ranks with mpiexec (the one place that looks for the launcher)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from synccl.bench._backends import check_available
from synccl.bench._config import BenchConfig
from synccl.exceptions import SyncclError

__all__ = ["find_mpiexec", "launch"]

logger = logging.getLogger(__name__)


def find_mpiexec() -> str:
    """The ``mpiexec`` beside the running Python (a virtual environment's), else the one on ``PATH``.

    Returns
    -------
    str
        Path of the launcher.

    Raises
    ------
    SyncclError
        If there is none.

    Examples
    --------
    >>> find_mpiexec()  # doctest: +ELLIPSIS
    '.../mpiexec'
    """
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("mpiexec")
    if found is None:
        raise SyncclError(
            f"bench: --nranks needs mpiexec, but there is none beside {sys.executable} or on PATH; "
            "install an MPI (pip install mpich mpi4py) or start the ranks yourself: mpiexec -n N synccl bench ..."
        )
    return found


def launch(config: BenchConfig, nranks: int, *, stdout: TextIO | int | None = None) -> int:
    """Run ``config`` on ``nranks`` new processes under mpiexec and wait for them.

    The ranks run ``python -m synccl.bench._worker`` with this interpreter; rank 0's table goes to
    ``stdout`` (this process's by default) as it is produced.

    Parameters
    ----------
    config : BenchConfig
        What to measure.
    nranks : int
        Number of ranks, at least 1.
    stdout : file or int, optional
        Where the ranks' standard output goes (a file or a :mod:`subprocess` constant).

    Returns
    -------
    int
        The job's exit status: 0, 1 if some result was wrong, other values if a rank failed.

    Raises
    ------
    ValueError
        If ``nranks`` < 1.
    SyncclError
        If no mpiexec is found or a backend cannot start here (see :func:`~synccl.bench.check_available`).

    Examples
    --------
    >>> config = BenchConfig("broadcast", min_bytes=64, max_bytes=64, iters=1, warmup=0, backends=("mpi",))
    >>> launch(config, 2, stdout=subprocess.DEVNULL)
    0
    """
    if nranks < 1:
        raise ValueError(f"bench: --nranks must be >= 1, got {nranks!r}")
    if nranks > (os.cpu_count() or 1):
        logger.warning("bench: %d ranks on %d cores; busy-polling ranks will share cores and times will suffer", nranks, os.cpu_count())
    check_available(config.backends)
    command = [find_mpiexec(), "-n", str(nranks), sys.executable, "-m", "synccl.bench._worker", config.to_json()]
    logger.info("bench: %s", " ".join(command))
    return subprocess.run(command, stdout=stdout, check=False).returncode
