"""Build the executor kernel for the host with the system C++ compiler, once, and load it.

The library is cached under :func:`synccl.cache.kernels_dir` as ``host-<hash>.so``, the hash
covering the sources, the compiler and its flags and this CPU (``-march=native``). Ranks that
start together take a file lock, so one of them compiles and the others load its result.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from synccl.cache import kernels_dir
from synccl.exceptions import KernelBuildError
from synccl.runtime._kernel_source import HOST_ENTRY, source_hash, write_sources

__all__ = ["host_library", "library_path", "compiler"]

FLAGS = ("-O3", "-march=native", "-std=c++17", "-fPIC", "-shared", "-fno-exceptions", "-Wall", "-Wextra", "-Werror")


def compiler() -> str:
    """The C++ compiler: ``$CXX``, else ``g++``, else ``clang++``; raise when there is none."""
    for candidate in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if candidate and shutil.which(candidate):
            return candidate
    raise KernelBuildError("native engine: no C++ compiler found (tried $CXX, g++, c++, clang++); install one, or use SYNCCL_ENGINE=python")


def _cpu() -> str:
    """What ``-march=native`` depends on: the CPU model and its flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    keys = ("model name", "flags", "Features")
    return "\n".join(sorted({line for line in info.splitlines() if line.split(":")[0].strip() in keys}))


def library_path() -> Path:
    """Where the host build of the current sources lives (it may not exist yet).

    >>> library_path().name.startswith("host-")
    True
    """
    cxx = compiler()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[0]  # noqa: S603 - the user's compiler
    return kernels_dir() / f"host-{source_hash(cxx, version, *FLAGS, _cpu())}.so"


def _build(target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="synccl-build-") as tmp:
        folder = write_sources(Path(tmp))
        out = folder / "executor.so"
        cmd = [compiler(), *FLAGS, "-o", str(out), str(folder / HOST_ENTRY)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603 - fixed arguments
        if done.returncode != 0:
            first = "; ".join(line for line in done.stderr.splitlines() if "error" in line)[:400] or done.stderr[:400]
            raise KernelBuildError(f"native engine: building the host kernel with {cmd[0]} failed: {first}", log=done.stderr)
        tmp_target = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(out, tmp_target)
        os.replace(tmp_target, target)  # atomic: a concurrent loader sees the whole file or none


@functools.cache
def host_library() -> ctypes.CDLL:
    """The host build of the executor, compiled on first use (about 8 s) and cached.

    Returns
    -------
    ctypes.CDLL
        With ``synccl_host_run(launch_address, signature, fresh) -> status`` (ctypes releases
        the GIL during it): a ``fresh`` run starts a call, otherwise it continues a stalled one.

    Examples
    --------
    >>> host_library().synccl_host_run.restype is ctypes.c_int64  # doctest: +SKIP
    True
    """
    target = library_path()
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / "host-build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one rank builds; the others wait and load its result
            if not target.exists():
                _build(target)
    lib = ctypes.CDLL(str(target))
    lib.synccl_host_run.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    lib.synccl_host_run.restype = ctypes.c_int64
    return lib
