"""nccl-tests' text layout, the comparison, JSON records and the plot."""

import json
import math
import re

import pytest

from synccl.bench import BenchConfig, Record, comparison, float_cell, footer, header, plot, row, write_json
from synccl.bench._report import medians, program_note, repeat_stats, repeat_summary

RECORD_KEYS = {"backend", "collective", "nranks", "size_bytes", "count", "dtype", "op", "time_us", "algbw_gbps", "busbw_gbps", "wrong", "inplace"}


def record(backend="mpi", size=4096, inplace=False, time_us=10.0, wrong=0, **kw):
    algbw = size / time_us / 1e3
    fields = dict(collective="all_reduce", nranks=2, count=size // 4, dtype="float32", op="sum", root=None)
    fields.update(kw)
    return Record(backend, size_bytes=size, inplace=inplace, time_us=time_us, algbw_gbps=algbw, busbw_gbps=algbw, wrong=wrong, **fields)


@pytest.mark.parametrize(
    ("value", "width", "text"),
    [(0.5, 6, "  0.50"), (123.456, 6, "123.46"), (1234.5, 6, "1234.5"), (123456.0, 6, "123456"), (1234567.0, 6, " 1e+06"), (12345678.0, 7, "1.2e+07")],
)
def test_float_cell_matches_nccl_tests_getfloatstr(value, width, text):
    assert float_cell(value, width) == text


def test_row_columns_line_up_with_the_header():
    config = BenchConfig("all_reduce", min_bytes=4096, max_bytes=4096)
    head = header(config, backend="synccl", version="synccl 0.1.0", nranks=2, devices=[(0, 1, "a"), (1, 2, "a")]).splitlines()
    line = row(record(), record(inplace=True, wrong=None))
    names = head[-2]
    # Every column ends where its header ends, as in nccl-tests' fixed-width printf layout.
    ends = [m.end() for m in re.finditer(r"\S+", names)][1:]
    cells = [m.end() for m in re.finditer(r"\S+", line)]
    assert ends == cells
    assert names.split()[1:] == ["size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time", "algbw", "busbw", "#wrong"]
    assert "out-of-place" in head[-3] and "in-place" in head[-3] and head[-1].split()[1:3] == ["(B)", "(elements)"]


def test_header_names_the_run():
    config = BenchConfig("reduce_scatter", min_bytes=8, max_bytes=256 << 20, registered=True, algorithm="ring")
    text = header(config, backend="synccl", version="synccl 0.1.0", nranks=4, devices=[(r, 100 + r, "h") for r in range(4)])
    assert "# Collective test starting: reduce_scatter (registered buffers, algorithm ring)" in text
    assert "nRanks 4 minBytes 8 maxBytes 268435456 step: 2(factor) warmup iters: 5 iters: 20 validation: 1" in text
    assert text.count("#  Rank") == 4


def test_row_fields():
    line = row(record(dtype="bfloat16", count=2048, collective="all_gather", op=None), record(inplace=True, wrong=None))
    size, count, dtype, op, root, *rest = line.split()
    assert (size, count, dtype, op, root) == ("4096", "2048", "bfloat16", "none", "-1")
    assert rest[3] == "0" and rest[-1] == "N/A" and len(rest) == 8


def test_row_prints_broadcast_root():
    assert row(record(root=3, op=None), record(root=3, op=None)).split()[4] == "3"


def test_footer_counts_sizes_with_errors():
    recs = [record(wrong=0), record(inplace=True, wrong=5), record(size=8192, wrong=1)]
    text = footer(recs, collective="all_reduce", backend="mpi")
    assert "# Out of bounds values : 2 FAILED" in text and "Collective test concluded: all_reduce (mpi)" in text


def test_comparison_ratios_are_first_over_other():
    recs = [record(b, size=s, inplace=ip, time_us=t * s / 4096) for b, t in (("synccl", 10.0), ("gloo", 40.0), ("mpi", 20.0)) for s in (4096, 8192) for ip in (False, True)]
    lines = comparison(recs).splitlines()
    assert lines[1] == "# Comparison, busbw (GB/s); ratio = synccl / other (> 1: synccl faster)"
    heads = [ln for ln in lines if "size" in ln]
    assert len(heads) == 2 and heads[0].split()[1:] == ["size", "synccl", "gloo", "ratio", "mpi", "ratio"]
    data = [ln.split() for ln in lines if not ln.startswith("#")]
    assert len(data) == 4 and all(d[3] == "4.00" and d[5] == "2.00" for d in data)


def test_json_records_have_the_documented_keys(tmp_path):
    path = tmp_path / "out.json"
    write_json([record(), record(inplace=True)], path)
    data = json.loads(path.read_text())
    assert len(data) == 2 and all(RECORD_KEYS <= set(d) for d in data) and data[1]["inplace"] is True


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "bw.png"
    plot([record(b, size=s) for b in ("synccl", "mpi") for s in (4096, 65536)], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_readme_markdown_has_sweep_and_large_tables():
    from synccl.bench.allreduce_table import COLUMNS, markdown
    from synccl.collectives import Collective

    columns = list(COLUMNS)
    sweep = {c: [record(c, size=s, inplace=ip, time_us=10.0 * s / 4096) for s in (4096, 16384) for ip in (False, True)] for c in columns}
    large = {Collective.ALL_GATHER: {c: [record(c, size=64 << 20, collective="all_gather", inplace=ip) for ip in (False, True)] for c in columns}}
    text = markdown(sweep, large, columns, inplace=False, meta="measured today")
    lines = text.splitlines()
    table = [ln for ln in lines if ln.startswith("| ")]
    assert lines[0] == "### all_reduce, 2 ranks, float32 sum, out of place" and "measured today" in text
    assert table[0].count("|") == 8 and "synccl, registered / MPI" in table[0] and "synccl, registered / gloo" in table[0]
    assert [ln.split(" | ")[0] for ln in table] == ["| size", "| 4KiB", "| 16KiB", "| collective", "| all_gather"]
    assert table[1].endswith("| 1.00× | 1.00× |")


def test_repeat_stats_median_min_max_spread():
    stats = repeat_stats({"synccl": [30.0, 10.0, 20.0, 40.0]})["synccl"]  # even count: mean of the middle two
    assert (stats.median_us, stats.min_us, stats.max_us, stats.spread, stats.ratio, stats.worst_ratio) == (25.0, 10.0, 40.0, 4.0, None, None)
    single = repeat_stats({"mpi": [7.0]})["mpi"]
    assert (single.median_us, single.min_us, single.max_us, single.spread) == (7.0, 7.0, 7.0, 1.0)


def test_repeat_stats_ratios_are_above_one_when_the_first_backend_is_faster():
    stats = repeat_stats({"synccl": [10.0, 11.0, 30.0], "gloo": [100.0, 110.0, 120.0], "mpi": [9.0, 12.0, 15.0]})
    assert list(stats) == ["synccl", "gloo", "mpi"]
    assert stats["gloo"].ratio == 10.0 and stats["gloo"].worst_ratio == pytest.approx(110.0 / 30.0)
    # By median synccl is slightly ahead of mpi; its worst sweep (30 us) is far behind mpi's median.
    assert stats["mpi"].ratio == pytest.approx(12.0 / 11.0) and stats["mpi"].worst_ratio == pytest.approx(0.4)
    assert repeat_stats({"a": [0.0], "b": [1.0]})["b"].ratio == math.inf


@pytest.mark.parametrize("times", [{}, {"synccl": [1.0], "mpi": []}])
def test_repeat_stats_needs_times(times):
    with pytest.raises(ValueError, match="repeat_stats: need at least one time per backend"):
        repeat_stats(times)


def sweeps(times, sizes=(4096, 8192)):
    """Records of ``len(times[b])`` interleaved sweeps: sweep, backend, size, mode; times scale with size."""
    return [
        record(b, size=s, inplace=ip, time_us=t * s / 4096, repeat=i, wrong=i if b == "mpi" else 0)
        for i in range(len(next(iter(times.values()))))
        for b, ts in times.items()
        for s in sizes
        for ip in (False, True)
        for t in [ts[i]]
    ]


def test_medians_keep_the_first_sweeps_order_and_recompute_bandwidth():
    recs = sweeps({"synccl": [10.0, 30.0, 20.0], "mpi": [40.0, 20.0, 25.0]})
    med = medians(recs)
    assert [(m.backend, m.size_bytes, m.inplace) for m in med] == [(r.backend, r.size_bytes, r.inplace) for r in recs if r.repeat == 0]
    assert [m.time_us for m in med] == [20.0, 20.0, 40.0, 40.0, 25.0, 25.0, 50.0, 50.0]
    assert all(m.repeat is None and m.busbw_gbps == pytest.approx(m.size_bytes / m.time_us / 1e3) for m in med)  # all_reduce on 2 ranks: busbw = algbw
    assert [m.wrong for m in med] == [0, 0, 0, 0, 2, 2, 2, 2]  # the worst sweep's count


def test_repeat_summary_has_each_backends_median_min_max_and_the_ratios():
    lines = repeat_summary(sweeps({"synccl": [10.0, 30.0, 20.0], "gloo": [100.0, 80.0, 90.0], "mpi": [40.0, 20.0, 25.0]})).splitlines()
    assert lines[1].startswith("# Repeat summary, 3 sweeps: time per call (us), median, min and max")
    assert lines[2] == "# ratio = other's median / synccl's median, worst = other's median / synccl's slowest sweep (> 1: synccl faster)"
    assert [ln for ln in lines if ln in ("# out-of-place", "# in-place")] == ["# out-of-place", "# in-place"]
    heads = [ln.split()[1:] for ln in lines if ln.startswith("#       size")]
    assert heads[0] == ["size", *["median", "min", "max", "spread"], *["median", "min", "max", "spread", "ratio", "worst"] * 2] and len(heads) == 2
    assert all(f"- {b} -" in lines[5] for b in ("synccl", "gloo", "mpi"))  # a span over each backend's columns
    data = [[float(x) for x in ln.split()] for ln in lines if not ln.startswith("#")]
    assert len(data) == 4
    size, *cells = data[0]
    assert size == 4096 and cells == [20.0, 10.0, 30.0, 3.0, 90.0, 80.0, 100.0, 1.25, 4.5, 3.0, 25.0, 20.0, 40.0, 2.0, 1.25, pytest.approx(0.83, abs=0.005)]


def test_repeat_summary_of_one_backend_has_no_ratios():
    lines = repeat_summary(sweeps({"synccl": [10.0, 12.0]})).splitlines()
    assert "2 sweeps" in lines[1] and not any("ratio" in ln for ln in lines)
    assert [ln.split()[1:] for ln in lines if ln.startswith("#       size")][0] == ["size", "median", "min", "max", "spread"]


def test_header_of_a_median_table_says_so():
    config = BenchConfig("all_reduce", min_bytes=4096, max_bytes=4096, repeat=5)
    text = header(config, backend="mpi", version="MPICH", nranks=2, devices=[(0, 1, "a"), (1, 2, "a")])
    assert "# Median of 5 sweeps (backends interleaved): time is each size's median" in text
    assert "Median" not in header(BenchConfig("all_reduce"), backend="mpi", version="MPICH", nranks=1, devices=[(0, 1, "a")])


def test_program_note_names_the_program_of_each_size_and_mode():
    file, default, forced = ("ring_all_reduce_n2", "file a.xml"), ("one_shot_all_reduce_n2", "default"), ("ring_all_reduce_n2", "SYNCCL_ALGORITHM")
    plan = {(4096, False): default, (8192, False): file, (16384, False): default, (32768, False): file, (4096, True): forced, (32768, True): forced}
    recs = [record("synccl", size=s, inplace=ip, program=prog, program_source=src) for (s, ip), (prog, src) in plan.items()]
    recs.append(record("synccl", size=65536, inplace=True))  # no Program known: left out
    assert program_note(recs, xml="a.xml").splitlines() == [
        "# Programs run (--xml a.xml):",
        "#   out of place, 4KiB: default Program 'one_shot_all_reduce_n2', not the file's",
        "#   out of place, 8KiB: the file's Program 'ring_all_reduce_n2'",
        "#   out of place, 16KiB: default Program 'one_shot_all_reduce_n2', not the file's",
        "#   out of place, 32KiB: the file's Program 'ring_all_reduce_n2'",
        "#   in place, 4KiB-32KiB: Program 'ring_all_reduce_n2' (SYNCCL_ALGORITHM), not the file's",
    ]
