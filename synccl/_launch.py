"""Start local ranks under mpiexec: the one place that finds the launcher and builds its command line.

``synccl run`` and ``synccl bench --nranks`` both start ``python -m <module>`` on N ranks of this
machine through :func:`run_ranks`. mpiexec's standard input is ``/dev/null``: the ranks read
none, and mpiexec would otherwise poll the caller's terminal or pipe and forward it to rank 0.
The ranks are local by construction, so MPICH's hydra is told so (``-launcher fork``: it forks
its proxy without deciding from the host name whether to use ssh); another MPI's mpiexec (Open
MPI's, found on ``PATH``) gets no such option.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from synccl.exceptions import SyncclError

__all__ = ["find_mpiexec", "mpiexec_command", "run_ranks"]

logger = logging.getLogger(__name__)


def find_mpiexec(purpose: str = "starting ranks") -> str:
    """The ``mpiexec`` beside the running Python (a virtual environment's), else the one on ``PATH``.

    Parameters
    ----------
    purpose : str
        What needs it, for the error message (``"bench: --nranks"``).

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
        raise SyncclError(f"{purpose} needs mpiexec, but there is none beside {sys.executable} or on PATH; install an MPI (pip install mpich mpi4py)")
    return found


def mpiexec_command(nranks: int, module: str, *args: str, purpose: str = "starting ranks") -> list[str]:
    """The command that runs ``python -m module args...`` on ``nranks`` local ranks.

    Examples
    --------
    >>> mpiexec_command(2, "synccl.bench._worker", "{}")[1:]  # doctest: +ELLIPSIS
    ['-launcher', 'fork', '-n', '2', '...python...', '-m', 'synccl.bench._worker', '{}']
    """
    if nranks < 1:
        raise ValueError(f"{purpose}: the rank count must be >= 1, got {nranks!r}")
    mpiexec = find_mpiexec(purpose)
    local = ["-launcher", "fork"] if _is_hydra(mpiexec) else []
    return [mpiexec, *local, "-n", str(nranks), sys.executable, "-m", module, *args]


def _is_hydra(mpiexec: str) -> bool:
    """Whether ``mpiexec`` is MPICH's hydra (its proxy lies beside it), which takes ``-launcher``."""
    real = Path(mpiexec).resolve()
    return "hydra" in real.name or (real.parent / "hydra_pmi_proxy").is_file()


def run_ranks(
    nranks: int,
    module: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    stdout: TextIO | int | None = None,
    purpose: str = "starting ranks",
) -> int:
    """Run ``python -m module args...`` on ``nranks`` local ranks under mpiexec and wait for them.

    Parameters
    ----------
    nranks : int
        Number of ranks, at least 1.
    module, args
        What each rank runs, with this interpreter.
    env : mapping, optional
        The ranks' environment (default: this process's).
    stdout : file or int, optional
        Where the ranks' standard output goes (this process's by default).
    purpose : str
        Who starts them, for log and error messages.

    Returns
    -------
    int
        mpiexec's exit status (a rank's, or hydra's own when it failed).

    Raises
    ------
    SyncclError
        If no mpiexec is found.
    ValueError
        If ``nranks`` < 1.
    """
    command = mpiexec_command(nranks, module, *args, purpose=purpose)
    logger.info("%s: %s", purpose, " ".join(command))
    return subprocess.run(command, stdin=subprocess.DEVNULL, stdout=stdout, env=None if env is None else dict(env), check=False).returncode  # noqa: S603 - fixed argv
