"""The shared corpus of MSCCL XML files (MSCCLang, SCCL): each imports and verifies, or is rejected
for exactly the known reason; every accepted file then runs on the runtime with correct numbers.

One mpiexec job per rank count runs all accepted files of that count (tests/interop/_run_corpus.py).
The corpus is $SYNCCL_MSCCL_CORPUS, else ../shared/msccl-xml beside the repository; without it the
tests skip, and ``python tests/interop/test_corpus.py`` (which prints the README's table) says so.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synccl._xml_run import lanes_needed
from synccl.collectives import XmlError, library, load_msccl_xml, save_msccl_xml
from synccl.exceptions import VerificationError

# As tests/conftest.py MSCCL_CORPUS (needed here at import time and when run as a script).
CORPUS = Path(os.environ.get("SYNCCL_MSCCL_CORPUS") or Path(__file__).resolve().parents[3] / "shared" / "msccl-xml")
#: Why the corpus cannot be used, or None.
MISSING = None if (CORPUS / "MANIFEST.tsv").is_file() else f"the MSCCL XML corpus is absent: no {CORPUS / 'MANIFEST.tsv'}; set SYNCCL_MSCCL_CORPUS to its folder"
WORKER = Path(__file__).with_name("_run_corpus.py")

#: Files that are genuinely wrong for what they claim, with the importer's reason (class, fragment).
EXPECTED_REJECTIONS = {
    # MSCCLang's pipeline examples compute a custom pipelined collective but say coll="allreduce".
    "allreduce_pipeline_a100_allpairs_arg8_16r_1i_LL.xml": (VerificationError, "output[0] expected {r0[0], r1[0], r2[0], ... 11 more ..., r14[0], r15[0]}, found"),
    "allreduce_pipeline_a100_ring_arg8_16r_2ch_1i_LL128.xml": (VerificationError, "output[0] expected {r0[0], r1[0], r2[0], ... 11 more ..., r14[0], r15[0]}, found"),
    # `msccl ncclize --instances` emits recv_reduce_copy in an allgather.
    "sccl_allgather_dgx1_8r_s3r4c3_2inst.xml": (VerificationError, "reduces uninitialized data"),
    # SCCL's ncclize reduces into the input buffer of out-of-place collectives.
    "sccl_allreduce_dgx1_8r_composed_rs_s2r3c2_ag_s2r3c2.xml": (VerificationError, "but an out-of-place collective must leave its input buffer unchanged"),
    "sccl_reducescatter_dgx1_8r_s2r3c2.xml": (VerificationError, "but an out-of-place collective must leave its input buffer unchanged"),
    "sccl_alltoall_2xDGX1_16r_gather_scatter.xml": (VerificationError, "but an out-of-place collective must leave its input buffer unchanged"),
    # A custom collective (all-to-next) synccl has no spec for.
    "alltonext_forward_2nodes_1i.xml": (XmlError, "<algo coll='custom'>: the program implements none of"),
    "alltonext_backward_2nodes_1i.xml": (XmlError, "<algo coll='custom'>: the program implements no collective"),
}
#: MANIFEST's collective column -> synccl's name.
COLLECTIVES = {"allreduce": "all_reduce", "allgather": "all_gather", "reducescatter": "reduce_scatter", "alltoall": "all_to_all", "broadcast": "broadcast"}


def manifest() -> list[dict[str, str]]:
    """MANIFEST.tsv's rows (none when the corpus is absent; the tests then skip)."""
    if MISSING:
        return []
    with open(CORPUS / "MANIFEST.tsv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


ROWS = manifest()


def readme_table() -> str:
    """The README's corpus table: ``python tests/interop/test_corpus.py`` prints it."""
    lines = ["| file | ranks | outcome |", "|---|---:|---|"]
    for row in ROWS:
        expected = EXPECTED_REJECTIONS.get(row["file"])
        if expected is None:
            what = f"accepted: {load_msccl_xml(CORPUS / row['file']).spec.describe()}, runs correctly"
        else:
            what = f"rejected: {expected[0].__name__} `{expected[1]}`"
        lines.append(f"| `{row['file']}` | {row['ranks']} | {what} |")
    return "\n".join(lines)


@pytest.mark.parametrize("row", ROWS or [pytest.param(None, id="no-corpus")], ids=lambda r: r["file"] if r else "no-corpus")
def test_file_imports_and_verifies_or_is_rejected_for_the_known_reason(row, msccl_corpus):
    path = msccl_corpus / row["file"]
    expected = EXPECTED_REJECTIONS.get(row["file"])
    if expected is None:
        program = load_msccl_xml(path)
        assert program.nranks == int(row["ranks"])
        assert program.collective.value == COLLECTIVES[row["collective"]]
    else:
        cls, fragment = expected
        with pytest.raises((XmlError, VerificationError)) as info:
            load_msccl_xml(path)
        assert type(info.value) is cls and fragment in str(info.value), str(info.value)


def test_every_expected_rejection_is_in_the_corpus(msccl_corpus):
    assert set(EXPECTED_REJECTIONS) <= {row["file"] for row in ROWS}


def _corpus_run(nranks: int, engine: str) -> pytest.param:
    # Slow (make test-all): 32 oversubscribed ranks (~80 s, one 256-chunk allpairs allreduce), and the
    # Python executor, the reference, on 16 (~20 s); make test runs it to 8 ranks and the native engine to 16.
    slow = nranks == 32 or (engine == "python" and nranks == 16)
    return pytest.param(nranks, engine, id=f"{engine}-{nranks}", marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize(("nranks", "engine"), [_corpus_run(n, e) for e in ("python", "native") for n in (2, 4, 8, 16, 32)])
def test_accepted_files_run_with_correct_numbers(nranks, engine, msccl_corpus, jobs, no_leftover_segments):
    rows = [row for row in ROWS if int(row["ranks"]) == nranks and row["file"] not in EXPECTED_REJECTIONS]
    if not rows:
        pytest.skip(f"no accepted corpus file for {nranks} ranks")
    paths = [msccl_corpus / row["file"] for row in rows]
    lanes = max([8] + [lanes_needed(load_msccl_xml(p)) for p in paths])
    proc = jobs.mpiexec(nranks, WORKER, *map(str, paths), env={"SYNCCL_MAX_LANES": str(lanes), "SYNCCL_ENGINE": engine}, timeout=300)
    assert proc.returncode == 0 and "FAIL" not in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"DONE {1 + 2 * len(rows)} 0" in proc.stdout, proc.stdout[-3000:]
    for row in rows:
        assert proc.stdout.count(f"OK {row['file']} ") == 2, row["file"]


def _as_script(corpus: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYNCCL_MSCCL_CORPUS": str(corpus)}
    return subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env, timeout=120, check=False)


def test_as_a_script_it_says_why_there_is_no_table(tmp_path):
    done = _as_script(tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert f"the MSCCL XML corpus is absent: no {tmp_path / 'MANIFEST.tsv'}; set SYNCCL_MSCCL_CORPUS to its folder" in done.stderr


def test_as_a_script_it_reads_the_corpus_the_variable_names(tmp_path):
    save_msccl_xml(library.build("ring", "all_gather", 2), tmp_path / "ring.xml")
    (tmp_path / "MANIFEST.tsv").write_text("file\tcollective\tranks\tcommand\tnotes\nring.xml\tallgather\t2\tsynccl\t-\n")
    done = _as_script(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| `ring.xml` | 2 | accepted: all_gather n=2 c=1 out-of-place, runs correctly |" in done.stdout


if __name__ == "__main__":
    if MISSING:
        sys.exit(f"{sys.argv[0]}: {MISSING}")
    print(readme_table())
