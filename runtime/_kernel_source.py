"""The executor kernel's source files, as the host compiler and NVRTC receive them.

``runtime/kernels/`` holds one executor (``executor.cuh``) that compiles under both, a
portability header (``portable.h``: thread indices, atomics, fences, pauses) and the two entry
points (``executor.cu`` for NVRTC, ``host.cpp`` for the C++ compiler). The plan layout header
``synccl_abi.h`` is generated from :mod:`synccl.runtime._kernel_abi`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from synccl.runtime._kernel_abi import header

__all__ = ["KERNEL_DIR", "GPU_ENTRY", "HOST_ENTRY", "sources", "source_hash", "write_sources"]

KERNEL_DIR = Path(__file__).with_name("kernels")
GPU_ENTRY = "executor.cu"
HOST_ENTRY = "host.cpp"


def sources() -> dict[str, str]:
    """Every kernel file by name, the generated ``synccl_abi.h`` included.

    >>> sorted(sources())
    ['executor.cu', 'executor.cuh', 'host.cpp', 'portable.h', 'synccl_abi.h']
    """
    files = {path.name: path.read_text() for path in sorted(KERNEL_DIR.iterdir()) if path.suffix in (".h", ".cuh", ".cu", ".cpp")}
    files["synccl_abi.h"] = header()
    return files


def source_hash(*extra: str) -> str:
    """A short hash of the sources and of ``extra`` (compiler, flags, target), naming cached builds.

    >>> len(source_hash("g++", "-O3"))
    16
    """
    digest = hashlib.sha256()
    for name, text in sorted(sources().items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    for item in extra:
        digest.update(item.encode() + b"\0")
    return digest.hexdigest()[:16]


def write_sources(folder: Path) -> Path:
    """Write every kernel file into ``folder`` (an include directory); return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in sources().items():
        (folder / name).write_text(text)
    return folder
