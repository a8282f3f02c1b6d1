"""``synccl kernels``: compile the GPU executor kernel with NVRTC into the kernel cache and report its resources."""

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
    kern.add_argument("--json", action="store_true", help="print JSON: one record per architecture")
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
    if args.json:
        print_json(records)
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
    return 0
