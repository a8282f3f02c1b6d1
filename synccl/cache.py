"""What synccl keeps on disk: installed algorithms and compiled executor kernels.

``$SYNCCL_CACHE_DIR`` (default ``~/.cache/synccl``) ``/algorithms/<fingerprint>/`` holds one
MSCCL XML file per installed Program; its ``minBytes``/``maxBytes`` are the message sizes it is
used for. ``synccl synth --install`` writes there; the runtime loads the folder of the job's
topology (``SYNCCL_TOPOLOGY``) at ``init``. ``kernels/`` holds the executor kernel built for
the host (a shared library) and for GPUs (NVRTC cubins), one file per source hash and target.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["algorithms_dir", "cache_root", "installed_files", "kernels_dir"]


def algorithms_dir(fingerprint: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of installed algorithms for the topology with this fingerprint.

    >>> algorithms_dir("ab12", cache_dir="/tmp/c").as_posix()
    '/tmp/c/algorithms/ab12'
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    return root / "algorithms" / fingerprint


def installed_files(fingerprint: str, *, cache_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The installed MSCCL XML files for a topology, sorted by name (empty when there are none)."""
    folder = algorithms_dir(fingerprint, cache_dir=cache_dir)
    return sorted(folder.glob("*.xml")) if folder.is_dir() else []


def cache_root() -> Path:
    """``$SYNCCL_CACHE_DIR``, else ``~/.cache/synccl``: the root of everything synccl caches.

    >>> cache_root().name in ("synccl",) or "SYNCCL_CACHE_DIR" in os.environ
    True
    """
    return Path(os.environ.get("SYNCCL_CACHE_DIR") or Path.home() / ".cache" / "synccl")


def kernels_dir() -> Path:
    """Where compiled executor kernels live: host libraries and NVRTC cubins, keyed by source hash.

    ``$SYNCCL_KERNEL_CACHE`` overrides it (tests point every job at one folder so each build
    happens once).

    >>> kernels_dir().name == "kernels" or "SYNCCL_KERNEL_CACHE" in os.environ
    True
    """
    override = os.environ.get("SYNCCL_KERNEL_CACHE")
    return Path(override) if override else cache_root() / "kernels"
