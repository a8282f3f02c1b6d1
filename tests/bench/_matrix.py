"""Run under mpiexec: every collective x dtype x op, out of place and in place, on one backend.

``mpiexec -n N python tests/bench/_matrix.py BACKEND [--registered]``: rank 0 prints a JSON list of
the failing cases (empty when all agree with the numpy reference); exit status 1 if any failed.
"""

import json
import sys

from mpi4py import MPI

from synccl.bench import COLLECTIVES, BenchConfig, allocate, layout, make_backend, measure

DTYPES = ("float32", "float16", "bfloat16", "float64", "int8", "int32", "int64")
OPS = ("sum", "prod", "min", "max", "avg")


def main(backend_name, registered):
    control = MPI.COMM_WORLD.Dup()
    n = control.Get_size()
    base = BenchConfig("all_reduce", iters=2, warmup=1, backends=(backend_name,), registered=registered)
    backend = make_backend(backend_name, control, base)
    failures = []
    try:
        for collective in COLLECTIVES:
            for dtype in DTYPES:
                for op in OPS if collective.is_combining else ("sum",):
                    config = BenchConfig(collective, iters=2, warmup=1, dtype=dtype, op=op, root=n - 1, backends=(backend_name,), registered=registered)
                    # 48 bytes per rank block plus a remainder: exercises nccl-tests' rounding too.
                    lay = layout(collective, 48 * n + 8, n, config.numpy_dtype.itemsize)
                    buffers = allocate(backend, lay, config.numpy_dtype)
                    for inplace in (False, True):
                        record = measure(backend, config, control, lay, buffers, inplace=inplace)
                        if record.wrong or record.time_us <= 0:
                            failures.append([collective.value, dtype, op, inplace, record.wrong])
    finally:
        backend.close()
        control.Free()
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(json.dumps(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], "--registered" in sys.argv[2:]))
