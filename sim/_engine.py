"""The event-driven simulator: a Program's channels over a topology's links, flows sharing bandwidth fairly.

Model
-----
* Every channel runs its instructions in order (an MSCCL thread block). An instruction starts
  when the previous one of its channel completed, its dependencies completed and, if it
  receives, the matching message has arrived (the k-th send on a connection ``(src, dst,
  lane)`` is the k-th receive's message; the verifier makes each connection end one channel).
* An instruction then runs its phases one after the other: a *local* phase for the work it
  does in memory (its ``OpSemantics.local_work``: COPY, REDUCE and the reductions of
  RECV_REDUCE_COPY, RECV_REDUCE_SEND, RECV_REDUCE_COPY_SEND), then a *send* phase if it sends.
  A plain receive and the copy of RECV_COPY_SEND write straight from the connection and cost
  nothing locally.
* A send phase is a *flow* of ``count * chunk_bytes`` bytes along the flow's route (see
  :mod:`synccl.sim._routing`). All flows crossing a link share its bandwidth max-min fairly
  (progressive filling), and rates are recomputed for the flows whose links changed whenever a
  flow starts or drains. A send completes when its last byte has left (buffered, eager sends);
  its message arrives at the receiver the route's latency later.
* A local phase is a flow of ``count * chunk_bytes`` bytes over the rank's memory, a resource
  of ``memory_bandwidth(rank)`` GB/s that the rank's concurrent local phases share fairly.
  Alone, it takes ``count * chunk_bytes / memory_bandwidth``.
* A compute step (PRODUCE, CONSUME) is a local phase on the rank's compute engine instead:
  ``count * compute_us[kernel]`` microseconds of work on a resource that does one microsecond of
  work per microsecond, shared fairly by the rank's concurrent compute steps. Transfers do not
  slow compute down (on GPUs they compete for SMs and memory: Flux and torch's async TP report
  this interference; the model leaves it out, so it is optimistic by that much).

So a lone message of ``m`` bytes over one link takes ``latency + m / bandwidth``.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Mapping

from synccl.collectives import OP_SEMANTICS, Program
from synccl.exceptions import CollectiveError, ProgramError, TopologyError
from synccl.sim._fairness import max_min_rates
from synccl.sim._result import LinkUsage, SimResult, busbw_factor
from synccl.sim._routing import BYTES_PER_US_PER_GBPS, routes
from synccl.topologies import Topology

__all__ = ["simulate"]

logger = logging.getLogger(__name__)

_DRAIN, _ARRIVE = 0, 1


def simulate(program: Program, topology: Topology, size_bytes: int, *, local_cost: bool = True, compute_us: Mapping[str, float] | None = None) -> SimResult:
    """Simulate ``program`` on ``topology`` for a message of ``size_bytes`` bytes.

    The message size is nccl-tests': the byte size of the collective's largest buffer
    (``spec.size_chunks`` chunks), so one chunk is ``size_bytes / spec.size_chunks`` bytes.
    See the module docstring for the timing model. The Program is not verified here (call
    :func:`synccl.collectives.verify` for that); one that cannot run to its end raises.

    Parameters
    ----------
    program : Program
        The algorithm, for ``topology.nranks`` ranks.
    topology : Topology
        The network; every pair of peers must be connected by some route.
    size_bytes : int
        Message size in bytes, > 0.
    local_cost : bool
        Whether local copies and reductions take time (``False``: a pure network model).
    compute_us : mapping of str to float, optional
        Microseconds one chunk of each kernel's compute steps takes; needed when the Program has
        compute steps (:func:`synccl.sim.estimate_overlap` derives them from a matmul cost model).

    Returns
    -------
    SimResult
        Completion time, algorithm and bus bandwidth, per-rank finish times, link usage.

    Raises
    ------
    TopologyError
        If the rank counts differ or a pair of peers has no route.
    ProgramError
        If the Program is malformed or stalls (deadlock, message never received).
    CollectiveError
        If ``size_bytes`` is not a positive integer.

    Examples
    --------
    One rank sends 1 MB to the other over a 10 GB/s link with 2 µs latency:

    >>> from synccl.collectives import Buffer, Channel, Collective, CollectiveSpec, Instruction, Op, RankProgram, Slice
    >>> from synccl.topologies import TopologyBuilder
    >>> b = TopologyBuilder()
    >>> _ = b.add_rank(), b.add_rank()
    >>> b.add_link(0, 1, bandwidth=10.0, latency=2.0, kind="nvlink")
    >>> spec = CollectiveSpec(Collective.BROADCAST, 2, inplace=True)
    >>> chunk = Slice(Buffer.INPUT, 0)
    >>> prog = Program("bcast", spec, (
    ...     RankProgram(0, (Channel(0, 1, None, (Instruction(Op.SEND, src=chunk),)),)),
    ...     RankProgram(1, (Channel(0, None, 0, (Instruction(Op.RECV, dst=chunk),)),))))
    >>> simulate(prog, b.build("pair"), 1_000_000).time_us
    102.0
    """
    _check_inputs(program, topology, size_bytes)
    kernel_us = _check_compute(program, compute_us)
    engine = _Engine(program, topology, size_bytes / program.spec.size_chunks, local_cost, kernel_us)
    engine.run()
    time_us = max(engine.rank_finish, default=0.0)
    algbw = size_bytes / (time_us * BYTES_PER_US_PER_GBPS) if time_us > 0 else float("inf")
    usage = tuple(
        LinkUsage(u, v, engine.link_bytes[i], engine.link_bytes[i] / (engine.capacity[i] * time_us) if time_us > 0 else 0.0)
        for i, (u, v) in enumerate(engine.network_links)
    )
    logger.debug("simulate %r on %r, %d bytes: %.3f us, %d flows", program.name, topology.name, size_bytes, time_us, engine.nflows)
    return SimResult(
        program=program.name,
        topology=topology.name,
        collective=program.collective,
        nranks=program.nranks,
        size_bytes=size_bytes,
        time_us=time_us,
        algbw_gbps=algbw,
        busbw_gbps=algbw * busbw_factor(program.collective, program.nranks),
        rank_finish_us=tuple(engine.rank_finish),
        link_usage=usage,
        messages=engine.messages,
    )


def _check_inputs(program: Program, topology: Topology, size_bytes: int) -> None:
    if not isinstance(size_bytes, int) or isinstance(size_bytes, bool) or size_bytes <= 0:
        raise CollectiveError(f"simulate: size_bytes must be a positive integer, got {size_bytes!r}")
    n = program.nranks
    if topology.nranks != n:
        raise TopologyError(f"simulate: program {program.name!r} has {n} ranks but topology {topology.name!r} has {topology.nranks}")
    if len(program.ranks) != n:
        raise ProgramError(f"simulate: program {program.name!r} has {len(program.ranks)} rank programs for {n} ranks")
    for pos, rp in enumerate(program.ranks):
        if rp.rank != pos:
            raise ProgramError(f"simulate: program {program.name!r} lists rank {rp.rank!r} at position {pos}")
        ends: set[tuple[str, int, int]] = set()
        for cpos, ch in enumerate(rp.channels):
            where = f"simulate: program {program.name!r} rank {pos} channel {ch.id!r}"
            if ch.id != cpos:
                raise ProgramError(f"{where}: channel ids must be 0..{len(rp.channels) - 1} in order")
            for role, peer in (("send", ch.send_peer), ("recv", ch.recv_peer)):
                if peer is None:
                    continue
                if not isinstance(peer, int) or not 0 <= peer < n or peer == pos:
                    raise ProgramError(f"{where}: {role} peer {peer!r} is not another rank of 0..{n - 1}")
                if (role, peer, ch.lane) in ends:
                    raise ProgramError(
                        f"{where}: a second channel to {role} with rank {peer} on lane {ch.lane}; a connection has one channel per end"
                    )
                ends.add((role, peer, ch.lane))
            for index, ins in enumerate(ch.instructions):
                if ins.op.sends and ch.send_peer is None:
                    raise ProgramError(f"{where} instruction {index}: {ins.op.value} sends but the channel has no send peer")
                if ins.op.receives and ch.recv_peer is None:
                    raise ProgramError(f"{where} instruction {index}: {ins.op.value} receives but the channel has no receive peer")
                for dep in ins.deps:
                    if not 0 <= dep.channel < len(rp.channels):
                        raise ProgramError(f"{where} instruction {index}: depends on channel {dep.channel!r}, which does not exist")


def _check_compute(program: Program, compute_us: Mapping[str, float] | None) -> dict[str, float]:
    """Microseconds per chunk of every kernel the Program's compute steps run."""
    kernels = sorted({ins.kernel for _, _, _, ins in program.instructions() if ins.kernel is not None})
    given = dict(compute_us or {})
    for kernel in kernels:
        if kernel not in given:
            raise ProgramError(f"simulate: program {program.name!r} computes {kernel!r} but compute_us gives no time for it (got {sorted(given)})")
        us = given[kernel]
        if not isinstance(us, int | float) or isinstance(us, bool) or not us >= 0:
            raise CollectiveError(f"simulate: compute_us[{kernel!r}] must be a number of microseconds >= 0, got {us!r}")
    return given


class _Engine:
    """Mutable state of one simulation run; flows and channels are indexed by integers."""

    def __init__(self, program: Program, topology: Topology, chunk_bytes: float, local_cost: bool, compute_us: dict[str, float]) -> None:
        self.program = program
        # Links: the topology's, then one memory resource per rank.
        self.network_links = [(link.src, link.dst) for link in topology.links()]
        link_id = {pair: i for i, pair in enumerate(self.network_links)}
        self.capacity = [link.bandwidth * BYTES_PER_US_PER_GBPS for link in topology.links()]
        memory, compute = [], []
        for r in range(program.nranks):
            memory.append(len(self.capacity))
            self.capacity.append(topology.memory_bandwidth(r) * BYTES_PER_US_PER_GBPS)
        for _ in range(program.nranks):  # a compute engine per rank: one microsecond of work per microsecond
            compute.append(len(self.capacity))
            self.capacity.append(1.0)
        self.link_flows: list[dict[int, None]] = [{} for _ in self.capacity]
        self.link_bytes = [0.0] * len(self.capacity)

        # Channels and connections.
        channels = [(rp.rank, ch) for rp in program.ranks for ch in rp.channels]
        key = {(rank, ch.id): k for k, (rank, ch) in enumerate(channels)}
        table = routes(
            topology,
            {pair for rank, ch in channels for pair in ((rank, ch.send_peer), (ch.recv_peer, rank)) if None not in pair},
            message_bytes=chunk_bytes,
            op="simulate",
        )
        conn_id: dict[tuple[int, int, int], int] = {}

        def connection(src: int, dst: int, lane: int) -> int:
            return conn_id.setdefault((src, dst, lane), len(conn_id))

        self.channel_rank = [rank for rank, _ in channels]
        self.send_conn: list[int | None] = []
        self.send_links: list[tuple[int, ...]] = []
        self.send_latency: list[float] = []
        # Per instruction: (deps, receive connection, local work, local resource, bytes sent).
        self.steps: list[list[tuple[tuple[tuple[int, int], ...], int | None, float, tuple[int, ...], float]]] = []
        for rank, ch in channels:
            recv = connection(ch.recv_peer, rank, ch.lane) if ch.recv_peer is not None else None
            if ch.send_peer is not None:
                route = table[rank, ch.send_peer]
                self.send_conn.append(connection(rank, ch.send_peer, ch.lane))
                self.send_links.append(tuple(link_id[pair] for pair in route.links))
                self.send_latency.append(route.latency)
            else:
                self.send_conn.append(None)
                self.send_links.append(())
                self.send_latency.append(0.0)
            steps = []
            for ins in ch.instructions:
                nbytes = ins.count * chunk_bytes
                deps = tuple((key[rank, d.channel], d.instruction) for d in ins.deps)
                sem = OP_SEMANTICS[ins.op]
                if sem.computes:
                    local, resource = ins.count * compute_us[ins.kernel], (compute[rank],)
                else:
                    local, resource = (nbytes if local_cost and sem.local_work else 0.0), (memory[rank],)
                steps.append((deps, recv if sem.receives else None, local, resource, nbytes if sem.sends else 0.0))
            self.steps.append(steps)
        self.conn_names = {i: c for c, i in conn_id.items()}

        # Dynamic state.
        self.pos = [0] * len(channels)  # = instructions completed
        self.busy = [False] * len(channels)
        self.arrived = [0] * len(conn_id)
        self.consumed = [0] * len(conn_id)
        self.recv_waiter: list[int | None] = [None] * len(conn_id)
        self.dep_waiters: dict[tuple[int, int], list[int]] = {}
        self.rank_finish = [0.0] * program.nranks
        self.messages = 0
        # Flows: parallel lists indexed by flow id.
        self.f_links: list[tuple[int, ...]] = []
        self.f_remaining: list[float] = []
        self.f_rate: list[float] = []
        self.f_last: list[float] = []
        self.f_version: list[int] = []
        self.f_channel: list[int] = []
        self.f_send: list[bool] = []
        self.heap: list[tuple[float, int, int, int, int]] = []
        self.seq = 0
        self.dirty: set[int] = set()
        self.worklist: deque[int] = deque(range(len(channels)))

    @property
    def nflows(self) -> int:
        return len(self.f_links)

    # -- main loop -----------------------------------------------------------------------------
    def run(self) -> None:
        heap = self.heap
        self._advance(0.0)
        self._reallocate(0.0)
        while heap:
            now = heap[0][0]
            while heap and heap[0][0] == now:
                _, _, kind, ident, version = heapq.heappop(heap)
                if kind == _ARRIVE:
                    self._arrive(ident)
                elif version == self.f_version[ident]:
                    self._drain(now, ident)
            self._advance(now)
            self._reallocate(now)
        self._check_finished()

    def _push(self, time: float, kind: int, ident: int, version: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (time, self.seq, kind, ident, version))

    # -- channels ------------------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        """Run every channel on the worklist as far as it can go at time ``now``."""
        worklist, pos, steps_of = self.worklist, self.pos, self.steps
        while worklist:
            k = worklist.popleft()
            if self.busy[k]:
                continue
            steps = steps_of[k]
            while pos[k] < len(steps):
                deps, recv, local, resource, send = steps[pos[k]]
                blocker = next(((kd, i) for kd, i in deps if pos[kd] <= i), None)
                if blocker is not None:
                    self.dep_waiters.setdefault(blocker, []).append(k)
                    break
                if recv is not None:
                    if self.consumed[recv] >= self.arrived[recv]:
                        self.recv_waiter[recv] = k
                        break
                    self.consumed[recv] += 1
                if local > 0:
                    self._start_flow(k, resource, local, send=False)
                    break
                if send > 0:
                    self._start_flow(k, self.send_links[k], send, send=True)
                    break
                self._complete(now, k)

    def _complete(self, now: float, k: int) -> None:
        self.pos[k] += 1
        self.busy[k] = False
        rank = self.channel_rank[k]
        self.rank_finish[rank] = max(self.rank_finish[rank], now)
        self.worklist.extend(self.dep_waiters.pop((k, self.pos[k] - 1), ()))

    def _arrive(self, conn: int) -> None:
        self.arrived[conn] += 1
        waiter = self.recv_waiter[conn]
        if waiter is not None:
            self.recv_waiter[conn] = None
            self.worklist.append(waiter)

    # -- flows ---------------------------------------------------------------------------------
    def _start_flow(self, k: int, links: tuple[int, ...], nbytes: float, *, send: bool) -> None:
        self.busy[k] = True
        f = len(self.f_links)
        self.f_links.append(links)
        self.f_remaining.append(nbytes)
        self.f_rate.append(0.0)
        self.f_last.append(0.0)
        self.f_version.append(0)
        self.f_channel.append(k)
        self.f_send.append(send)
        for link in links:
            self.link_flows[link][f] = None
            self.link_bytes[link] += nbytes
            self.dirty.add(link)

    def _drain(self, now: float, f: int) -> None:
        """Flow ``f`` has pushed its last byte: free its links and move its channel on."""
        self.f_version[f] = -1
        for link in self.f_links[f]:
            del self.link_flows[link][f]
            self.dirty.add(link)
        k = self.f_channel[f]
        if self.f_send[f]:
            self.messages += 1
            self._push(now + self.send_latency[k], _ARRIVE, self.send_conn[k], 0)
            self._complete(now, k)
            self.worklist.append(k)
            return
        send = self.steps[k][self.pos[k]][4]
        if send > 0:
            self._start_flow(k, self.send_links[k], send, send=True)
        else:
            self._complete(now, k)
            self.worklist.append(k)

    def _reallocate(self, now: float) -> None:
        """Recompute max-min rates of every flow connected (through shared links) to a changed link."""
        seen: set[int] = set()
        link_flows, f_links = self.link_flows, self.f_links
        for start in sorted(self.dirty):
            if start in seen:
                continue
            seen.add(start)
            stack = [start]
            flows: dict[int, None] = {}
            while stack:
                for f in link_flows[stack.pop()]:
                    if f not in flows:
                        flows[f] = None
                        for link in f_links[f]:
                            if link not in seen:
                                seen.add(link)
                                stack.append(link)
            if flows:
                order = list(flows)
                self._set_rates(now, order, max_min_rates([f_links[f] for f in order], self.capacity))
        self.dirty.clear()

    def _set_rates(self, now: float, flows: list[int], rates: list[float]) -> None:
        for f, rate in zip(flows, rates, strict=True):
            old = self.f_rate[f]
            if rate == old:
                continue
            remaining = max(self.f_remaining[f] - old * (now - self.f_last[f]), 0.0)
            self.f_remaining[f] = remaining
            self.f_last[f] = now
            self.f_rate[f] = rate
            self.f_version[f] += 1
            if rate > 0:
                self._push(now + remaining / rate, _DRAIN, f, self.f_version[f])

    # -- end -----------------------------------------------------------------------------------
    def _check_finished(self) -> None:
        name = self.program.name
        channels = [(rp.rank, ch) for rp in self.program.ranks for ch in rp.channels]
        for k, (rank, ch) in enumerate(channels):
            index = self.pos[k]
            if index < len(ch.instructions):
                deps, recv, _, _, _ = self.steps[k][index]
                waiting = next(((kd, i) for kd, i in deps if self.pos[kd] <= i), None)
                if waiting is not None:
                    reason = f"waits for channel {channels[waiting[0]][1].id} instruction {waiting[1]}, which never completes"
                elif recv is not None and not self.busy[k]:
                    src, _, lane = self.conn_names[recv]
                    reason = f"waits for message #{self.consumed[recv]} from rank {src} on lane {lane}, which is never sent"
                else:
                    reason = "never finishes its transfer"
                raise ProgramError(f"simulate: program {name!r} stalls: rank {rank} channel {ch.id} instruction {index} {reason}")
        for conn, (src, dst, lane) in self.conn_names.items():
            left = self.arrived[conn] - self.consumed[conn]
            if left:
                raise ProgramError(
                    f"simulate: program {name!r}: {left} message(s) from rank {src} to rank {dst} on lane {lane} are never received"
                )
