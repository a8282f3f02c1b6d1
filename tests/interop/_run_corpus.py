"""Worker run on every rank under mpiexec: each MSCCL XML file given, loaded with synccl.load_xml and run.

Usage: python _run_corpus.py FILE.xml ... ; each file runs at 8 x its chunk factor elements per
share (sum) and at an uneven size (max for reductions), in its own mode (in place or out of
place, its root), against the numpy oracle, checking that the imported Program is the one that
ran; then it is unregistered so the next file's Program is the one selected. First, a Program
registered after a call must take over that call's buffers. Rank 0 prints "OK <file> <count>" or "FAIL <file> ..." per run and
"DONE <runs> <failures>"; exits 1 on any failure.
"""

from __future__ import annotations

import os
import sys
import traceback

import numpy as np

import synccl
from synccl._xml_run import check_program_on_ranks
from synccl.collectives import library
from synccl.runtime import register_program, unregister_program


def ran(comm: synccl.Communicator, program) -> bool:
    """Whether ``comm`` prepared a call with ``program`` (the runtime's cache of prepared calls), on the engine it was asked for."""
    native = comm.config.engine == "native"
    return any(call.program is program and (call.native is not None) == native for call in comm._calls.values())


def check_reregistration(comm: synccl.Communicator) -> list[str]:
    """A Program registered after a call on the same buffers takes over the next call."""
    send, recv = np.ones(8, np.float32), np.empty(8 * comm.size, np.float32)
    comm.allgather(send, recv)
    program = library.build("ring", "all_gather", comm.size, channels=2)
    register_program(program)
    try:
        comm.allgather(send, recv)
        return [] if ran(comm, program) else [f"re-registration: rank {comm.rank} reused the call prepared before register_program"]
    finally:
        unregister_program(program)


def main(paths: list[str]) -> int:
    comm = synccl.init()
    runs, failures = 1, check_reregistration(comm)
    for path in paths:
        name = os.path.basename(path)
        program = synccl.load_xml(path)
        try:
            cf = program.spec.chunk_factor
            for count, op in ((8 * cf, "sum"), (6 * cf + 5, "max")):
                runs += 1
                result = check_program_on_ranks(comm, program, count=count, op=op, seed=runs)
                if result.wrong:
                    failures.append(f"{name} {result.describe()}")
                elif not ran(comm, program):
                    failures.append(f"{name}: rank {comm.rank} ran another Program than the imported one")
                elif comm.rank == 0:
                    print(f"OK {name} {count}", flush=True)
        except Exception:  # noqa: BLE001 - report the file that broke, then stop (the communicator may be unusable)
            failures.append(f"{name} rank {comm.rank} raised {traceback.format_exc(limit=4)}")
            break
        finally:
            unregister_program(program)
    if comm.rank == 0 or failures:
        for f in failures:
            print("FAIL", f, flush=True)
        print(f"DONE {runs} {len(failures)}", flush=True)
    comm.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
