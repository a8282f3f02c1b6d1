"""``synccl compile`` (DSL file -> MSCCL XML) and ``synccl run`` (an MSCCL XML file on local ranks, checked)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from synccl.bench import launch_xml
from synccl.cli._verify import load_programs
from synccl.collectives import Program, XmlError, save_msccl_xml
from synccl.exceptions import ProgramError, VerificationError
from synccl.units import parse_size

_OPS = ("sum", "prod", "min", "max", "avg")


def register(sub: argparse._SubParsersAction) -> None:
    comp = sub.add_parser(
        "compile",
        help="write the Programs a DSL file builds as MSCCL XML",
        description="Run a DSL file and write the Program it builds as MSCCL XML (for MSCCL_XML_FILES). "
        "If it builds several, --name picks one; without --name each is written to OUTPUT's stem + '.<name>.xml'.",
    )
    comp.add_argument("file", help="a Python file that builds Programs at module level (e.g. 'with program(...) as p:')")
    comp.add_argument("-o", "--output", help="the XML file (default: FILE with the suffix .xml)")
    comp.add_argument("--name", help="the Program to write, by name, when the file builds several")
    comp.set_defaults(func=_compile)

    run = sub.add_parser(
        "run",
        help="run an MSCCL XML file on local ranks and check the result",
        description="Import and verify an MSCCL XML file, run it on N local ranks under mpiexec with random data "
        "(in place or out of place as the file declares) and compare with numpy. Rank 0 prints PASS or FAIL with time "
        "and busbw. Exit status: 0 pass, 1 wrong numbers, 2 bad input or a rejected file, 3 a runtime failure.",
    )
    run.add_argument("file", help="an MSCCL XML file (MSCCLang, SCCL, TACCL, TE-CCL, synccl compile)")
    run.add_argument("--nranks", "-n", type=int, help="ranks to start; must equal the file's ngpus (the default)")
    run.add_argument("--size", "-s", default="1M", help="message size as nccl-tests counts it (the larger buffer), e.g. 4K, 1M (default 1M)")
    run.add_argument("--dtype", "-d", default="float32", help="float32, float16, bfloat16, float64, int8, int32, int64 (nccl-tests names too)")
    run.add_argument("--op", default="sum", choices=_OPS, help="reduction (default sum)")
    run.add_argument("--iters", type=int, default=5, help="timed calls after the checked one (default 5)")
    run.set_defaults(func=_run)


def _compile(args: argparse.Namespace) -> int:
    programs = load_programs(args.file)
    if args.name is not None:
        chosen = [p for p in programs if p.name == args.name]
        if not chosen:
            raise ProgramError(f"compile: {args.file!r} builds no Program named {args.name!r}; it builds {', '.join(repr(p.name) for p in programs)}")
        programs = chosen[:1]
    base = Path(args.output) if args.output else Path(args.file).with_suffix(".xml")
    targets = [base] if len(programs) == 1 else _numbered(base, programs)
    for program, path in zip(programs, targets, strict=True):
        save_msccl_xml(program, path)
        print(f"{path}: {program.name}: {program.spec.describe()}")
    return 0


def _numbered(base: Path, programs: list[Program]) -> list[Path]:
    """``base.<name>.xml`` for each Program (names made file-safe, repeats numbered)."""
    paths: list[Path] = []
    for program in programs:
        stem = f"{base.stem if base.suffix.lower() == '.xml' else base.name}.{re.sub(r'[^A-Za-z0-9_.-]', '_', program.name)}"
        path = base.with_name(f"{stem}.xml")
        k = 2
        while path in paths:
            path = base.with_name(f"{stem}.{k}.xml")
            k += 1
        paths.append(path)
    return paths


def _run(args: argparse.Namespace) -> int:
    try:
        return launch_xml(args.file, args.nranks, size_bytes=parse_size(args.size), dtype=args.dtype, op=args.op, iters=args.iters)
    except VerificationError as err:
        # A file whose Program is wrong is refused, never run: bad input here, not wrong numbers.
        raise XmlError(f"run: {args.file!r} is rejected: {err}") from None
