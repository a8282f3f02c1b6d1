"""``synccl compile``: a DSL file -> MSCCL XML (``synccl run`` is :mod:`synccl.cli._run`)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from synccl.cli._verify import load_programs
from synccl.collectives import Program, save_msccl_xml
from synccl.exceptions import ProgramError


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
