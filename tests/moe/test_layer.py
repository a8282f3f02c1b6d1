"""MoELayer on 2 real ranks against the dense one-process model (every expert on every token, masked by the top-k).

One torchrun job (_layer_worker.py) runs the layer at pipeline degrees 1, 2, 3 over uniform,
zipf-skewed and degenerate routing, uneven token counts (one rank with none), with and without
capacity, GShard and Mixtral weighting, in float64 and float32; trains examples/moe_block.py
both ways; times the pipelined exchanges against the experts; and records the errors bad input
raises. The tests below compare its numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
WORKER = HERE / "_layer_worker.py"
EXAMPLE = HERE.parents[1] / "examples" / "moe_block.py"
WORLD = 2
FORWARD_RTOL = {"torch.float64": 1e-12, "torch.float32": 1e-5}
DEGREE_RTOL = {"torch.float64": 1e-14, "torch.float32": 1e-6}  # BLAS rounds a batch's rows by its size, not bit for bit

_RUNS: dict[str, list[dict]] = {}  # the worker's results, one job for the whole module


@pytest.fixture
def ranks(jobs, tmp_path_factory, no_leftover_segments) -> list[dict]:
    if "worker" not in _RUNS:
        out = tmp_path_factory.mktemp("moe_layer_worker")
        proc = jobs.torchrun(WORLD, WORKER, str(out), timeout=300)
        assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
        _RUNS["worker"] = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    return _RUNS["worker"]


def _cases(ranks: list[dict], dtype: str | None = None):
    for rank, result in enumerate(ranks):
        for name, case in result["cases"].items():
            if dtype is None or name.startswith(dtype + " "):
                yield rank, name, case


def test_the_cases_cover_the_matrix(ranks):
    names = list(ranks[0]["cases"])
    assert len(names) == 48 and names == list(ranks[1]["cases"])
    for fragment in ("uniform", "zipf", "degenerate", "T=(13, 0)", "T=(6, 21)", "capacity=None", "capacity=1.0", "normalize=True", "normalize=False"):
        assert any(fragment in n for n in names), fragment
    dropped = {n: case["dropped"] for n, case in ranks[0]["cases"].items()}
    assert all(d == 0 for n, d in dropped.items() if "capacity=None" in n)
    assert dropped["torch.float64 degenerate T=(6, 21) capacity=1.0 normalize=False"] > 0  # capacity really drops


@pytest.mark.parametrize("dtype", FORWARD_RTOL)
def test_forward_equals_the_dense_reference(ranks, dtype):
    for rank, name, case in _cases(ranks, dtype):
        for degree, (error, scale) in case["forward"].items():
            assert error <= FORWARD_RTOL[dtype] * scale, (rank, name, degree, error, scale)
            assert scale > 0 or ("T=(13, 0)" in name and rank == 1), (rank, name)


def test_gradients_equal_the_dense_reference(ranks):
    checked = 0
    for rank, name, case in _cases(ranks, "torch.float64"):
        for degree, grads in case["gradients"].items():
            assert {"x", "gate.weight", "gate.bias"} <= set(grads) and sum(n.startswith("expert") for n in grads) == 8, sorted(grads)
            for tensor, (error, scale) in grads.items():
                assert error <= 1e-12 * scale, (rank, name, degree, tensor, error, scale)
                checked += scale > 0
    assert checked > 0.9 * 2 * 24 * 3 * 11  # real gradients, not zeros (a rank with no tokens has none of its own)


@pytest.mark.parametrize("dtype", DEGREE_RTOL)
def test_every_pipeline_degree_gives_the_same_results(ranks, dtype):
    for rank, name, case in _cases(ranks, dtype):
        scale = max(s for _, s in case["forward"].values())
        for degree, (y_diff, grad_rel) in case["versus_d1"].items():
            assert y_diff <= DEGREE_RTOL[dtype] * scale, (rank, name, degree, y_diff)
            assert grad_rel <= 100 * DEGREE_RTOL[dtype], (rank, name, degree, grad_rel)


def test_auto_degree_on_the_cpu_host_is_one_part(ranks):
    # No SYNCCL_TOPOLOGY naming a device: the model cannot time the experts, so 'auto' is 1 part (bit for bit).
    for result in ranks:
        assert result["auto"] == {"difference": 0.0}, result["auto"]


def test_pipelined_exchanges_run_while_the_experts_compute(ranks):
    for result in ranks:
        overlap = result["overlap"]
        assert overlap["exchanges"] == 6 and overlap["lane_threads"] == ["synccl-moe_0"], overlap  # 3 dispatches, 3 combines, on the lane
        assert overlap["hidden_s"] > 0, overlap  # some exchange ran while an expert computed


def _max_relative(got: list[float], want: list[float]) -> float:
    assert len(got) == len(want) == 20
    return max(abs(g - w) / abs(w) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("dtype, rtol", [("torch.float64", 1e-12), ("torch.float32", 1e-5)])
def test_the_example_trains_like_the_dense_reference(ranks, dtype, rtol):
    for result in ranks:
        losses = result["losses"]
        ours, reference = losses[f"expert parallel {dtype}"], losses[f"reference {dtype}"]
        assert reference[-1] < 0.5 * reference[0], reference  # it learns
        assert _max_relative(ours, reference) <= rtol, (ours, reference)
    assert ranks[0]["losses"] == ranks[1]["losses"]


def test_the_example_cli_prints_the_reference_losses(jobs, ranks):
    proc = jobs.torchrun(WORLD, EXAMPLE, "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = json.loads(proc.stdout)["losses"]  # --json: stdout is the JSON alone
    ref = subprocess.run([sys.executable, str(EXAMPLE), "--reference", "--json"], capture_output=True, text=True, timeout=300, check=False)
    assert ref.returncode == 0, ref.stderr[-3000:]
    reference = json.loads(ref.stdout)["losses"]
    assert _max_relative(ours, reference) <= 1e-5, (ours, reference)
    assert _max_relative(reference, ranks[0]["losses"]["reference torch.float32"]) <= 1e-6


def test_bad_input_is_one_line_naming_the_argument(ranks):
    expected = {
        "top_k 5": "MoELayer: top_k must be at most num_experts=4, got 5",
        "num_experts 3": "MoELayer: num_experts must be a multiple of the group's 2 ranks, got 3",
        "3 local experts": "MoELayer: experts must be this rank's num_experts // 2 ranks = 2 modules, got 3: ['Sequential', 'Sequential', 'Sequential']",
        "overlap_degree 0": "MoELayer: overlap_degree must be a positive integer or 'auto', got 0",
        "x 3-D": "MoELayer: x must be (tokens, hidden), got shape (2, 3, 8)",
        "hidden 6": "MoELayer: x has hidden size 6, expected the gate's in_features 8",
        "gate output": "MoELayer: gate returned shape (3, 3), expected (3, 4)",
        "after": "(3, 8)",  # errors every rank shares leave the group usable
    }
    for result in ranks:
        assert result["errors"] == expected


def test_bad_input_on_one_rank_makes_the_other_raise_at_once(ranks):
    assert ranks[1]["refused"]["message"] == "MoELayer: x has hidden size 6, expected the gate's in_features 8"
    message, seconds = ranks[0]["refused"]["message"], ranks[0]["refused"]["seconds"]
    assert "rank 1 refused" in message and "x has hidden size 6" in message and seconds < 5, (message, seconds)


def test_without_a_process_group_the_layer_says_what_to_call():
    import torch
    import torch.distributed as dist

    from synccl.exceptions import CommError
    from synccl.moe import MoELayer

    if dist.is_initialized():
        pytest.skip("this process already has a default process group")
    with pytest.raises(CommError, match=r"^MoELayer: no process group: call torch.distributed.init_process_group\('synccl'\) first") as err:
        MoELayer(torch.nn.Linear(4, 2), [torch.nn.Linear(4, 4)] * 2, num_experts=2, top_k=1)
    assert "\n" not in str(err.value)


def test_auto_follows_the_cost_model_on_a_machine_it_knows():
    from synccl.moe._layer import modelled_degree
    from synccl.sim import MoeShape, choose_moe_degree, moe_layer_us
    from synccl.topologies import get_topology

    shape = MoeShape(4096, 4096, 14336, 2, 8, "bf16")
    chosen = modelled_degree("dgx-h100", shape)
    topo = get_topology("dgx-h100")
    assert chosen == choose_moe_degree(shape, topo) > 1
    assert moe_layer_us(shape, topo, chosen) < moe_layer_us(shape, topo, 1)
    assert modelled_degree(None, shape) == 1 and modelled_degree("ring:8", shape) == 1  # no device type: no model of the experts
