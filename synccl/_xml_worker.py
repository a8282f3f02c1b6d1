"""One rank of ``synccl run``: ``python -m synccl._xml_worker JOB_JSON`` under mpiexec.

:func:`synccl._xml_run.launch_xml` starts it. Exit status: 0 pass, 1 wrong numbers, 2 bad input
(reported once, by rank 0), 3 a runtime failure (reported by each rank that saw it).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Sequence

import synccl
from synccl._xml_run import check_program_on_ranks
from synccl.exceptions import CommError, SyncclError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job given as the only argument; returns the exit status (never Python's 1 for a crash)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise ValueError(f"run worker: expected one JSON argument, got {len(args)}")
    job = json.loads(args[0])
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        comm = synccl.init()
    except Exception as err:  # noqa: BLE001 - a rank that cannot start is a runtime failure (3), not wrong numbers (1)
        print(f"synccl run: cannot start a rank: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return 3
    try:
        program = synccl.load_xml(job["path"])
        result = check_program_on_ranks(comm, program, count=job["count"], dtype=job["dtype"], op=job["op"], iters=job["iters"])
    except CommError as err:
        print(f"synccl run: rank {comm.rank}: {err}", file=sys.stderr, flush=True)
        return 3
    except (SyncclError, ValueError) as err:
        if comm.rank == 0:
            print(f"synccl run: error: {err}", file=sys.stderr, flush=True)
        return 2
    except Exception:  # noqa: BLE001 - any other failure is a runtime failure (3), with its traceback
        print(f"synccl run: rank {comm.rank}: unexpected failure:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        return 3
    finally:
        comm.close()
    if comm.rank == 0:
        print(result.describe(), flush=True)
    return 1 if result.wrong else 0


if __name__ == "__main__":
    sys.exit(main())
