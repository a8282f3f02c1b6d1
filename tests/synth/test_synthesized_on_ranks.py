"""Synthesized algorithms run on real local ranks (the multi-process runtime), checked against numpy."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("topology", "collective", "steps", "rounds", "chunks", "nranks"),
    [
        ("ring:4", "all_gather", 2, 2, 1, 4),
        ("fully-connected:4", "all_reduce", 2, 2, 1, 4),
        ("dgx1", "all_gather", 2, 3, 2, 8),
    ],
)
def test_synthesized_program_runs_on_local_ranks(tmp_path, topology, collective, steps, rounds, chunks, nranks):
    xml = tmp_path / "synth.xml"
    synth = [
        sys.executable,
        "-m",
        "synccl",
        "synth",
        collective,
        "--topology",
        topology,
        "--steps",
        str(steps),
        "--rounds",
        str(rounds),
        "--chunks",
        str(chunks),
        "-o",
        str(xml),
    ]
    made = subprocess.run(synth, capture_output=True, text=True, check=False, timeout=120)
    assert made.returncode == 0, made.stderr[-2000:]
    ran = subprocess.run(
        [sys.executable, "-m", "synccl", "run", str(xml), "--nranks", str(nranks), "--size", "64K", "--iters", "2"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert ran.returncode == 0 and "PASS" in ran.stdout, (ran.stdout[-2000:], ran.stderr[-2000:])


@pytest.mark.parametrize(
    ("topology", "collective", "nranks", "options"),
    [
        ("ring:4", "all_reduce", 4, ()),
        ("dgx1", "all_gather", 8, ()),
        ("dgx1", "broadcast", 8, ("--max-chunks", "8")),
        ("dgx-a100:2", "reduce_scatter", 16, ("--hierarchy", "hierarchical")),
    ],
)
def test_tree_packings_run_on_local_ranks(tmp_path, topology, collective, nranks, options):
    xml = tmp_path / "trees.xml"
    synth = [sys.executable, "-m", "synccl", "synth", collective, "--topology", topology, "--method", "trees", "--quiet", *options, "-o", str(xml)]
    made = subprocess.run(synth, capture_output=True, text=True, check=False, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    ran = subprocess.run(
        [sys.executable, "-m", "synccl", "run", str(xml), "--nranks", str(nranks), "--size", "256K", "--iters", "2"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert ran.returncode == 0 and "PASS" in ran.stdout, (ran.stdout[-2000:], ran.stderr[-2000:])
