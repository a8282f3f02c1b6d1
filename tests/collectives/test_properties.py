"""Property-based tests: random rank counts, sizes, dtypes and schedules."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synccl.collectives import Algorithm, Collective, CollectiveSpec, Step, Transfer, expected_outputs, library, verify
from synccl.runtime import run_reference

ALGORITHMS = [(info.name, info.collective.value) for info in library.algorithms()]


@st.composite
def library_case(draw):
    name, collective = draw(st.sampled_from(ALGORITHMS))
    info = library.get(name, collective)
    n = draw(st.integers(1, 12))
    local = draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0])) if info.needs_local_size else None
    if info.unsupported_reason(n, local) is not None:
        n, local = 4, (2 if info.needs_local_size else None)
    options = {"inplace": draw(st.booleans())}
    if "root" in info.options:
        options["root"] = draw(st.integers(0, n - 1))
    if "channels" in info.options:
        options["channels"] = draw(st.integers(1, 3))
    return library.build(name, collective, n, local_size=local, **options)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prog=library_case(), elements=st.integers(0, 40), dtype=st.sampled_from(["int32", "int64", "float64"]), op=st.sampled_from(["sum", "min", "max", "prod"]), seed=st.integers(0, 2**16))
def test_library_programs_match_numpy_for_any_size(prog, elements, dtype, op, seed):
    rng = np.random.default_rng(seed)
    split = prog.collective in (Collective.REDUCE_SCATTER, Collective.ALL_TO_ALL, Collective.SCATTER)
    size = elements * prog.nranks if split else elements
    inputs = [rng.integers(-3, 4, size=size).astype(dtype) for _ in range(prog.nranks)]
    got = run_reference(prog, inputs, op=op)
    want = expected_outputs(prog.collective, inputs, op=op, root=prog.spec.root or 0)
    for g, w in zip(got, want, strict=True):
        if w is not None:
            np.testing.assert_array_equal(g, w)


@st.composite
def random_tree_broadcast(draw):
    """A random spanning tree rooted at ``root``, as a chunk-level Algorithm, one level per step."""
    n = draw(st.integers(2, 10))
    root = draw(st.integers(0, n - 1))
    order = draw(st.permutations([r for r in range(n) if r != root]))
    parent = {}
    placed = [root]
    for r in order:
        parent[r] = draw(st.sampled_from(placed))
        placed.append(r)
    depth = {root: 0}
    for r in order:
        depth[r] = depth[parent[r]] + 1
    chunks = draw(st.integers(1, 3))
    steps = tuple(
        Step(tuple(Transfer(k, parent[r], r) for r in order if depth[r] == level for k in range(chunks)))
        for level in range(1, max(depth.values()) + 1)
    )
    spec = CollectiveSpec("broadcast", n, chunk_factor=chunks, root=root, inplace=draw(st.booleans()))
    return Algorithm("random_tree", spec, steps)


@settings(max_examples=40, deadline=None)
@given(alg=random_tree_broadcast())
def test_any_spanning_tree_lowers_to_a_verified_broadcast(alg):
    report = verify(alg.to_program())
    assert report.messages == sum(len(s.transfers) for s in alg.steps)
