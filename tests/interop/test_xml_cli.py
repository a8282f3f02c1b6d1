"""`synccl compile`, `synccl run`, `synccl verify FILE.xml` and `synccl bench --xml`, through main()."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from synccl._xml_run import XmlRunResult
from synccl.bench import BenchConfig
from synccl.cli import main
from synccl.collectives import Collective, library, load_msccl_xml, save_msccl_xml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ring_allgather.py"

TWO_PROGRAMS = """
from synccl.collectives import Buffer, CollectiveSpec, chunk, program

for name, n in (("pair", 2), ("trio", 3)):
    with program(name, CollectiveSpec("all_gather", nranks=n)) as p:
        for r in range(n):
            c = chunk(r, Buffer.INPUT, 0).copy(r, Buffer.OUTPUT, r)
            for step in range(1, n):
                c = c.copy((r + step) % n, Buffer.OUTPUT, r)
    globals()[name] = p
"""


def run(capfd, *argv):
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def test_compile_writes_xml_that_imports_as_the_same_program(capfd, tmp_path):
    out_path = tmp_path / "ring.xml"
    code, out, _ = run(capfd, "compile", EXAMPLE, "-o", out_path)
    assert code == 0 and f"{out_path}: ring_allgather: all_gather n=4 c=1 out-of-place" in out
    assert load_msccl_xml(out_path).spec.collective is Collective.ALL_GATHER


def test_compile_several_programs_by_name_or_each(capfd, tmp_path):
    source = tmp_path / "two.py"
    source.write_text(TWO_PROGRAMS)
    code, out, _ = run(capfd, "compile", source)
    assert code == 0 and load_msccl_xml(tmp_path / "two.pair.xml").nranks == 2 and load_msccl_xml(tmp_path / "two.trio.xml").nranks == 3
    code, _, _ = run(capfd, "compile", source, "--name", "trio", "-o", tmp_path / "t.xml")
    assert code == 0 and load_msccl_xml(tmp_path / "t.xml").nranks == 3
    code, _, err = run(capfd, "compile", source, "--name", "quartet")
    assert code == 2 and "builds no Program named 'quartet'; it builds 'trio', 'pair'" in err


def test_compile_refuses_what_msccl_cannot_run(capfd, tmp_path):
    source = tmp_path / "wide.py"
    source.write_text("from synccl.collectives import library, replicate\nwide = replicate(library.build('ring', 'all_gather', 2), 33)\n")
    code, _, err = run(capfd, "compile", source)
    assert code == 2 and "uses 33 channels (lanes); MSCCL's executor allows at most 32" in err and not (tmp_path / "wide.xml").exists()


def test_verify_xml_ok_and_malformed(capfd, tmp_path):
    good = tmp_path / "good.xml"
    save_msccl_xml(library.build("ring", "all_reduce", 3, inplace=True), good)
    code, out, _ = run(capfd, "verify", good)
    assert code == 0 and out.strip() == "ring_all_reduce_n3_c1: all_reduce n=3 c=3 in-place: ok"
    bad = tmp_path / "bad.xml"
    bad.write_text(good.read_text().replace('type="rrcs"', 'type="rrx"', 1).replace('type="rrs"', 'type="rrx"', 1))
    code, _, err = run(capfd, "verify", bad)
    assert code == 2 and err.count("\n") == 1 and "bad.xml: <gpu id='0'> <tb id=" in err and "attribute 'type' = 'rrx' is not an MSCCL step type" in err


def test_verify_xml_lists_violations_of_a_rejected_file(capfd, msccl_corpus):
    code, out, _ = run(capfd, "verify", msccl_corpus / "sccl_reducescatter_dgx1_8r_s2r3c2.xml")
    assert code == 1 and "reduce_scatter n=8 c=2 out-of-place: FAILED (55 violation(s))" in out
    assert "recv_reduce_copy writes input[1:2] but an out-of-place collective must leave its input buffer unchanged" in out


def test_run_two_ranks_passes(capfd, tmp_path, no_leftover_segments):
    path = tmp_path / "ar.xml"
    save_msccl_xml(library.build("ring", "all_reduce", 2, inplace=True, channels=2), path)
    code, out, err = run(capfd, "run", path, "--nranks", 2, "--size", "4K", "--iters", 2, "--op", "max")
    assert code == 0, err
    assert "PASS ring_all_reduce_n2_c2: all_reduce in place, 2 ranks, 4KiB float32 max: " in out and "busbw" in out


def test_run_refuses_bad_input_without_launching(capfd, tmp_path):
    path = tmp_path / "ag.xml"
    save_msccl_xml(library.build("ring", "all_gather", 4), path)
    code, _, err = run(capfd, "run", path, "--nranks", 3)
    assert code == 2 and "is for 4 ranks (ngpus), not --nranks 3" in err
    code, _, err = run(capfd, "run", path, "--size", 8)
    assert code == 2 and "size 8 bytes is too small for all_gather on 4 ranks (at least 16)" in err
    code, _, err = run(capfd, "run", tmp_path / "missing.xml")
    assert code == 2 and "missing.xml: cannot read" in err


def test_run_refuses_a_rejected_file(capfd, msccl_corpus):
    code, _, err = run(capfd, "run", msccl_corpus / "sccl_allgather_dgx1_8r_s3r4c3_2inst.xml")
    assert code == 2 and "is rejected: verify " in err and "reduces uninitialized data" in err


def test_run_result_lines():
    common = dict(program="p", collective=Collective.ALL_REDUCE, nranks=2, inplace=True, root=None, count=4, size_bytes=16, dtype="float32", op="sum")
    ok = XmlRunResult(**common, wrong=0, wrong_ranks=(), time_us=10.0, algbw_gbps=0.0016, busbw_gbps=0.0016)
    assert ok.describe() == "PASS p: all_reduce in place, 2 ranks, 16B float32 sum: 10.0 us, algbw 0.002 GB/s, busbw 0.002 GB/s"
    bad = XmlRunResult(**common, wrong=3, wrong_ranks=(1,), time_us=None, algbw_gbps=None, busbw_gbps=None)
    assert bad.describe() == "FAIL: p: all_reduce in place, 2 ranks, 16B float32 sum: 3 wrong element(s) on rank(s) [1]"


def test_bench_xml_option(capfd, tmp_path, no_leftover_segments):
    path = tmp_path / "ar.xml"
    save_msccl_xml(library.build("two_shot", "all_reduce", 2), path)
    code, out, err = run(capfd, "bench", "allreduce", "--xml", path, "--nranks", 2, "-b", "4K", "-e", "4K", "-n", 1, "-w", 0)
    assert code == 0, err
    assert f"algorithm from {path})" in out and "Out of bounds values : 0 OK" in out
    with pytest.raises(ValueError, match="excludes --algorithm"):
        BenchConfig("all_reduce", xml=str(path), algorithm="ring")
    code, _, err = run(capfd, "bench", "allgather", "--xml", path, "--nranks", 2, "-b", "4K", "-e", "4K", "-n", 1, "-w", 0)
    assert code == 2 and "is all_reduce on 2 ranks, the run is all_gather on 2" in err


@pytest.fixture
def small_xml_limit(monkeypatch):
    """The MSCCL XML size limit lowered to 1 MiB, so that a file past it is quick to write (the real one is 1 GiB)."""
    import synccl._xml_run
    import synccl.collectives._msccl_xml

    for module in (synccl.collectives._msccl_xml, synccl._xml_run):
        monkeypatch.setattr(module, "MAX_XML_BYTES", 1 << 20)
    return 1 << 20


def test_verify_and_run_refuse_a_device_after_reading_at_most_the_limit(capfd, small_xml_limit):
    code, _, err = run(capfd, "run", "/dev/zero")
    assert code == 2 and err == "synccl run: error: /dev/zero is larger than the 1MiB limit of MSCCL XML files\n"
    code, _, err = run(capfd, "verify", "/dev/zero")
    assert code == 2 and err == "synccl verify: error: /dev/zero is larger than the 16MiB limit of DSL files\n"


def test_an_xml_file_over_the_limit_is_refused_unparsed(capfd, tmp_path, small_xml_limit):
    # Well-formed and invalid (far more <gpu> than ngpus): parsing it would cost seconds and ~10x its size in memory.
    gpu = b'<gpu id="0" i_chunks="1" o_chunks="1" s_chunks="0"><tb id="0" send="-1" recv="-1" chan="0"/></gpu>\n'
    path = tmp_path / "huge.xml"
    with open(path, "wb") as f:
        f.write(b'<algo name="huge" ngpus="2" coll="allreduce">\n')
        f.write(gpu * (small_xml_limit // len(gpu) + 1))
        f.write(b"</algo>\n")
    code, _, err = run(capfd, "verify", path)
    assert code == 2 and err == f"synccl verify: error: {path} is larger than the 1MiB limit of MSCCL XML files\n"


def test_run_reports_a_crashed_rank_as_a_runtime_failure(capfd, caplog, tmp_path, monkeypatch):
    # mpiexec exits with its own codes (9 here, 255 seen) when a rank dies; synccl run promises 0/1/2/3.
    path = tmp_path / "ar.xml"
    save_msccl_xml(library.build("ring", "all_reduce", 2), path)
    bin_dir = Path(sys.executable).parent  # mpiexec is found there through PATH
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nif [ "$PMI_RANK" = 1 ]; then kill -9 $$; fi\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    code, _, err = run(capfd, "run", path, "--size", "4K")
    assert code == 3, err
    assert "run: the job failed: mpiexec exited with status" in caplog.text


def test_run_lives_outside_bench():
    code = "import sys, synccl._xml_run, synccl._xml_worker; print(sorted(m for m in sys.modules if m.startswith('synccl.bench')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
