import pytest

from synccl.collectives import Buffer, Collective, CollectiveSpec, parse_collective
from synccl.exceptions import CollectiveError

SIZES = {
    "all_gather": (1, 4),
    "reduce_scatter": (4, 1),
    "all_reduce": (1, 1),
    "all_to_all": (4, 4),
    "broadcast": (1, 1),
    "reduce": (1, 1),
    "gather": (1, 4),
    "scatter": (4, 1),
}


@pytest.mark.parametrize("name", list(SIZES))
def test_buffer_sizes_scale_with_chunk_factor(name):
    spec = CollectiveSpec(name, nranks=4, chunk_factor=3)
    i, o = SIZES[name]
    assert (spec.input_chunks, spec.output_chunks) == (3 * i, 3 * o)
    assert spec.size_chunks == 3 * max(i, o)


def test_allgather_pre_and_postconditions():
    spec = CollectiveSpec("all_gather", nranks=3, chunk_factor=2)
    assert spec.precondition(1) == {0: (1, 0), 1: (1, 1)}
    post = spec.postcondition(0)
    assert post[3] == frozenset({(1, 1)}) and len(post) == 6


def test_reduce_scatter_output_combines_every_rank():
    spec = CollectiveSpec("reduce_scatter", nranks=3, chunk_factor=1)
    assert spec.postcondition(2) == {0: frozenset({(0, 2), (1, 2), (2, 2)})}


def test_rooted_collectives_constrain_only_what_matters():
    bcast = CollectiveSpec("broadcast", nranks=3, root=2)
    assert bcast.precondition(0) == {} and bcast.precondition(2) == {0: (2, 0)}
    red = CollectiveSpec("reduce", nranks=3, root=1)
    assert red.postcondition(0) == {} and red.postcondition(1)[0] == frozenset({(0, 0), (1, 0), (2, 0)})
    assert CollectiveSpec("gather", nranks=2).postcondition(1) == {}


def test_all_to_all_transposes_blocks():
    spec = CollectiveSpec("all_to_all", nranks=3)
    assert spec.postcondition(1) == {0: frozenset({(0, 1)}), 1: frozenset({(1, 1)}), 2: frozenset({(2, 1)})}


def test_inplace_aliasing():
    ag = CollectiveSpec("all_gather", nranks=4, chunk_factor=2, inplace=True)
    assert ag.resolve(3, Buffer.INPUT, 1) == (Buffer.OUTPUT, 7)
    rs = CollectiveSpec("reduce_scatter", nranks=4, chunk_factor=2, inplace=True)
    assert rs.resolve(1, Buffer.OUTPUT, 0) == (Buffer.INPUT, 2)
    ar = CollectiveSpec("all_reduce", nranks=2, inplace=True)
    assert ar.resolve(0, Buffer.OUTPUT, 0) == (Buffer.INPUT, 0)
    assert ar.resolve(0, Buffer.SCRATCH, 5) == (Buffer.SCRATCH, 5)
    assert CollectiveSpec("all_reduce", nranks=2).resolve(0, Buffer.OUTPUT, 0) == (Buffer.OUTPUT, 0)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"collective": "all_gather", "nranks": 0}, "nranks must be an integer >= 1, got 0"),
        ({"collective": "all_gather", "nranks": 2, "chunk_factor": 0}, "chunk_factor must be an integer >= 1, got 0"),
        ({"collective": "broadcast", "nranks": 2, "root": 2}, "root must be a rank in 0..1, got 2"),
        ({"collective": "all_reduce", "nranks": 2, "root": 0}, "takes no root"),
        ({"collective": "allsum", "nranks": 2}, "unknown collective 'allsum'"),
    ],
)
def test_bad_specs_are_named(kwargs, fragment):
    with pytest.raises(CollectiveError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        CollectiveSpec(**kwargs)


@pytest.mark.parametrize("spelling", ["allreduce", "AllReduce", "all-reduce", "all_reduce", "ALL_REDUCE"])
def test_collective_spellings(spelling):
    assert parse_collective(spelling) is Collective.ALL_REDUCE


def test_rank_out_of_range():
    with pytest.raises(CollectiveError, match="no rank 5"):
        CollectiveSpec("all_gather", nranks=2).postcondition(5)


def test_location_tables_are_dense_lists_or_sparse_dictionaries():
    from synccl.collectives._spec import ChunkLocations

    locations = ChunkLocations(CollectiveSpec(Collective.ALL_GATHER, 4), [0] * 4)
    dense = locations.table(entries=16)
    assert isinstance(dense, list) and len(dense) == 4 * 3 * 4 and set(dense) == {None}
    sparse = ChunkLocations(CollectiveSpec(Collective.ALL_GATHER, 4), [10**8] * 4).table(entries=16)
    assert not isinstance(sparse, list) and len(sparse) == 0
    where = locations.base(3, Buffer.OUTPUT) + 1
    sparse[where] = "written"
    assert sparse[where] == "written" and sparse[where + 1] is None
