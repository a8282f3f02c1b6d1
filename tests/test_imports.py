"""The layering holds at import time: importing a stage loads no higher stage and no heavy optional library.

Each case imports one module in a fresh interpreter and checks which modules ended up in
``sys.modules`` (never timings: those vary with the machine and its load).
"""

import json
import subprocess
import sys

import pytest

HEAVY = ("matplotlib", "scipy", "z3", "highspy", "torch", "mpi4py")

# module -> what importing it must not load (synccl stages by subpackage name, libraries by top-level name)
CASES = {
    "synccl": ("synccl.runtime", "synccl.topologies", "synccl.collectives", "synccl.synth", "synccl.sim", "synccl.bench", *HEAVY),
    "synccl.topologies": ("synccl.collectives", "synccl.synth", "synccl.sim", "synccl.runtime", "synccl.bench", *HEAVY),
    "synccl.collectives": ("synccl.synth", "synccl.sim", "synccl.runtime", "synccl.bench", *HEAVY),
    "synccl.sim": ("synccl.synth", "synccl.runtime", "synccl.bench", *HEAVY),
    "synccl.synth": ("synccl.runtime", "synccl.bench", "matplotlib", "torch", "mpi4py"),
    "synccl.runtime": ("synccl.synth", "synccl.sim", "synccl.bench", *HEAVY),
}


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    return set(json.loads(out.splitlines()[-1]))


def _loaded(modules: set[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


@pytest.mark.parametrize("module", sorted(CASES))
def test_import_loads_no_higher_stage(module):
    modules = _modules_after(f"import {module}")
    assert module in modules
    unwanted = [name for name in CASES[module] if _loaded(modules, name)]
    assert not unwanted, f"import {module} loaded {unwanted}"


def test_root_entry_points_load_on_first_use():
    modules = _modules_after(
        "import synccl\n"
        "assert 'synccl.runtime' not in sys.modules\n"
        "import synccl.runtime as rt\n"
        "assert synccl.init is rt.init and synccl.Communicator is rt.Communicator\n"
        "assert synccl.IN_PLACE is rt.IN_PLACE and synccl.load_xml is rt.load_xml\n"
        "assert set(synccl.__all__) <= set(dir(synccl)) and 'topologies' in dir(synccl)"
    )
    assert "synccl.runtime" in modules


def test_root_subpackages_are_attributes():
    import synccl

    assert synccl.topologies.get_topology("ring:4").nranks == 4
    with pytest.raises(AttributeError, match="no_such_thing"):
        synccl.no_such_thing  # noqa: B018


def test_drawing_imports_matplotlib_only_when_drawing(tmp_path):
    modules = _modules_after(
        "from synccl.topologies import draw_topology, ring\n"
        "assert 'matplotlib' not in sys.modules\n"
        f"draw_topology(ring(4), {str(tmp_path / 'ring.png')!r})"
    )
    assert "matplotlib" in modules
    assert (tmp_path / "ring.png").stat().st_size > 0
