"""Benchmark records and how they are shown: nccl-tests' text table, a comparison, JSON and a plot."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from synccl.bench._config import BenchConfig, nccl_type_name, parse_dtype
from synccl.sim import busbw_factor
from synccl.units import format_size

__all__ = [
    "Record",
    "RepeatStats",
    "float_cell",
    "header",
    "row",
    "footer",
    "comparison",
    "repeat_stats",
    "medians",
    "repeat_summary",
    "program_note",
    "write_json",
    "plot",
]

# nccl-tests' column header: size, count, type, redop, root | out-of-place | in-place.
_COLUMNS = "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s  %6s"
_SPANS = "# %10s  %12s  %8s  %6s  %6s           out-of-place                       in-place"


@dataclass(frozen=True, slots=True)
class Record:
    """One measurement: a backend running one collective at one size, in place or not.

    ``size_bytes`` and ``count`` follow nccl-tests (see :func:`~synccl.bench.layout`); ``time_us``
    is the per-iteration time combined over ranks; ``wrong`` is ``None`` when not validated; ``op``
    is ``None`` for collectives without reduction and ``root`` for collectives without root;
    ``registered`` is ``None`` for backends other than synccl. ``program`` is the name of the
    Program synccl's runtime selected for the call and ``program_source`` why (``default``,
    ``file PATH``, ``SYNCCL_ALGORITHM`` ...), ``None`` for other backends. ``repeat`` is the
    sweep (0-based, ``--repeat``); ``None`` on the medians :func:`medians` makes.
    """

    backend: str
    collective: str
    nranks: int
    size_bytes: int
    count: int
    dtype: str
    op: str | None
    root: int | None
    inplace: bool
    time_us: float
    algbw_gbps: float
    busbw_gbps: float
    wrong: int | None
    registered: bool | None = None
    algorithm: str | None = None
    program: str | None = None
    program_source: str | None = None
    repeat: int | None = 0

    def as_dict(self) -> dict[str, object]:
        """The record as the JSON object ``--json`` writes."""
        return asdict(self)


def float_cell(value: float, width: int) -> str:
    """``value`` in at most ``width`` characters, as nccl-tests prints times and bandwidths.

    Two decimals if they fit, then one, then none, then exponent notation.

    Examples
    --------
    >>> float_cell(12.3456, 7), float_cell(12345.67, 7), float_cell(123456.7, 7), float_cell(12345678.0, 7)
    ('  12.35', '12345.7', ' 123457', '1.2e+07')
    """
    for fmt in (".2f", ".1f", ".0f"):
        text = f"{value:{width}{fmt}}"
        if len(text) <= width:
            return text
    return f"{value:{width}{'.1e' if width >= 7 else '.0e'}}"


def header(config: BenchConfig, *, backend: str, version: str, nranks: int, devices: Sequence[tuple[int, int, str]]) -> str:
    """The lines nccl-tests prints before its table, for one backend's sweep.

    Parameters
    ----------
    config : BenchConfig
        The run.
    backend : str
        The backend's name.
    version : str
        The implementation and its version (``MPICH Version: 5.0.2``).
    nranks : int
        Number of ranks.
    devices : sequence of (rank, pid, host)
        One entry per rank.

    Returns
    -------
    str
        The header, without a trailing newline.

    Examples
    --------
    >>> config = BenchConfig("all_reduce", min_bytes=8, max_bytes=64, backends=("mpi",))
    >>> print(header(config, backend="mpi", version="MPICH Version: 5.0.2", nranks=1, devices=[(0, 42, "node1")]))
    ... # doctest: +NORMALIZE_WHITESPACE
    # synccl bench: mpi (MPICH Version: 5.0.2)
    # Collective test starting: all_reduce
    # nRanks 1 minBytes 8 maxBytes 64 step: 2(factor) warmup iters: 5 iters: 20 validation: 1 average: max
    #
    # Using devices
    #  Rank  0 Pid     42 on      node1 cpu
    #
    #                                                              out-of-place                       in-place
    #       size         count      type   redop    root     time   algbw   busbw  #wrong     time   algbw   busbw  #wrong
    #        (B)    (elements)                               (us)  (GB/s)  (GB/s)             (us)  (GB/s)  (GB/s)
    """
    detail = ""
    if backend.startswith("synccl"):
        detail = f" ({'registered' if config.registered else 'unregistered'} buffers, algorithm {config.algorithm or ('from ' + config.xml if config.xml else 'auto')})"
    lines = [
        f"# synccl bench: {backend} ({version})",
        f"# Collective test starting: {config.collective.value}{detail}",
        f"# nRanks {nranks} minBytes {config.min_bytes} maxBytes {config.max_bytes} step: {config.factor}(factor) "
        f"warmup iters: {config.warmup} iters: {config.iters} validation: {int(config.check)} average: {config.average}",
        *_repeat_line(config.repeat),
        "#",
        "# Using devices",
        *(f"#  Rank {rank:2d} Pid {pid:6d} on {host:>10s} {config.device}" for rank, pid, host in devices),
        "#",
        _SPANS % (("",) * 5),
        _COLUMNS % ("size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time", "algbw", "busbw", "#wrong"),
        _COLUMNS % ("(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)", ""),
    ]
    return "\n".join(line.rstrip() for line in lines)


def _repeat_line(repeat: int) -> list[str]:
    if repeat == 1:
        return []
    return [f"# Median of {repeat} sweeps (backends interleaved): time is each size's median, algbw and busbw follow from it, #wrong is the worst sweep's"]


def row(out_of_place: Record, in_place: Record) -> str:
    """One table line: the size's columns, then the out-of-place and in-place results.

    Examples
    --------
    >>> oop = Record("mpi", "all_reduce", 2, 4096, 1024, "float32", "sum", None, False, 12.5, 0.33, 0.33, 0)
    >>> print(row(oop, oop))
            4096          1024     float     sum      -1    12.50    0.33    0.33       0    12.50    0.33    0.33       0
    """
    root = -1 if out_of_place.root is None else out_of_place.root
    type_name = nccl_type_name(parse_dtype(out_of_place.dtype))
    line = f"{out_of_place.size_bytes:12d}  {out_of_place.count:12d}  {type_name:>8s}  {out_of_place.op or 'none':>6s}  {root:6d}"
    for rec in (out_of_place, in_place):
        wrong = "   N/A" if rec.wrong is None else f"{rec.wrong:6g}"
        line += f"  {float_cell(rec.time_us, 7)}  {float_cell(rec.algbw_gbps, 6)}  {float_cell(rec.busbw_gbps, 6)}  {wrong}"
    return line


def footer(records: Sequence[Record], *, collective: str, backend: str) -> str:
    """nccl-tests' closing lines: sizes with wrong values, average bus bandwidth.

    Examples
    --------
    >>> rec = Record("mpi", "all_reduce", 2, 4096, 1024, "float32", "sum", None, False, 12.5, 0.33, 0.5, 0)
    >>> print(footer([rec], collective="all_reduce", backend="mpi"))
    # Out of bounds values : 0 OK
    # Avg bus bandwidth    : 0.5
    #
    # Collective test concluded: all_reduce (mpi)
    """
    sizes_wrong = len({r.size_bytes for r in records if r.wrong})
    average = statistics.fmean(r.busbw_gbps for r in records) if records else 0.0
    return "\n".join(
        [
            f"# {'Out of bounds values':<20s} : {sizes_wrong} {'FAILED' if sizes_wrong else 'OK'}",
            f"# {'Avg bus bandwidth':<20s} : {average:g}",
            "#",
            f"# Collective test concluded: {collective} ({backend})",
        ]
    )


def comparison(records: Sequence[Record]) -> str:
    """Bus bandwidth per size and backend, with the first backend's ratio over each other one.

    A ratio above 1 means the first backend is faster. Out-of-place and in-place are shown in turn.

    Examples
    --------
    >>> recs = [Record(b, "all_reduce", 2, 4096, 1024, "float32", "sum", None, ip, t, 4096 / t / 1e3, 4096 / t / 1e3, 0)
    ...         for b, t in (("synccl", 10.0), ("mpi", 20.0)) for ip in (False, True)]
    >>> print(comparison(recs))
    #
    # Comparison, busbw (GB/s); ratio = synccl / other (> 1: synccl faster)
    #
    # out-of-place
    #       size   synccl      mpi   ratio
            4096     0.41     0.20    2.00
    #
    # in-place
    #       size   synccl      mpi   ratio
            4096     0.41     0.20    2.00
    """
    backends = list(dict.fromkeys(r.backend for r in records))
    first, others = backends[0], backends[1:]
    lines = ["#", f"# Comparison, busbw (GB/s); ratio = {first} / other (> 1: {first} faster)"]
    for inplace in (False, True):
        table = {(r.backend, r.size_bytes): r for r in records if r.inplace is inplace}
        lines += ["#", f"# {'in-place' if inplace else 'out-of-place'}"]
        head = f"# {'size':>10s}  {first:>7s}" + "".join(f"  {b:>7s}   ratio" for b in others)
        lines.append(head)
        for size in sorted({s for _, s in table}):
            ref = table.get((first, size))
            line = f"{size:12d}  {float_cell(ref.busbw_gbps, 7) if ref else '-':>7s}"
            for other in others:
                rec = table.get((other, size))
                ratio = float_cell(ref.busbw_gbps / rec.busbw_gbps, 6) if ref and rec and rec.busbw_gbps > 0 else "-"
                line += f"  {float_cell(rec.busbw_gbps, 7) if rec else '-':>7s}  {ratio:>6s}"
            lines.append(line)
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class RepeatStats:
    """One backend's times per call at one size and mode over repeated sweeps (see :func:`repeat_stats`).

    ``spread`` is ``max_us / min_us``; ``ratio`` and ``worst_ratio`` compare with the first
    backend (``None`` for the first itself), above 1 when the first backend is faster.
    """

    median_us: float
    min_us: float
    max_us: float
    spread: float
    ratio: float | None = None
    worst_ratio: float | None = None


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.inf


def repeat_stats(times: Mapping[str, Sequence[float]]) -> dict[str, RepeatStats]:
    """Median, fastest, slowest and spread of each backend's times, and ratios against the first backend.

    The one place the statistics of ``synccl bench --repeat`` are computed: the median tables,
    the repeat summary and the plot use it.

    Parameters
    ----------
    times : mapping of str to sequence of float
        Per backend, the first being the reference: the time per call (µs) in each sweep, at one
        size and mode.

    Returns
    -------
    dict of str to RepeatStats
        Per backend: ``median_us`` (the mean of the two middle times for an even count),
        ``min_us``, ``max_us`` and ``spread`` = max / min; for the other backends also ``ratio`` =
        their median / the first's median and ``worst_ratio`` = their median / the first's slowest
        sweep. Above 1 the first backend is faster: by median, and even in its worst sweep.

    Raises
    ------
    ValueError
        If there is no backend, or a backend without times.

    Examples
    --------
    >>> stats = repeat_stats({"synccl": [10.0, 16.0, 12.0], "mpi": [24.0, 20.0, 30.0]})
    >>> first, mpi = stats["synccl"], stats["mpi"]
    >>> first.median_us, first.min_us, first.max_us, first.spread, first.ratio
    (12.0, 10.0, 16.0, 1.6, None)
    >>> mpi.median_us, mpi.spread, mpi.ratio, mpi.worst_ratio
    (24.0, 1.5, 2.0, 1.5)
    """
    if not times or not all(len(values) for values in times.values()):
        raise ValueError(f"repeat_stats: need at least one time per backend, got {dict(times)!r}")
    stats: dict[str, RepeatStats] = {}
    first: RepeatStats | None = None
    for name, values in times.items():
        low, high, middle = min(values), max(values), statistics.median(values)
        if first is None:
            stats[name] = first = RepeatStats(middle, low, high, _ratio(high, low))
        else:
            stats[name] = RepeatStats(middle, low, high, _ratio(high, low), _ratio(middle, first.median_us), _ratio(middle, first.max_us))
    return stats


def medians(records: Sequence[Record]) -> list[Record]:
    """One record per backend, size and mode, with the median time of its sweeps (``--repeat``).

    algbw and busbw follow from the median time; ``wrong`` is the largest count of any sweep
    (``None`` if none was validated) and ``repeat`` is ``None``. The order is the first sweep's.

    Examples
    --------
    >>> recs = [Record("mpi", "all_reduce", 2, 4096, 1024, "float32", "sum", None, False, t, 4096 / t / 1e3, 4096 / t / 1e3, w, repeat=i)
    ...         for i, (t, w) in enumerate([(10.0, 0), (40.0, 2), (16.0, 0)])]
    >>> [(m.time_us, m.algbw_gbps, m.busbw_gbps, m.wrong, m.repeat) for m in medians(recs)]
    [(16.0, 0.256, 0.256, 2, None)]
    """
    groups: dict[tuple[str, int, bool], list[Record]] = {}
    for rec in records:
        groups.setdefault((rec.backend, rec.size_bytes, rec.inplace), []).append(rec)
    result = []
    for (backend, size, _), group in groups.items():
        middle = repeat_stats({backend: [r.time_us for r in group]})[backend].median_us
        algbw = size / middle / 1e3 if middle > 0 else 0.0
        wrong = [r.wrong for r in group if r.wrong is not None]
        busbw = algbw * busbw_factor(group[0].collective, group[0].nranks)
        result.append(replace(group[0], time_us=middle, algbw_gbps=algbw, busbw_gbps=busbw, wrong=max(wrong) if wrong else None, repeat=None))
    return result


def repeat_summary(records: Sequence[Record]) -> str:
    """Per size and mode: each backend's median, fastest and slowest time over the sweeps, and ratios.

    Times per call in µs; ``spread`` = slowest / fastest sweep; against the first backend,
    ``ratio`` = the other's median / the first's median and ``worst`` = the other's median / the
    first's slowest sweep, so that above 1 the first backend is faster (see :func:`repeat_stats`).

    Examples
    --------
    >>> times = {"synccl": (10.0, 16.0, 12.0), "mpi": (24.0, 20.0, 30.0)}
    >>> recs = [Record(b, "all_reduce", 2, 4096, 1024, "float32", "sum", None, False, ts[i], 0.0, 0.0, 0, repeat=i)
    ...         for i in range(3) for b, ts in times.items()]
    >>> print(repeat_summary(recs))
    #
    # Repeat summary, 3 sweeps: time per call (us), median, min and max over the sweeps; spread = max / min
    # ratio = other's median / synccl's median, worst = other's median / synccl's slowest sweep (> 1: synccl faster)
    #
    # out-of-place
    #             -------------- synccl --------------  ----------------------- mpi ------------------------
    #       size    median       min       max  spread    median       min       max  spread   ratio   worst
            4096     12.00     10.00     16.00    1.60     24.00     20.00     30.00    1.50    2.00    1.50
    """
    backends = list(dict.fromkeys(r.backend for r in records))
    first = backends[0]
    sweeps = len({r.repeat for r in records})
    lines = ["#", f"# Repeat summary, {sweeps} sweeps: time per call (us), median, min and max over the sweeps; spread = max / min"]
    if len(backends) > 1:
        lines.append(f"# ratio = other's median / {first}'s median, worst = other's median / {first}'s slowest sweep (> 1: {first} faster)")
    for inplace in (False, True):
        times: dict[int, dict[str, list[float]]] = {}
        for rec in records:
            if rec.inplace is inplace:
                times.setdefault(rec.size_bytes, {}).setdefault(rec.backend, []).append(rec.time_us)
        if not times:
            continue
        groups = [(b, ["median", "min", "max", "spread"] + (["ratio", "worst"] if b != first else [])) for b in backends]
        widths = {"median": 8, "min": 8, "max": 8, "spread": 6, "ratio": 6, "worst": 6}
        spans = "".join(f"  {' ' + b + ' ':-^{sum(2 + widths[c] for c in cols) - 2}}" for b, cols in groups)
        lines += ["#", f"# {'in-place' if inplace else 'out-of-place'}", f"# {'':10s}{spans}", f"# {'size':>10s}" + "".join(f"  {c:>{widths[c]}s}" for _, cols in groups for c in cols)]
        for size in sorted(times):
            present = {b: times[size][b] for b in backends if b in times[size]}
            stats = repeat_stats(present) if first in present else {}
            line = f"{size:12d}"
            for b, cols in groups:
                st = stats.get(b)
                for c in cols:
                    value = None if st is None else getattr(st, {"median": "median_us", "min": "min_us", "max": "max_us", "worst": "worst_ratio"}.get(c, c))
                    line += f"  {'-' if value is None else float_cell(value, widths[c]):>{widths[c]}s}"
            lines.append(line)
    return "\n".join(lines)


def program_note(records: Sequence[Record], *, xml: str) -> str:
    """Which Program ran each size and mode of a ``--xml FILE`` sweep: the file's, or which other one.

    The runtime uses the file's Program only for the calls it matches (its mode, in place or out
    of place, and sizes within its ``minBytes``/``maxBytes``); it selects another for the rest.
    Sizes in a row that ran the same Program share a line.

    Examples
    --------
    >>> def rec(size, inplace, program, source):
    ...     return Record("synccl", "all_reduce", 2, size, size // 4, "float32", "sum", None, inplace, 1.0, 0.0, 0.0, 0, program=program, program_source=source)
    >>> ring, one_shot = ("ring_all_reduce_n2", "file ar.xml"), ("one_shot_all_reduce_n2", "default")
    >>> recs = [rec(4096, False, *one_shot), rec(16384, False, *ring), rec(65536, False, *ring), rec(4096, True, *one_shot), rec(65536, True, *one_shot)]
    >>> print(program_note(recs, xml="ar.xml"))
    # Programs run (--xml ar.xml):
    #   out of place, 4KiB: default Program 'one_shot_all_reduce_n2', not the file's
    #   out of place, 16KiB-64KiB: the file's Program 'ring_all_reduce_n2'
    #   in place, 4KiB-64KiB: default Program 'one_shot_all_reduce_n2', not the file's
    """
    lines = [f"# Programs run (--xml {xml}):"]
    for inplace in (False, True):
        runs: list[tuple[int, int, str, str]] = []  # first size, last size, program, source
        for rec in sorted((r for r in records if r.inplace is inplace and r.program is not None), key=lambda r: r.size_bytes):
            program, source = rec.program or "", rec.program_source or "registered"
            if runs and runs[-1][2:] == (program, source):
                runs[-1] = (runs[-1][0], rec.size_bytes, program, source)
            elif not runs or runs[-1][1] != rec.size_bytes:
                runs.append((rec.size_bytes, rec.size_bytes, program, source))
        for low, high, program, source in runs:
            sizes = format_size(low) if low == high else f"{format_size(low)}-{format_size(high)}"
            if source == f"file {xml}":
                what = f"the file's Program {program!r}"
            elif source in ("default", "registered"):
                what = f"{source} Program {program!r}, not the file's"
            else:
                what = f"Program {program!r} ({source}), not the file's"
            lines.append(f"#   {'in place' if inplace else 'out of place'}, {sizes}: {what}")
    return "\n".join(lines)


def write_json(records: Sequence[Record], path: str | Path) -> None:
    """Write ``records`` to ``path`` as a JSON list of objects (see :class:`Record`)."""
    Path(path).write_text(json.dumps([r.as_dict() for r in records], indent=2) + "\n")


def plot(records: Sequence[Record], path: str | Path) -> None:
    """Draw out-of-place bus bandwidth against size, log-x, one line per backend, to an image file.

    Examples
    --------
    >>> import tempfile, os
    >>> recs = [Record("mpi", "all_reduce", 2, s, s // 4, "float32", "sum", None, False, 1.0, s / 1e3, s / 1e3, 0) for s in (1024, 4096)]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     plot(recs, os.path.join(d, "bw.png"))
    ...     os.path.getsize(os.path.join(d, "bw.png")) > 0
    True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported only when drawing (slow to import)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for backend in dict.fromkeys(r.backend for r in records):
        points = sorted((r.size_bytes, r.busbw_gbps) for r in records if r.backend == backend and not r.inplace)
        ax.plot([s for s, _ in points], [b for _, b in points], marker="o", label=backend)
    sizes = sorted({r.size_bytes for r in records})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [format_size(s) for s in sizes], rotation=45, ha="right")
    first = records[0]
    ax.set_title(f"{first.collective}, {first.nranks} ranks, {first.dtype} (out of place)")
    ax.set_xlabel("size")
    ax.set_ylabel("bus bandwidth (GB/s)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
