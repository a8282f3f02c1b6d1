"""`synccl bench` end to end: real ranks under mpiexec, each backend checked against the numpy reference."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

import synccl
from synccl.bench import check_available, find_mpiexec
from synccl.cli import main
from synccl.collectives import library, save_msccl_xml
from synccl.exceptions import SyncclError
from synccl.runtime._cuda import cuda_available

MATRIX = Path(__file__).with_name("_matrix.py")
RECORD_KEYS = {"backend", "collective", "nranks", "size_bytes", "count", "dtype", "op", "time_us", "algbw_gbps", "busbw_gbps", "wrong", "inplace"}
SWEEP = ["--nranks", "2", "-b", "4K", "-e", "64K", "-f", "4", "-n", "2", "-w", "1"]


def table_rows(out):
    return [line.split() for line in out.splitlines() if line.strip() and not line.startswith("#")]


def check_sweep(out, records, backends):
    assert [r["backend"] for r in records] == [b for b in backends for _ in range(6)]
    assert all(RECORD_KEYS <= set(r) for r in records)
    assert [r["size_bytes"] for r in records[:6]] == [4096, 4096, 16384, 16384, 65536, 65536]
    assert all(r["wrong"] == 0 and r["time_us"] > 0 and r["nranks"] == 2 for r in records)
    for backend in backends:
        assert f"# Collective test concluded: all_reduce ({backend})" in out
    assert "# Comparison, busbw (GB/s)" in out and out.count("# Out of bounds values : 0 OK") == len(backends)


def test_gloo_and_mpi_sweep_through_the_cli(capfd, tmp_path):
    path, png = tmp_path / "out.json", tmp_path / "bw.png"
    code = main(["bench", "allreduce", *SWEEP, "--backends", "mpi", "--compare", "gloo", "--json", str(path), "--plot", str(png), "--progress"])
    out, err = capfd.readouterr()
    assert code == 0, err
    check_sweep(out, json.loads(path.read_text()), ["mpi", "gloo"])
    assert "[all_reduce gloo] 64KiB (3/3)" in err and png.read_bytes()[:4] == b"\x89PNG"
    assert len(table_rows(out)) == 2 * 3 + 2 * 3  # two tables of three sizes, then the comparison's rows


def test_synccl_compared_with_gloo_and_mpi(capfd, tmp_path):
    path = tmp_path / "out.json"
    code = main(["bench", "allreduce", *SWEEP, "--compare", "gloo,mpi", "--json", str(path)])
    out, err = capfd.readouterr()
    assert code == 0, err
    check_sweep(out, json.loads(path.read_text()), ["synccl", "gloo", "mpi"])


def test_repeat_interleaves_the_backends_and_prints_medians_and_a_summary(capfd, tmp_path):
    path = tmp_path / "out.json"
    code = main(["bench", "allreduce", "--nranks", "2", "-b", "4K", "-e", "16K", "-f", "4", "-n", "2", "-w", "1", "--repeat", "3", "--compare", "mpi", "--json", str(path)])
    out, err = capfd.readouterr()
    assert code == 0, err
    records = json.loads(path.read_text())
    # Every record of every sweep, backends taking turns: sweep 0 on synccl then mpi, sweep 1 ...
    assert [(r["repeat"], r["backend"]) for r in records[::4]] == [(i, b) for i in range(3) for b in ("synccl", "mpi")]
    assert len(records) == 3 * 2 * 4 and all(r["wrong"] == 0 for r in records)
    assert {r["program"] for r in records if r["backend"] == "synccl"} == {"one_shot_all_reduce_n2"} and {r["program"] for r in records if r["backend"] == "mpi"} == {None}
    # One median table per backend, not one per sweep, then the comparison and the summary.
    for backend in ("synccl", "mpi"):
        assert out.count(f"# Collective test concluded: all_reduce ({backend})") == 1
    assert out.count("# Median of 3 sweeps (backends interleaved)") == 2 and "# Comparison, busbw (GB/s)" in out
    summary = out[out.index("# Repeat summary, 3 sweeps") :].splitlines()
    assert summary[1] == "# ratio = other's median / synccl's median, worst = other's median / synccl's slowest sweep (> 1: synccl faster)"
    rows = [line.split() for line in summary if line.strip() and not line.startswith("#")]
    assert [r[0] for r in rows] == ["4096", "16384"] * 2 and all(len(r) == 1 + 4 + 6 for r in rows)
    for size, inplace, row in zip((4096, 16384) * 2, (False, False, True, True), rows, strict=True):
        times = {b: sorted(r["time_us"] for r in records if (r["backend"], r["size_bytes"], r["inplace"]) == (b, size, inplace)) for b in ("synccl", "mpi")}
        cells = [float(x) for x in row[1:]]  # synccl: median min max spread; mpi: median min max spread ratio worst
        want = [*times["synccl"][1:], times["synccl"][0], *times["mpi"][1:], times["mpi"][0]]
        assert [cells[i] for i in (0, 2, 1, 4, 6, 5)] == pytest.approx(want, rel=0.01, abs=0.006)
        assert cells[8:] == pytest.approx([times["mpi"][1] / times["synccl"][1], times["mpi"][1] / times["synccl"][2]], rel=0.01, abs=0.006)
    assert len(table_rows(out)) == 2 * 2 + 2 * 2 + 4  # two median tables, the comparison, the summary


def test_repeat_below_one_is_one_line(capsys):
    assert main(["bench", "allreduce", "--nranks", "2", "--backends", "mpi", "--repeat", "0"]) == 2
    assert capsys.readouterr().err == "synccl bench: error: bench: --repeat must be >= 1, got 0\n"


def test_xml_covering_part_of_the_sweep_names_the_program_that_ran(capfd, tmp_path):
    # Out of place only, from 16KiB up: 4KiB out of place and every in-place call fall back to the defaults.
    path, out_json = tmp_path / "ring16k.xml", tmp_path / "out.json"
    save_msccl_xml(dataclasses.replace(library.build("ring", "all_reduce", 2), min_bytes=16 << 10), path)
    code = main(["bench", "allreduce", *SWEEP, "--xml", str(path), "--json", str(out_json)])
    out, err = capfd.readouterr()
    assert code == 0, err
    note = out[out.index("# Programs run") : out.index("# Out of bounds values")].splitlines()
    file_program = synccl.collectives.load_msccl_xml(path).name
    assert note == [
        f"# Programs run (--xml {path}):",
        "#   out of place, 4KiB: default Program 'one_shot_all_reduce_n2', not the file's",
        f"#   out of place, 16KiB-64KiB: the file's Program {file_program!r}",
        "#   in place, 4KiB-64KiB: default Program 'one_shot_all_reduce_n2', not the file's",
    ]
    records = json.loads(out_json.read_text())
    ran = {(r["size_bytes"], r["inplace"]): (r["program"], r["program_source"]) for r in records}
    assert ran[(16384, False)] == ran[(65536, False)] == (file_program, f"file {path}") and ran[(4096, False)] == ("one_shot_all_reduce_n2", "default")
    assert all(r["wrong"] == 0 for r in records)


def test_runs_as_ranks_of_an_existing_mpi_job(tmp_path):
    path = tmp_path / "out.json"
    command = [find_mpiexec(), "-n", "2", sys.executable, "-m", "synccl", "bench", "broadcast", "-r", "1", "-b", "1K", "-e", "1K", "-n", "1", "-w", "0", "--backends", "mpi", "-d", "int8", "--json", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert rows == [rows[0]] and rows[0][:5] == ["1024", "1024", "int8", "none", "1"]  # rank 0 alone prints
    assert [r["root"] for r in json.loads(path.read_text())] == [1, 1]


def test_bad_input_is_one_line(capsys):
    assert main(["bench", "gather", "--nranks", "2", "--backends", "mpi"]) == 2
    assert capsys.readouterr().err.strip() == "synccl bench: error: bench: cannot benchmark 'gather'; valid: all_reduce, all_gather, reduce_scatter, all_to_all, broadcast"


def test_errors_inside_the_job_are_reported_once(capfd):
    assert main(["bench", "broadcast", "--nranks", "2", "-r", "5", "-b", "1K", "-e", "1K", "--backends", "mpi"]) == 2
    assert capfd.readouterr().err.count("synccl bench: error: bench: root 5 is not a rank of 2") == 1


def test_missing_mpiexec_is_reported(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["bench", "allreduce", "--nranks", "2", "--backends", "mpi"]) == 2
    assert "needs mpiexec" in capsys.readouterr().err


def test_nccl_without_device_cuda_is_one_line(capsys):
    assert main(["bench", "allreduce", "--nranks", "2", "--compare", "nccl"]) == 2
    assert capsys.readouterr().err.strip() == "synccl bench: error: bench: backend 'nccl' runs on GPU buffers; add --device cuda"


@pytest.mark.skipif(cuda_available() is None, reason="a GPU is usable here: test_device_cuda_against_nccl runs the sweep instead")
def test_device_cuda_without_a_gpu_is_one_line(capsys):
    assert main(["bench", "allreduce", "--nranks", "2", "--device", "cuda", "--compare", "nccl"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("synccl bench: error: bench: --device cuda: no usable GPU: ") and "\n" not in err, err


@pytest.mark.skipif(cuda_available() is not None, reason=f"no usable CUDA device: {cuda_available()}")
def test_device_cuda_against_nccl(capfd, tmp_path):
    """synccl's CUDA engine and NCCL in one job on GPU buffers, both checked against numpy (-c 1)."""
    import torch

    path = tmp_path / "gpu.json"
    backends = ["synccl", "nccl"] if torch.cuda.device_count() > 1 else ["synccl"]  # NCCL refuses two ranks on one GPU
    argv = ["bench", "allreduce", "--nranks", "2", "-b", "4K", "-e", "1M", "-f", "16", "-n", "5", "-w", "2", "--device", "cuda", "--backends", ",".join(backends), "--json", str(path)]
    assert main(argv) == 0
    records = json.loads(path.read_text())
    assert {r["backend"] for r in records} == set(backends)
    assert all(r["wrong"] == 0 and r["time_us"] > 0 for r in records), records


def test_synccl_backend_without_runtime_is_reported(monkeypatch):
    def missing(name):
        raise AttributeError(f"module 'synccl' has no attribute {name!r}")

    monkeypatch.delattr(synccl, "init", raising=False)
    monkeypatch.setattr(synccl, "__getattr__", missing)  # the package would load init on first use (PEP 562)
    with pytest.raises(SyncclError, match="synccl.init"):
        check_available(("synccl", "mpi"))


BACKEND_CASES = [
    pytest.param("mpi", id="mpi"),
    pytest.param("gloo", id="gloo"),
    pytest.param("synccl", id="synccl"),
    pytest.param("synccl --registered", id="synccl-registered"),
]


@pytest.mark.parametrize("nranks", [1, 2, pytest.param(3, marks=pytest.mark.slow)])
@pytest.mark.parametrize("backend", BACKEND_CASES)
def test_every_collective_dtype_and_op_is_correct(backend, nranks):
    command = [find_mpiexec(), "-n", str(nranks), sys.executable, str(MATRIX), *backend.split()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and json.loads(done.stdout) == [], done.stdout + done.stderr
