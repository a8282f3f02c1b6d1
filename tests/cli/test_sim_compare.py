"""``synccl sim --compare``: library, installed, imported and synthesized algorithms side by side with the bound."""

import json
import re

import pytest

from synccl.cache import algorithms_dir
from synccl.cli import main
from synccl.collectives import library, save_msccl_xml
from synccl.exceptions import CollectiveError, Infeasible
from synccl.sim import compare, plot_busbw, size_range
from synccl.topologies import get_topology, save_topology

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SWEEP = ["-b", "1K", "-e", "1M", "-f", "32"]  # 1KiB, 32KiB, 1MiB


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    """No algorithm installed by the user's own ``synccl synth --install`` leaks in."""
    monkeypatch.setenv("SYNCCL_CACHE_DIR", str(tmp_path / "cache"))


def run(capsys, *argv):
    code = main(["sim", "--compare", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def parse_table(out):
    """The table's header and rows as lists of cells (cells are separated by two or more spaces)."""
    lines = [line for line in out.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith("algorithm"))
    header = re.split(r"\s{2,}", lines[start].strip())
    rows = {}
    for line in lines[start + 1 :]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != len(header):
            break
        rows[cells[0]] = cells[1:]
    return header, rows


def test_table_rows_are_algorithms_columns_sizes_and_the_best_is_marked(capsys):
    code, out, err = run(capsys, "-t", "ring:4", "-c", "all_gather", "--no-synth", *SWEEP)
    assert code == 0, err
    header, rows = parse_table(out)
    assert header == ["algorithm", "1KiB", "32KiB", "1MiB"]
    expected = {a.name for a in library.applicable("all_gather", 4, local_size=4)}
    assert set(rows) == expected | {"lower bound"}
    for col in range(3):
        algs = {name: float(cells[col].rstrip("*")) for name, cells in rows.items() if name != "lower bound"}
        marked = {name for name, cells in rows.items() if cells[col].endswith("*")}
        assert marked and all(algs[m] == max(algs.values()) for m in marked)
        assert float(rows["lower bound"][col]) >= max(algs.values())


def test_defaults_sweep_1KiB_to_1GiB_by_4(capsys):
    code, out, err = run(capsys, "-t", "ring:4", "-c", "broadcast", "--no-synth", "-a", "direct")
    header, rows = parse_table(out)
    assert code == 0, err
    assert header[1:] == ["1KiB", "4KiB", "16KiB", "64KiB", "256KiB", "1MiB", "4MiB", "16MiB", "64MiB", "256MiB", "1GiB"]
    assert set(rows) == {"direct", "lower bound"}


def test_json_records_and_the_bound_is_above_every_algorithm(capsys):
    code, out, err = run(capsys, "-t", "dgx1", "-c", "all_reduce", "--no-synth", "--json", *SWEEP)
    assert code == 0, err
    records = json.loads(out)
    sizes = [1 << 10, 32 << 10, 1 << 20]
    labels = {r["algorithm"] for r in records}
    assert labels == {a.name for a in library.applicable("all_reduce", 8, local_size=8)}
    assert len(records) == len(labels) * len(sizes)
    for r in records:
        assert {"algorithm", "source", "size_bytes", "time_us", "busbw_gbps", "lower_bound_us", "bound_busbw_gbps", "best"} <= set(r)
        assert r["topology"] == "dgx1" and r["nranks"] == 8 and r["size_bytes"] in sizes and r["source"] == "library"
        assert r["busbw_gbps"] <= r["bound_busbw_gbps"] * (1 + 1e-9), r
        assert r["time_us"] >= r["lower_bound_us"] * (1 - 1e-9), r
    for size in sizes:
        at = [r for r in records if r["size_bytes"] == size]
        best = max(r["busbw_gbps"] for r in at)
        assert [r["algorithm"] for r in at if r["best"]] == [r["algorithm"] for r in at if r["busbw_gbps"] >= best * (1 - 1e-9)]


def test_plot_is_a_png(capsys, tmp_path):
    png = tmp_path / "cmp.png"
    code, out, err = run(capsys, "-t", "ring:4", "-c", "reduce_scatter", "--no-synth", *SWEEP, "--plot", str(png))
    assert code == 0, err
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == PNG_MAGIC
    assert f"plot: {png}" in out


@pytest.fixture
def dgx1_quad(tmp_path):
    """GPUs 0-3 of a DGX-1 (one fully connected NVLink quad) as a topology file: small enough to synthesize fast."""
    path = tmp_path / "quad.json"
    save_topology(get_topology("dgx1").subset([0, 1, 2, 3]), path)
    return str(path)


@pytest.mark.parametrize(
    ("topology", "collective", "label"),
    [("quad", "all_reduce", "trees"), ("quad", "broadcast", "trees"), ("ring:4", "all_gather", "trees"), ("ring:4", "all_to_all", "flow")],
)
def test_synthesized_algorithms_join_and_stay_below_the_bound(capsys, dgx1_quad, topology, collective, label):
    code, out, err = run(capsys, "-t", dgx1_quad if topology == "quad" else topology, "-c", collective, "--json", *SWEEP)
    assert code == 0, err
    records = json.loads(out)
    mine = [r for r in records if r["algorithm"] == label]
    assert len(mine) == 3 and all(r["source"] == "synth" for r in mine)
    assert all(0 < r["busbw_gbps"] <= r["bound_busbw_gbps"] * (1 + 1e-9) for r in records)
    _, text, _ = run(capsys, "-t", dgx1_quad if topology == "quad" else topology, "-c", collective, *SWEEP)
    assert label in parse_table(text)[1] and f"{label}: " in text  # the row, and the note on its gap to the bound


def test_no_synth_skips_synthesis(capsys):
    _, out, _ = run(capsys, "-t", "ring:4", "-c", "all_gather", "--no-synth", *SWEEP, "--json")
    assert {r["source"] for r in json.loads(out)} == {"library"}


def test_an_infeasible_synthesis_is_skipped_with_a_note(capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise Infeasible("pack_trees: no packing (test)")

    monkeypatch.setattr("synccl.cli._sim.pack_trees", refuse)
    code, out, err = run(capsys, "-t", "ring:4", "-c", "all_gather", *SWEEP)
    assert code == 0 and "trees" not in parse_table(out)[1]
    assert err.count("\n") == 1 and "skipping synthesis of all_gather on ring:4" in err and "no packing (test)" in err


def test_xml_and_installed_programs_join(capsys, tmp_path):
    ring = get_topology("ring:4")
    xml = tmp_path / "mine.xml"
    save_msccl_xml(library.build("ring", "all_gather", 4, bidirectional=True, channels=2), xml)
    folder = algorithms_dir(ring.fingerprint(), cache_dir=tmp_path / "cache")  # where synccl synth --install puts it
    folder.mkdir(parents=True)
    save_msccl_xml(library.build("recursive_doubling", "all_gather", 4), folder / "all_gather-rd.xml")
    code, out, err = run(capsys, "-t", "ring:4", "-c", "all_gather", "--no-synth", "--xml", str(xml), *SWEEP, "--json")
    assert code == 0, err
    sources = {r["algorithm"]: r["source"] for r in json.loads(out)}
    assert sources["ring"] == "library" and sources["recursive_doubling"] == "library"
    assert [s for s in sources.values() if s == "xml"] == ["xml"]
    assert [a for a, s in sources.items() if s == "installed"] == ["recursive_doubling_all_gather_n4 (installed)"]


def test_an_xml_file_for_another_collective_is_refused(capsys, tmp_path):
    xml = tmp_path / "ar.xml"
    save_msccl_xml(library.build("ring", "all_reduce", 4), xml)
    code, _, err = run(capsys, "-t", "ring:4", "-c", "all_gather", "--no-synth", "--xml", str(xml), *SWEEP)
    assert code == 2 and "expected all_gather on 4 ranks" in err


def test_sweep_options_need_compare(capsys):
    code = main(["sim", "-t", "ring:4", "-c", "all_gather", "--plot", "x.png"])
    assert code == 2 and "--plot need --compare" in capsys.readouterr()[1]


def test_plot_busbw_checks_its_input(tmp_path):
    ring = get_topology("ring:4")
    results = compare({"ring": library.build("ring", "all_gather", 4)}, ring, size_range(1024, 2048))
    with pytest.raises(CollectiveError, match="one per size"):
        plot_busbw(results, tmp_path / "x.png", bound_busbw=[1.0])
    with pytest.raises(CollectiveError, match="no results"):
        plot_busbw({}, tmp_path / "x.png")
    plot_busbw(results, tmp_path / "x.svg", title="custom")
    assert "custom" in (tmp_path / "x.svg").read_text()
