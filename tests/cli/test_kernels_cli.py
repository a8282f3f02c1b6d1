"""`synccl kernels`: the executor compiled with NVRTC for each architecture asked, then read from the cache."""

import json

import pytest

from synccl.cli import main
from synccl.runtime._kernel_source import GPU_ENTRY, KERNEL_DIR
from synccl.runtime._nvrtc import NvrtcNotFoundError, nvrtc_version


@pytest.fixture
def executor_cache(tmp_path_factory, monkeypatch):
    """The session's kernel cache (shared with tests/runtime/test_nvrtc.py); skips without NVRTC or executor."""
    try:
        nvrtc_version()
    except NvrtcNotFoundError as err:
        pytest.skip(str(err))
    if not (KERNEL_DIR / GPU_ENTRY).exists():
        pytest.skip(f"the executor kernel is not written yet: no {KERNEL_DIR / GPU_ENTRY}")
    folder = tmp_path_factory.getbasetemp() / "synccl-kernels"
    monkeypatch.setenv("SYNCCL_KERNEL_CACHE", str(folder))
    return folder


def test_json_has_one_record_per_architecture(capsys, executor_cache):
    assert main(["kernels", "--arch", "sm_80,sm_90", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["arch"] for r in records] == ["sm_80", "sm_90"]
    for r in records:
        assert r["registers"] > 0 and r["cubin_bytes"] > 0 and r["source"] in ("cached", "compiled") and r["kernels"]
        assert (r["spill_store_bytes"], r["spill_load_bytes"], r["spills"]) == (0, 0, False)
    assert len(list(executor_cache.glob("executor-sm_*.cubin"))) == 2


def test_the_table_says_the_second_run_read_the_cache(capsys, executor_cache):
    assert main(["kernels", "--arch", "sm_90"]) == 0
    capsys.readouterr()
    assert main(["kernels", "--arch", "sm_90"]) == 0
    header, row, where = capsys.readouterr().out.splitlines()
    assert header.split()[:2] == ["arch", "registers/thread"] and row.split()[0] == "sm_90" and "cached" in row.split()
    assert where == f"cubins in {executor_cache}"


@pytest.mark.parametrize("arch", ["compute_80", ",", "sm_80,sm90"])
def test_a_bad_architecture_is_a_one_line_error(capsys, arch):
    assert main(["kernels", "--arch", arch]) == 2
    err = capsys.readouterr().err
    assert err.startswith("synccl kernels: error:") and err.count("\n") == 1


def test_host_adds_the_native_engines_library(capsys):
    try:
        nvrtc_version()
    except NvrtcNotFoundError as err:
        pytest.skip(str(err))
    assert main(["kernels", "--host", "--arch", "sm_80", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["arch"] for r in records] == ["sm_80", "host"]
    host = records[1]
    assert host["library"].endswith(".so") and host["source"] in ("cached", "compiled")
    from pathlib import Path

    assert Path(host["library"]).is_file()
