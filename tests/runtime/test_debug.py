"""SYNCCL_DEBUG: the settings at init and one line per distinct Program chosen, on stderr."""

import re
import subprocess
import sys

import pytest

SCRIPT = """
import numpy as np, synccl
with synccl.init() as comm:
    for _ in range(3):
        comm.allreduce(np.ones(16, np.float32))          # one line, however often it is called
    comm.allreduce(np.ones(1 << 18, np.float32))         # another size range: another line
    comm.allreduce(np.ones(16, np.float32), algorithm="ring")
print("OK")
"""


def run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", **env}, check=False)


def test_info_logs_settings_and_each_distinct_choice_once():
    run_ = run({"SYNCCL_DEBUG": "info"})
    assert run_.returncode == 0 and run_.stdout.strip() == "OK", run_.stderr
    lines = run_.stderr.splitlines()
    assert all(re.match(r"^\S+:\d+ \[0\] synccl (INFO|WARNING) ", line) for line in lines), lines
    assert any("settings: timeout_s=60.0" in line and "debug='INFO'" in line for line in lines), lines
    choices = [line.split(" synccl INFO ", 1)[1] for line in lines if " -> " in line]
    assert choices == [
        "all_reduce [0B, 256KiB) in place -> one_shot_all_reduce_n1 (default), engine native",
        "all_reduce [256KiB, inf) in place -> ring_all_reduce_n1_c1 (default), engine native",
        "all_reduce [0B, inf) in place -> ring_all_reduce_n1_c1 (algorithm= argument), engine native",
    ], lines


def test_without_debug_nothing_is_printed():
    run_ = run({})
    assert run_.returncode == 0 and run_.stderr == "", run_.stderr


@pytest.mark.parametrize("value", ["LOUD", "2"])
def test_bad_debug_level_is_named(value):
    run_ = run({"SYNCCL_DEBUG": value})
    assert run_.returncode != 0 and f"SYNCCL_DEBUG must be one of WARN, INFO, got {value!r}" in run_.stderr
