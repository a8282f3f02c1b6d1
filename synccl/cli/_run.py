"""``synccl run FILE.xml``: run an MSCCL XML file on local ranks and check the numbers (:mod:`synccl._xml_run`)."""

from __future__ import annotations

import argparse

from synccl._xml_run import EXIT_STATUSES, launch_xml
from synccl.collectives import XmlError
from synccl.exceptions import VerificationError
from synccl.units import parse_size

_OPS = ("sum", "prod", "min", "max", "avg")


def register(sub: argparse._SubParsersAction) -> None:
    statuses = ", ".join(f"{code} {meaning}" for code, meaning in EXIT_STATUSES.items())
    run = sub.add_parser(
        "run",
        help="run an MSCCL XML file on local ranks and check the result",
        description="Import and verify an MSCCL XML file, run it on N local ranks under mpiexec with random data "
        "(in place or out of place as the file declares) and compare with numpy. Rank 0 prints PASS or FAIL with time "
        f"and busbw. Exit status: {statuses}.",
    )
    run.add_argument("file", help="an MSCCL XML file (MSCCLang, SCCL, TACCL, TE-CCL, synccl compile)")
    run.add_argument("--nranks", "-n", type=int, help="ranks to start; must equal the file's ngpus (the default)")
    run.add_argument("--size", "-s", default="1M", help="message size as nccl-tests counts it (the larger buffer), e.g. 4K, 1M (default 1M)")
    run.add_argument("--dtype", "-d", default="float32", help="float32, float16, bfloat16, float64, int8, int32, int64 (nccl-tests names too)")
    run.add_argument("--op", default="sum", choices=_OPS, help="reduction (default sum)")
    run.add_argument("--iters", type=int, default=5, help="timed calls after the checked one (default 5)")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        return launch_xml(args.file, args.nranks, size_bytes=parse_size(args.size), dtype=args.dtype, op=args.op, iters=args.iters)
    except VerificationError as err:
        # A file whose Program is wrong is refused, never run: bad input here, not wrong numbers.
        raise XmlError(f"run: {args.file!r} is rejected: {err}") from None
