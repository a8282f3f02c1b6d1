"""Starting local ranks (synccl/_launch.py): the ranks never see the caller's stdin; hydra-only options go to hydra only."""

from __future__ import annotations

import os
import subprocess
import sys

from synccl._launch import mpiexec_command


def test_the_ranks_read_no_stdin_of_the_caller(tmp_path):
    (tmp_path / "reads_stdin.py").write_text("import sys\nsys.exit(0 if sys.stdin.read() == '' else 1)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    code = "import os, sys\nfrom synccl._launch import run_ranks\nsys.exit(run_ranks(1, 'reads_stdin', env=os.environ))"
    done = subprocess.run([sys.executable, "-c", code], input="typed by the user\n", capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def _fake_bin(tmp_path, *names):
    for name in ("python", "mpiexec", *names):
        path = tmp_path / name
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return str(tmp_path / "python")


def test_hydra_gets_launcher_fork_and_another_mpiexec_does_not(tmp_path, monkeypatch):
    hydra, other = tmp_path / "hydra", tmp_path / "openmpi"
    hydra.mkdir()
    other.mkdir()
    monkeypatch.setattr(sys, "executable", _fake_bin(hydra, "hydra_pmi_proxy"))
    assert mpiexec_command(2, "m")[1:4] == ["-launcher", "fork", "-n"]
    monkeypatch.setattr(sys, "executable", _fake_bin(other))
    assert mpiexec_command(2, "m")[1:3] == ["-n", "2"]
