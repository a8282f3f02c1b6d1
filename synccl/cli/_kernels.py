"""``synccl kernels``: compile the executor kernel into the kernel cache and report its resources.

For GPUs through NVRTC (``--arch``); with ``--host``, also the host build the native engine runs.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from synccl.cache import kernels_dir
from synccl.cli._format import print_json, table
from synccl.runtime._nvrtc import ArchitectureError, check_arch, compiled_executor

DEFAULT_ARCHS = "sm_80,sm_90"


def register(sub: argparse._SubParsersAction) -> None:
    kern = sub.add_parser("kernels", help="compile the GPU executor kernel (NVRTC) into the kernel cache; report registers and spills")
    kern.add_argument("--arch", default=DEFAULT_ARCHS, help=f"comma-separated GPU architectures (default: {DEFAULT_ARCHS})")
    kern.add_argument("--host", action="store_true", help="also build the host library of the native engine (SYNCCL_ENGINE=native)")
    kern.add_argument("--json", action="store_true", help="print JSON: one record per architecture (and one for the host)")
    kern.set_defaults(func=_run)


def build_records(archs: list[str]) -> list[dict[str, Any]]:
    """Compile (or read from the cache) the executor for each architecture; one record each.

    >>> build_records(["sm_80"])[0]["registers"] > 0  # doctest: +SKIP
    True
    """
    records = []
    for arch in archs:
        start = time.perf_counter()
        kernel = compiled_executor(arch)
        records.append(
            {
                "arch": arch,
                "kernels": list(kernel.kernels),
                "registers": kernel.registers,
                "spill_store_bytes": kernel.spill_store_bytes,
                "spill_load_bytes": kernel.spill_load_bytes,
                "spills": kernel.spills,
                "cubin_bytes": len(kernel.cubin),
                "source": "cached" if kernel.cached else "compiled",
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
    return records


def host_record() -> dict[str, Any]:
    """Build (or find) the host library of the executor; its record.

    >>> host_record()["arch"]  # doctest: +SKIP
    'host'
    """
    from synccl.runtime._host_build import host_library, library_path

    start = time.perf_counter()
    cached = library_path().exists()
    host_library()
    return {"arch": "host", "library": str(library_path()), "source": "cached" if cached else "compiled", "seconds": round(time.perf_counter() - start, 3)}


def parse_archs(text: str) -> list[str]:
    """The architectures of a comma-separated list, in order, without repeats, each checked.

    >>> parse_archs("sm_80, sm_90,sm_80")
    ['sm_80', 'sm_90']
    """
    archs = list(dict.fromkeys(check_arch(a.strip()) for a in text.split(",") if a.strip()))
    if not archs:
        raise ArchitectureError(f"kernels: --arch names no architecture: {text!r}")
    return archs


def _run(args: argparse.Namespace) -> int:
    records = build_records(parse_archs(args.arch))
    host = host_record() if args.host else None
    if args.json:
        print_json(records + ([host] if host else []))
        return 0
    headers = ["arch", "registers/thread", "spill stores (B)", "spill loads (B)", "cubin bytes", "source", "seconds"]
    rows = [
        [r["arch"], r["registers"], r["spill_store_bytes"], r["spill_load_bytes"], r["cubin_bytes"], r["source"], r["seconds"]]
        for r in records
    ]
    print(table(headers, rows))
    for r in records:
        if r["spills"]:
            print(f"{r['arch']}: SPILLS: {r['spill_store_bytes']} bytes stored and {r['spill_load_bytes']} bytes loaded to local memory")
    print(f"cubins in {kernels_dir()}")
    if host is not None:
        print(f"host library ({host['source']}, {host['seconds']} s): {host['library']}")
    return 0
