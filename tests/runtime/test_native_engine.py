"""The executor kernel's host build (SYNCCL_ENGINE=native) on real processes, against numpy.

The same matrix as the Python executor's (tests/runtime/_matrix.py: every collective, library
algorithm, size, dtype and op, registered buffers, alltoallv, torch tensors), and the same
failure scenarios (tests/runtime/test_failures.py runs its process-level scenarios on both
engines), so plan encoding, tiling, semaphores, dependencies and reductions of the
kernel source are exercised on every run. The corpus runs natively in tests/interop/test_corpus.py.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from synccl.runtime._host_build import host_library, library_path
from synccl.runtime._kernel_abi import Launch, header
from synccl.runtime._kernel_source import sources

HERE = Path(__file__).parent
MATRIX = HERE / "_matrix.py"
NATIVE = {"SYNCCL_ENGINE": "native"}


def assert_all_ranks_pass(proc: subprocess.CompletedProcess, n: int) -> None:
    results = re.findall(r"RESULT (\d+) (\d+) (\d+)", proc.stdout)
    failures = re.findall(r"FAIL [^\n]*", proc.stdout)
    assert proc.returncode == 0 and not failures, (proc.returncode, failures[:5], proc.stderr[-2000:])
    assert sorted(int(r[0]) for r in results) == list(range(n)), proc.stdout[-2000:]
    assert all(int(cases) > 100 and failed == "0" for _, cases, failed in results)


def test_the_host_build_is_cached_and_exports_the_entry_point():
    lib = host_library()
    assert library_path().is_file()
    assert lib.synccl_host_run.restype is ctypes.c_int64


def test_the_kernel_reads_the_generated_layout_and_nothing_else_defines_it():
    text = sources()
    assert "LAUNCH_STEPS = 0," in text["synccl_abi.h"] and text["synccl_abi.h"] == header()
    for name in ("executor.cuh", "host.cpp", "executor.cu"):
        # Layout words are only ever named, never spelled as numbers: no L[<digit>] in the kernel.
        assert not re.search(r"L\[\d", text[name]), name
    assert f"LAUNCH_COUNT = {int(Launch.COUNT)}," in text["synccl_abi.h"]


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_every_collective_on_real_processes(n, jobs, no_leftover_segments):
    assert_all_ranks_pass(jobs.mpiexec(n, MATRIX, "quick", env=NATIVE), n)


def test_several_mib_uneven_sizes_and_many_tiles(jobs, no_leftover_segments):
    assert_all_ranks_pass(jobs.mpiexec(2, MATRIX, "full", env={**NATIVE, "SYNCCL_SLICE_BYTES": "64K"}), 2)


def test_two_nodes_run_their_mpi_connections_in_the_python_executor(jobs, no_leftover_segments):
    assert_all_ranks_pass(jobs.mpiexec(4, MATRIX, "quick", env={**NATIVE, "SYNCCL_LOCAL_SIZE": "2"}), 4)


def test_python_and_native_ranks_read_each_others_messages(jobs, tmp_path, no_leftover_segments):
    """The FIFO descriptors are one layout: a rank on each engine still computes the right sums."""
    script = tmp_path / "mixed.py"
    script.write_text(
        "import os, numpy as np, synccl\n"
        "comm = synccl.init(engine='native' if int(os.environ['RANK']) == 0 else 'python')\n"
        "x = np.arange(300000, dtype=np.float64) * (comm.rank + 1)\n"
        "for _ in range(3):\n"
        "    y = comm.allreduce(x, np.empty_like(x))\n"
        "    assert np.array_equal(y, np.arange(300000) * 3.0), y[:4]\n"
        "print('DONE', comm.rank, comm.config.engine, flush=True)\n"
        "comm.close()\n"
    )
    outs = [p.communicate(timeout=90)[0] for p in jobs.spawn(2, script)]
    assert "DONE 0 native" in outs[0] and "DONE 1 python" in outs[1], outs


def test_an_unknown_engine_is_refused_naming_it():
    done = subprocess.run([sys.executable, "-c", "import synccl; synccl.init(engine='fpga')"], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode != 0 and "SYNCCL_ENGINE must be one of auto, native, python, got 'fpga'" in done.stderr


def _init_with(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    code = "import synccl; c = synccl.init(); print('ENGINE', c.config.engine); c.close()"
    full = {**os.environ, "SYNCCL_KERNEL_CACHE": str(tmp_path), "CXX": "false", "SYNCCL_DEBUG": "WARN", **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, check=False, timeout=60)


def test_auto_falls_back_to_the_python_executor_saying_why(tmp_path):
    done = _init_with({"SYNCCL_ENGINE": "auto"}, tmp_path)
    assert done.returncode == 0 and "ENGINE python" in done.stdout, done.stderr
    assert "the native engine is unavailable" in done.stderr and "building the host kernel with false failed" in done.stderr


def test_native_asked_for_but_unbuildable_is_an_init_error(tmp_path):
    done = _init_with({"SYNCCL_ENGINE": "native"}, tmp_path)
    assert done.returncode != 0 and "init: SYNCCL_ENGINE=native: native engine: building the host kernel with false failed" in done.stderr, done.stderr
