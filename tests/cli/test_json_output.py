"""``--json`` prints JSON and nothing else, from a fresh process (HiGHS prints its banner on the C stdout once per process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def stdout_of(*argv: str) -> str:
    """The real file descriptor 1 of ``python argv...`` in a new process (not Python's sys.stdout)."""
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("synth", "all_gather", "--topology", "ring:4", "--method", "trees", "--json", "--quiet"), id="synth-trees"),
        pytest.param(("synth", "all_to_all", "--topology", "ring:4", "--method", "flow", "--json", "--quiet"), id="synth-flow"),
        pytest.param(("synth", "all_gather", "--topology", "ring:4", "--method", "trees", "--json"), id="synth-trees-with-progress"),
        pytest.param(("sim", "-t", "ring:4", "-c", "all_reduce", "--compare", "-b", "1K", "-e", "4K", "--json"), id="sim-compare"),
    ],
)
def test_json_output_is_only_json(argv):
    json.loads(stdout_of("-m", "synccl", *argv))


def test_trees_scale_case_record_is_json():
    record = json.loads(stdout_of("-m", "synccl.bench.trees_scale", "--case", "ring:4", "all_gather", "flat", "0"))
    assert record["ranks"] == 4


def test_a_silent_highs_solver_prints_nothing_even_the_first():
    code = "from synccl.synth._highs import silent_highs\nfor _ in range(2):\n    h = silent_highs()\n    h.run()\nprint('done')"
    assert stdout_of("-c", code) == "done\n"
