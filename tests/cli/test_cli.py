"""The synccl command line, called in-process through main() and once as `python -m synccl`."""

import json
import subprocess
import sys

import pytest

from synccl.cli import main
from synccl.collectives import Collective, library
from synccl.topologies import get_topology

SIM_TOPOLOGIES = ["ring:8", "line:4", "fully-connected:5", "star:6", "torus2d:3x3", "hypercube:3", "dgx1", "dgx-a100:2", "mi300x", "ndv2:2"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_topo_list(capsys):
    code, out, _ = run(capsys, "topo", "list", "--json")
    names = {t["name"] for t in json.loads(out)}
    assert code == 0 and {"ring:N", "dgx1[:N]"} <= names


def test_topo_show_json_round_trips_the_file_format(capsys):
    code, out, _ = run(capsys, "topo", "show", "dgx1", "--json")
    data = json.loads(out)
    assert code == 0 and len(data["ranks"]) == 8 and all({"src", "dst", "bandwidth", "latency", "kind"} <= set(link) for link in data["links"])


def test_topo_show_draws_a_png(capsys, tmp_path):
    png = tmp_path / "dgx1.png"
    code, out, _ = run(capsys, "topo", "show", "dgx1", "--draw", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "nvlink" in out


def test_algo_list_filters_by_collective(capsys):
    code, out, _ = run(capsys, "algo", "list", "--collective", "all_to_all", "--json")
    assert code == 0 and {a["name"] for a in json.loads(out)} == {a.name for a in library.algorithms("all_to_all")}


SIM_KEYS = {"topology", "collective", "algorithm", "nranks", "size_bytes", "time_us", "algbw_gbps", "busbw_gbps", "lower_bound_us"}


def test_sim_json_keys(capsys):
    code, out, _ = run(capsys, "sim", "--topology", "ring:8", "--collective", "all_reduce", "--algorithm", "ring", "--size", "64MiB", "--json")
    record = json.loads(out)
    assert code == 0 and SIM_KEYS <= set(record)
    assert record["size_bytes"] == 64 << 20 and record["nranks"] == 8 and record["time_us"] >= record["lower_bound_us"]


@pytest.mark.parametrize("topology", SIM_TOPOLOGIES)
@pytest.mark.parametrize("collective", [c.value for c in Collective])
def test_sim_answers_for_every_applicable_algorithm(capsys, topology, collective):
    topo = get_topology(topology)
    code, out, err = run(capsys, "sim", "-t", topology, "-c", collective, "-s", "1M", "--json")
    assert code == 0, err
    records = json.loads(out)
    local = len(topo.ranks_on_host(0))
    expected = {a.name for a in library.applicable(collective, topo.nranks, local_size=local)}
    assert {r["algorithm"] for r in records} == expected
    for r in records:
        assert r["time_us"] > 0 and r["time_us"] >= r["lower_bound_us"] * (1 - 1e-9), r


def test_sim_options_reach_the_builder(capsys):
    _, one, _ = run(capsys, "sim", "-t", "ring:8", "-c", "all_reduce", "-a", "ring", "--json")
    _, two, _ = run(capsys, "sim", "-t", "ring:8", "-c", "all_reduce", "-a", "ring", "--channels", "2", "--bidirectional", "--json")
    assert json.loads(two)["time_us"] < json.loads(one)["time_us"]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["sim", "-t", "rong:8", "-c", "all_reduce"], "unknown topology 'rong:8'; valid names: ring:N"),
        (["sim", "-t", "ring:8", "-c", "allsum"], "unknown collective 'allsum'"),
        (["sim", "-t", "ring:8", "-c", "all_reduce", "-a", "spiral"], "no algorithm 'spiral' for all_reduce; valid:"),
        (["sim", "-t", "ring:8", "-c", "all_reduce", "-s", "lots"], "cannot read 'lots'"),
        (["sim", "-t", "ring:6", "-c", "all_gather", "-a", "recursive_doubling"], "needs a power-of-two rank count, got 6"),
        (["topo", "show", "ring:0"], "ring:0"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert fragment in err and len(err.strip().splitlines()) == 1


GOOD = """
from synccl.collectives import Buffer, CollectiveSpec, chunk, program

with program("pair_allgather", CollectiveSpec("all_gather", 2)) as p:
    for r in range(2):
        chunk(r, Buffer.INPUT, 0).copy(r, Buffer.OUTPUT, r)
        chunk(r, Buffer.INPUT, 0).copy(1 - r, Buffer.OUTPUT, r)
"""

BROKEN = """
from synccl.collectives import Buffer, CollectiveSpec, chunk, program

with program("half_allgather", CollectiveSpec("all_gather", 2), check=False) as p:
    chunk(0, Buffer.INPUT, 0).copy(0, Buffer.OUTPUT, 0)
    chunk(0, Buffer.INPUT, 0).copy(1, Buffer.OUTPUT, 0)
"""


def test_verify_a_dsl_file(capsys, tmp_path):
    path = tmp_path / "good.py"
    path.write_text(GOOD)
    code, out, _ = run(capsys, "verify", str(path))
    assert code == 0 and "pair_allgather: all_gather n=2 c=1 out-of-place: ok" in out


def test_verify_reports_violations_with_locations(capsys, tmp_path):
    path = tmp_path / "broken.py"
    path.write_text(BROKEN)
    code, out, _ = run(capsys, "verify", str(path), "--json")
    (result,) = json.loads(out)
    assert code == 1 and not result["ok"]
    assert any("rank 0, chunk 1: output[1] expected {r1[0]}" in v for v in result["violations"])


def test_verify_file_that_fails_inside_its_block(capsys, tmp_path):
    path = tmp_path / "strict.py"
    path.write_text(BROKEN.replace(", check=False", ""))
    code, _, err = run(capsys, "verify", str(path))
    assert code == 1 and "verify 'half_allgather'" in err


def test_verify_file_without_programs(capsys, tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    code, _, err = run(capsys, "verify", str(path))
    assert code == 2 and "builds no Program at module level" in err


def test_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "synccl", "algo", "list", "--collective", "reduce"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "binomial" in proc.stdout
