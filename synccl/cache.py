"""Where installed (synthesized) algorithms live: one folder per topology fingerprint.

``$SYNCCL_CACHE_DIR`` (default ``~/.cache/synccl``) ``/algorithms/<fingerprint>/`` holds one
MSCCL XML file per installed Program; its ``minBytes``/``maxBytes`` are the message sizes it is
used for. ``synccl synth --install`` writes there; the runtime loads the folder of the job's
topology (``SYNCCL_TOPOLOGY``) at ``init``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["algorithms_dir", "installed_files"]


def algorithms_dir(fingerprint: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of installed algorithms for the topology with this fingerprint.

    >>> algorithms_dir("ab12", cache_dir="/tmp/c").as_posix()
    '/tmp/c/algorithms/ab12'
    """
    root = Path(cache_dir) if cache_dir is not None else Path(os.environ.get("SYNCCL_CACHE_DIR") or Path.home() / ".cache" / "synccl")
    return root / "algorithms" / fingerprint


def installed_files(fingerprint: str, *, cache_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The installed MSCCL XML files for a topology, sorted by name (empty when there are none)."""
    folder = algorithms_dir(fingerprint, cache_dir=cache_dir)
    return sorted(folder.glob("*.xml")) if folder.is_dir() else []
