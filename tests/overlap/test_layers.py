"""ColumnParallelLinear / RowParallelLinear on 2 real ranks against the one-process model with the full weights.

One torchrun job (_tp_worker.py) trains examples/tp_mlp.py's block three ways -- overlapped,
on plain collectives, and the reference every rank computes alone -- and records gradients
and error messages; the tests below compare its numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

HERE = Path(__file__).parent
WORKER = HERE / "_tp_worker.py"
EXAMPLE = HERE.parents[1] / "examples" / "tp_mlp.py"
WORLD = 2
DTYPES = {"torch.float64": 1e-12, "torch.float32": 1e-5}  # relative tolerance on the losses, per dtype

_RUNS: dict[str, list[dict]] = {}  # the worker's results, one job for the whole module


@pytest.fixture
def ranks(jobs, tmp_path_factory, no_leftover_segments) -> list[dict]:
    if "worker" not in _RUNS:
        out = tmp_path_factory.mktemp("tp_worker")
        proc = jobs.torchrun(WORLD, WORKER, str(out), timeout=300)
        assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
        _RUNS["worker"] = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    return _RUNS["worker"]


def _max_relative(got: list[float], want: list[float]) -> float:
    assert len(got) == len(want) == 20
    return max(abs(g - w) / abs(w) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("dtype", DTYPES)
def test_training_losses_equal_the_full_weight_reference_and_the_plain_collectives(ranks, dtype):
    rtol = DTYPES[dtype]
    for result in ranks:
        losses = result["losses"]
        overlap, plain, reference = (losses[f"{name} {dtype}"] for name in ("overlap", "plain", "reference"))
        assert reference[-1] < 0.6 * reference[0]  # it learns: 0.45 -> 0.22
        assert _max_relative(overlap, reference) <= rtol, (overlap, reference)
        assert _max_relative(plain, reference) <= rtol, (plain, reference)
        assert _max_relative(overlap, plain) <= rtol, (overlap, plain)
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the loss is all-reduced: every rank reports the same


def test_one_step_gradients_equal_the_reference_slices(ranks):
    for result in ranks:
        for way in ("overlap", "plain"):
            grads = result["gradients"][way]
            assert set(grads) == {"w1", "b1", "w2", "b2", "x"}
            for name, (error, scale) in grads.items():
                assert scale > 1e-5, (way, name, scale)  # a real gradient, not zeros
                assert error <= 1e-12 * scale, (way, name, error, scale)


def test_seeded_and_from_full_shards_are_exact_slices_of_nn_linear(ranks):
    for result in ranks:
        assert result["init"] and all(result["init"].values()), result["init"]


def test_sizes_that_do_not_split_are_one_line_errors(ranks):
    expected = {
        "row in_features 7": "RowParallelLinear: in_features must be a multiple of the group's 2 ranks, got 7",
        "column out_features 7": "ColumnParallelLinear: out_features must be a multiple of the group's 2 ranks, got 7",
        "column input width": "ColumnParallelLinear: input shape expected (sequence, ..., 8), got (2, 3, 6)",
        "row sequence 3": "matmul_reduce_scatter: scatter_dim 0 of a (size 3) does not split among 2 ranks",
    }
    for result in ranks:
        assert result["errors"] == expected


def test_the_example_without_overlap_prints_the_overlapped_losses(jobs, ranks):
    proc = jobs.torchrun(WORLD, EXAMPLE, "--no-overlap", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = json.loads(proc.stdout)["losses"]  # --json: stdout is the JSON alone
    assert _max_relative(losses, ranks[0]["losses"]["overlap torch.float32"]) <= 1e-5


def test_a_layer_without_a_process_group_says_what_to_call():
    import torch.distributed as dist

    from synccl.exceptions import CommError
    from synccl.overlap import ColumnParallelLinear

    if dist.is_initialized():
        pytest.skip("this process already has a default process group")
    with pytest.raises(CommError, match=r"^ColumnParallelLinear: no process group: call torch.distributed.init_process_group\('synccl'\) first") as err:
        ColumnParallelLinear(4, 8)
    assert "\n" not in str(err.value)
