"""The shared corpus of MSCCL XML files (MSCCLang, SCCL): each imports and verifies, or is rejected
for exactly the known reason; every accepted file then runs on the runtime with correct numbers.

One mpiexec job per rank count runs all accepted files of that count (tests/interop/_run_corpus.py).
"""

import csv
from pathlib import Path

import pytest

from synccl._xml_run import lanes_needed
from synccl.collectives import XmlError, load_msccl_xml
from synccl.exceptions import VerificationError

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "msccl-xml"
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
    path = CORPUS / "MANIFEST.tsv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
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
def test_file_imports_and_verifies_or_is_rejected_for_the_known_reason(row, shared_dir):
    if row is None:
        pytest.skip("MANIFEST.tsv is absent")
    path = shared_dir / "msccl-xml" / row["file"]
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


def test_every_expected_rejection_is_in_the_corpus(shared_dir):
    assert set(EXPECTED_REJECTIONS) <= {row["file"] for row in ROWS}


def _slow_selected(config: pytest.Config) -> bool:
    expression = config.getoption("markexpr") or ""
    return "slow" in expression and "not slow" not in expression


@pytest.mark.parametrize("nranks", [2, 4, 8, 16, pytest.param(32, marks=pytest.mark.slow)])
def test_accepted_files_run_with_correct_numbers(nranks, request, shared_dir, jobs, no_leftover_segments):
    if nranks == 32 and not _slow_selected(request.config):
        pytest.skip("32 oversubscribed ranks on 2 cores take ~80 s (one 256-chunk allpairs allreduce); select with -m slow")
    rows = [row for row in ROWS if int(row["ranks"]) == nranks and row["file"] not in EXPECTED_REJECTIONS]
    if not rows:
        pytest.skip(f"no accepted corpus file for {nranks} ranks")
    paths = [shared_dir / "msccl-xml" / row["file"] for row in rows]
    lanes = max([8] + [lanes_needed(load_msccl_xml(p)) for p in paths])
    proc = jobs.mpiexec(nranks, WORKER, *map(str, paths), env={"SYNCCL_MAX_LANES": str(lanes)}, timeout=300)
    assert proc.returncode == 0 and "FAIL" not in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"DONE {1 + 2 * len(rows)} 0" in proc.stdout, proc.stdout[-3000:]
    for row in rows:
        assert proc.stdout.count(f"OK {row['file']} ") == 2, row["file"]


if __name__ == "__main__":
    print(readme_table())
