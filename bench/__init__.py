"""Benchmarks in the style of nccl-tests.

``synccl bench`` sweeps a collective over message sizes on synccl's runtime and, for comparison,
on torch.distributed's gloo and on MPI's own collectives, printing nccl-tests' table (time, algbw,
busbw, #wrong, out of place and in place). One timing loop (:func:`measure`) drives every
:class:`Backend`; :func:`launch` starts the ranks under mpiexec and :func:`run_bench` is what each
rank runs. (``synccl run``, which runs an MSCCL XML file on local ranks and checks it, is a product
feature: :mod:`synccl._xml_run`.)
"""

from synccl.bench._backends import Backend, MpiBackend, SynccclBackend, TorchBackend, check_available, lanes_needed, make_backend
from synccl.bench._config import BACKENDS, COLLECTIVES, CUDA_BACKENDS, DEVICES, BenchConfig, nccl_type_name, parse_dtype
from synccl.bench._launch import find_mpiexec, launch
from synccl.bench._layout import Layout, count_wrong, expected_output, layout, rank_input
from synccl.bench._report import (
    Record,
    RepeatStats,
    comparison,
    float_cell,
    footer,
    header,
    medians,
    plot,
    program_note,
    repeat_stats,
    repeat_summary,
    row,
    write_json,
)
from synccl.bench._runner import allocate, measure, run_bench, sweep

__all__ = [
    "BACKENDS",
    "COLLECTIVES",
    "CUDA_BACKENDS",
    "DEVICES",
    "Backend",
    "BenchConfig",
    "Layout",
    "MpiBackend",
    "Record",
    "RepeatStats",
    "SynccclBackend",
    "TorchBackend",
    "allocate",
    "check_available",
    "comparison",
    "count_wrong",
    "expected_output",
    "find_mpiexec",
    "float_cell",
    "footer",
    "header",
    "launch",
    "lanes_needed",
    "layout",
    "make_backend",
    "measure",
    "medians",
    "nccl_type_name",
    "parse_dtype",
    "plot",
    "program_note",
    "rank_input",
    "repeat_stats",
    "repeat_summary",
    "row",
    "run_bench",
    "sweep",
    "write_json",
]
