"""One rank of a launched benchmark: ``python -m synccl.bench._worker CONFIG_JSON`` under mpiexec.

:func:`~synccl.bench.launch` starts it. Exit status: 0, 1 if any result was wrong, 2 on bad input
(reported once, by rank 0).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from synccl.bench._config import BenchConfig
from synccl.bench._runner import run_bench
from synccl.exceptions import SyncclError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the configuration given as the only argument; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise ValueError(f"bench worker: expected one JSON configuration argument, got {len(args)}")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        records = run_bench(BenchConfig.from_json(args[0]))
    except (SyncclError, ValueError) as err:
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_rank() == 0:
            print(f"synccl bench: error: {err}", file=sys.stderr)
        return 2
    return 1 if any(r.wrong for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
