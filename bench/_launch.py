"""Start the benchmark's ranks under mpiexec (through :func:`synccl._launch.run_ranks`, shared with ``synccl run``)."""

from __future__ import annotations

import logging
import os
from typing import TextIO

from synccl._launch import find_mpiexec, run_ranks
from synccl.bench._backends import check_available
from synccl.bench._config import BenchConfig

__all__ = ["find_mpiexec", "launch"]

logger = logging.getLogger(__name__)


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
    >>> import subprocess
    >>> config = BenchConfig("broadcast", min_bytes=64, max_bytes=64, iters=1, warmup=0, backends=("mpi",))
    >>> launch(config, 2, stdout=subprocess.DEVNULL)
    0
    """
    if nranks < 1:
        raise ValueError(f"bench: --nranks must be >= 1, got {nranks!r}")
    if nranks > (os.cpu_count() or 1):
        logger.warning("bench: %d ranks on %d cores; busy-polling ranks will share cores and times will suffer", nranks, os.cpu_count())
    check_available(config.backends, config.device)
    return run_ranks(nranks, "synccl.bench._worker", config.to_json(), stdout=stdout, purpose="bench: --nranks")
