"""``synccl verify FILE``: verify every Program a DSL file builds, or the Program of an MSCCL XML file."""

from __future__ import annotations

import argparse
import os
import sys
import types
from pathlib import Path

from synccl._files import read_limited
from synccl.cli._format import print_json
from synccl.collectives import Program, ProgramBuilder, check, load_msccl_xml
from synccl.exceptions import ProgramError, VerificationError

#: The largest DSL script run (a DSL file is a short Python program).
MAX_DSL_BYTES = 16 << 20
_RUN_NAME = "__synccl_program__"


def register(sub: argparse._SubParsersAction) -> None:
    ver = sub.add_parser("verify", help="verify the Programs a DSL file builds, or an MSCCL XML file")
    ver.add_argument("file", help="a Python file that builds Programs at module level (e.g. 'with program(...) as p:'), or an MSCCL XML file (*.xml)")
    ver.add_argument("--json", action="store_true", help="print JSON")
    ver.set_defaults(func=_run)


def load_programs(path: str | Path) -> list[Program]:
    """Run the DSL file ``path`` and return the Programs it leaves at module level.

    A module-level :class:`Program`, or a ``with program(...) as p`` builder, counts. The DSL
    verifies on leaving the block, so use ``program(..., check=False)`` to have this command
    report the violations instead of stopping at the first failing block.
    """
    namespace = _run_script(os.fspath(path))
    found: list[Program] = []
    for value in namespace.values():
        if isinstance(value, ProgramBuilder):
            value = value.program
        if isinstance(value, Program) and not any(value is seen for seen in found):  # one Program under two names counts once
            found.append(value)
    if not found:
        raise ProgramError(f"verify: {str(path)!r} builds no Program at module level (use 'with program(name, spec) as p:')")
    return found


def _run_script(path: str) -> dict[str, object]:
    """Run the Python file ``path`` as a module of its own (as :func:`runpy.run_path` does) and return its globals.

    The source is read once, bounded (:data:`MAX_DSL_BYTES`), so a device or pipe can neither hang
    nor exhaust memory.
    """
    code = compile(read_limited(path, limit=MAX_DSL_BYTES, what="DSL", error=ProgramError), path, "exec")
    module = types.ModuleType(_RUN_NAME)
    module.__file__ = path
    previous = sys.modules.get(_RUN_NAME)
    sys.modules[_RUN_NAME] = module  # dataclasses and pickle look the module up while it runs
    try:
        exec(code, module.__dict__)  # noqa: S102 - running the user's DSL script is what this command is for
    finally:
        if previous is None:
            sys.modules.pop(_RUN_NAME, None)
        else:
            sys.modules[_RUN_NAME] = previous
    return dict(module.__dict__)


def _run(args: argparse.Namespace) -> int:
    try:
        # An XML file is imported unchecked so that every violation is listed; malformed XML raises XmlError (exit 2).
        programs = [load_msccl_xml(args.file, check_program=False)] if Path(args.file).suffix.lower() == ".xml" else load_programs(args.file)
    except VerificationError as err:
        if args.json:
            print_json([{"program": err.program_name, "ok": False, "violations": [str(v) for v in err.violations]}])
            return 1
        raise
    results = [(prog, check(prog)) for prog in programs]
    if args.json:
        print_json([{"program": p.name, "collective": p.collective.value, "nranks": p.nranks, "ok": not v, "violations": [str(x) for x in v]} for p, v in results])
    else:
        for prog, violations in results:
            status = "ok" if not violations else f"FAILED ({len(violations)} violation(s))"
            print(f"{prog.name}: {prog.spec.describe()}: {status}")
            for v in violations:
                print(f"  {v}")
    return 0 if all(not v for _, v in results) else 1
