"""``synccl synth --method auto|trees|flow``: method choice, records, outputs and errors."""

import json

import numpy as np
import pytest

from synccl.cli import main
from synccl.cli._synth import choose_method
from synccl.collectives import Collective, load_msccl_xml, verify
from synccl.exceptions import CollectiveError


def run(capfd, *argv):
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("collective", "nranks", "smt_options", "method"),
    [
        (Collective.ALL_TO_ALL, 32, False, "flow"),
        (Collective.ALL_REDUCE, 1024, False, "trees"),
        (Collective.BROADCAST, 8, False, "trees"),
        (Collective.GATHER, 8, False, "smt"),
        (Collective.ALL_GATHER, 8, True, "smt"),
    ],
)
def test_auto_picks_by_collective_and_size(collective, nranks, smt_options, method):
    assert choose_method(collective, nranks, smt_options=smt_options) == method


def test_auto_refuses_gather_past_smt_reach():
    with pytest.raises(CollectiveError, match="no polynomial method synthesizes gather"):
        choose_method(Collective.GATHER, 64, smt_options=False)


def test_trees_json_record_carries_the_certificate_and_progress_goes_to_stderr(capfd):
    code, out, err = run(capfd, "synth", "all_gather", "--topology", "dgx1", "--json")
    assert code == 0
    record = json.loads(out)
    assert record["method"] == "trees/flat" and record["gap"] == 0.0
    assert record["algbw_gbps"] == pytest.approx(1200 / 7, rel=1e-6)  # 171.43 GB/s, the cut bound
    assert 0 < record["busbw_gbps_64MiB"] <= record["bound_algbw_gbps"] * 7 / 8
    assert "tree packing on 'dgx1': iteration" in err


def test_trees_xml_output_verifies_and_quiet_silences_progress(capfd, tmp_path):
    path = tmp_path / "bcast.xml"
    code, out, err = run(capfd, "synth", "broadcast", "--topology", "ring:4", "--root", "2", "--quiet", "-o", path)
    assert code == 0 and err == ""
    program = load_msccl_xml(path)
    assert program.collective is Collective.BROADCAST and program.spec.root == 2
    verify(program)
    assert "optimal" in out


def test_flow_uniform_and_skewed(capfd, tmp_path):
    code, out, _ = run(capfd, "synth", "all_to_all", "--topology", "fully-connected:4", "--json", "--quiet")
    record = json.loads(out)
    assert code == 0 and record["method"] == "flow/flat" and record["gap"] == pytest.approx(0.0, abs=1e-9)
    traffic = np.array([[0, 8, 1, 1], [1, 0, 1, 1], [1, 1, 0, 1], [4, 1, 1, 0]], dtype=float)
    np.save(tmp_path / "moe.npy", traffic)
    code, out, _ = run(
        capfd,
        "synth",
        "all_to_all",
        "--topology",
        "fully-connected:4",
        "--traffic",
        tmp_path / "moe.npy",
        "--quiet",
        "-o",
        tmp_path / "moe.json",
    )
    assert code == 0 and "skewed traffic: run its Program with comm.alltoallv" in out
    written = json.loads((tmp_path / "moe.json").read_text())
    assert written["collective"] == "all_to_allv"
    # ... and as a runnable, verified MSCCL XML file.
    code, out, _ = run(capfd, "synth", "all_to_all", "--topology", "fully-connected:4", "--traffic", tmp_path / "moe.npy", "--quiet", "-o", tmp_path / "moe.xml")
    assert code == 0 and verify(load_msccl_xml(tmp_path / "moe.xml")).collective == "all_to_all"
    assert {(r["src"], r["dst"]) for r in written["routes"]} == {(s, d) for s in range(4) for d in range(4) if s != d}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["synth", "all_reduce", "--topology", "ring:4", "--method", "flow"], "--method flow synthesizes all_to_all, not all_reduce"),
        (["synth", "all_to_all", "--topology", "ring:4", "--method", "trees"], "--method trees synthesizes"),
        (["synth", "all_gather", "--topology", "ring:4", "--traffic", "x.npy"], "--traffic is for all_to_all"),
        (["synth", "all_gather", "--topology", "ring:4", "--method", "trees", "--steps", "2"], "SMT options, not for --method trees"),
        (["synth", "all_to_all", "--topology", "ring:4", "--traffic", "missing.npy"], "missing.npy: cannot read traffic matrix file: No such file"),
        (["synth", "all_to_all", "--topology", "ring:4", "--traffic", "/dev/zero"], "/dev/zero is larger than the 64MiB limit of traffic matrix files"),
    ],
)
def test_bad_requests_are_one_line_errors(capfd, argv, message):
    code, _, err = run(capfd, *argv)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_trees_install_for_the_sizes_where_they_win(capfd, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCCL_CACHE_DIR", str(tmp_path))
    code, _, err = run(capfd, "synth", "all_gather", "--topology", "dgx1", "--quiet", "--install")
    assert code == 0, err
    assert "trees-all_gather-dgx1" in err and "installed" in err
    code, out, _ = run(capfd, "algo", "list", "--topology", "dgx1")
    assert code == 0 and "installed for dgx1" in out


def test_an_unpipelined_tree_program_msccl_cannot_run_is_refused_naming_the_limit(capfd, tmp_path, monkeypatch):
    """At 128 ranks the trees are lowered unpipelined already: an export refusal is final, said in one line, and no file is left."""
    from dataclasses import replace

    import synccl.cli._synth_poly as synth_poly
    from synccl.collectives import MSCCL_LIMITS, to_msccl_xml

    # An executor that can wait for 4 blocks only: the 128-rank allreduce's ranks wait for more.
    monkeypatch.setattr(synth_poly, "to_msccl_xml", lambda program: to_msccl_xml(program, limits=replace(MSCCL_LIMITS, max_dependency_block=3)))
    out_path = tmp_path / "ar.xml"
    code, _, err = run(capfd, "synth", "all_reduce", "--topology", "dgx-a100:16", "-o", out_path, "--quiet")
    assert code == 2 and not out_path.exists()
    assert err.count("\n") == 1 and "channels that others wait for; MSCCL's executor names the block a step waits for in an int8, so at most 4 can be waited for" in err
    assert "unpipelined" not in err


@pytest.mark.slow  # ~80 s and 3 GiB on 2 cores: 1,024 ranks, 2.1 M instructions (times are bench/trees_scale's job)
def test_a_1024_rank_all_gather_is_written_as_msccl_xml_and_verified_again(capfd, tmp_path):
    path = tmp_path / "ag.xml"
    code, out, err = run(capfd, "synth", "all_gather", "--topology", "dgx-a100:128", "-o", path, "--quiet")
    assert code == 0, err
    assert "1024" in out and "0.0000%" in out  # the certificate: optimal
    code, out, err = run(capfd, "verify", path)
    assert code == 0, err
    assert out.strip().endswith("all_gather n=1024 c=1 out-of-place: ok")
