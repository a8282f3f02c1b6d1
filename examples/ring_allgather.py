"""Ring allgather in the synccl DSL; check it with `synccl verify examples/ring_allgather.py`."""

from synccl.collectives import Buffer, CollectiveSpec, chunk, program

n = 4
with program("ring_allgather", CollectiveSpec("all_gather", nranks=n)) as p:
    for r in range(n):
        c = chunk(r, Buffer.INPUT, 0).copy(r, Buffer.OUTPUT, r)  # my own block
        for step in range(1, n):
            c = c.copy((r + step) % n, Buffer.OUTPUT, r)  # pass it along the ring

if __name__ == "__main__":
    print(p.program.describe())
