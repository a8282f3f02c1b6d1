"""MSCCL XML: export any verified Program for MSCCL's executor, and import the XML that MSCCLang,
SCCL, TACCL, TE-CCL and ForestColl write.

The mapping is one-to-one: a ``<gpu>`` is a rank, a ``<tb>`` a channel (``chan`` is its lane),
a ``<step>`` an instruction (``s r cpy re rcs rrc rrs rrcs nop``), buffers ``i o s`` are input,
output and scratch. MSCCL's steps carry at most one dependency (``depid``/``deps``); a Program
instruction with several becomes ``nop`` steps that carry the extra ones, as MSCCLang emits.

Untrusted XML goes through :mod:`defusedxml` (no DTDs, hence no entity expansion) with limits
on size and nesting; a malformed file gets a one-line error naming the element, attribute and
value.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from xml.etree.ElementTree import Element  # noqa: S405 - only the type; parsing goes through defusedxml

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from synccl._files import read_limited
from synccl._gcpause import gc_paused
from synccl.collectives._program import Channel, Dependency, Instruction, Op, Program, RankProgram, Slice
from synccl.collectives._spec import Buffer, Collective, CollectiveSpec, parse_collective
from synccl.collectives._verifier import check, verify
from synccl.exceptions import CollectiveError, ProgramError
from synccl.units import format_size

__all__ = ["XmlError", "ExecutorLimits", "to_msccl_xml", "from_msccl_xml", "load_msccl_xml", "save_msccl_xml", "MSCCL_LIMITS"]

_OPS = {
    "s": Op.SEND,
    "r": Op.RECV,
    "cpy": Op.COPY,
    "re": Op.REDUCE,
    "rcs": Op.RECV_COPY_SEND,
    "rrc": Op.RECV_REDUCE_COPY,
    "rrs": Op.RECV_REDUCE_SEND,
    "rrcs": Op.RECV_REDUCE_COPY_SEND,
    "nop": Op.NOP,
}
_TYPES = {op: name for name, op in _OPS.items()}
_BUFFERS = {"i": Buffer.INPUT, "o": Buffer.OUTPUT, "s": Buffer.SCRATCH}
_NAMES = {b: n for n, b in _BUFFERS.items()}
#: MSCCL's spelling of each collective.
_COLL_NAMES = {
    Collective.ALL_REDUCE: "allreduce",
    Collective.ALL_GATHER: "allgather",
    Collective.REDUCE_SCATTER: "reducescatter",
    Collective.ALL_TO_ALL: "alltoall",
    Collective.BROADCAST: "broadcast",
    Collective.REDUCE: "reduce",
    Collective.GATHER: "gather",
    Collective.SCATTER: "scatter",
}
#: The largest MSCCL XML accepted: 4x the largest synccl writes (262 MB: all_gather on 1,024 ranks), 500x
#: the largest published one (2 MB, 32 ranks). Files are parsed one ``<gpu>`` at a time.
MAX_XML_BYTES = 1 << 30
MAX_DEPTH = 8


class XmlError(ProgramError):
    """An MSCCL XML file is malformed or cannot be expressed (one line, naming the culprit)."""


@dataclass(frozen=True, slots=True)
class ExecutorLimits:
    """The MSCCL executor's hard limits, checked on export (``msccl_struct.h`` of msccl-executor-nccl).

    A thread block's dependency names the block it waits for in an ``int8_t``, so only blocks
    0..127 can be waited for: export numbers the blocks others wait for first, and refuses a
    rank with more of them than that.
    """

    max_count: int = 72  # cnt must stay below this (MSCCL_MAX_COUNT)
    max_steps_per_tb: int = 64  # MSCCL_MAX_NUM_STEPS
    max_channels: int = 32  # lanes: NCCL's MAXCHANNELS
    max_peers_per_channel: int = 32  # distinct send (and receive) peers of a rank on one lane: MSCCL_MAX_NUM_THREAD_BLOCKS_PER_CHANNEL
    max_thread_blocks: int = 32 * 32  # per rank: MSCCL_MAX_NUM_THREAD_BLOCKS
    max_dependency_block: int = 127  # dependentBid is an int8_t
    max_offset: int = (1 << 15) - 1  # srcOffset and dstOffset are int16_t


MSCCL_LIMITS = ExecutorLimits()


# -- export ----------------------------------------------------------------------------------------


@gc_paused()
def to_msccl_xml(program: Program, *, limits: ExecutorLimits = MSCCL_LIMITS) -> str:
    """MSCCL XML for a Program, which is verified first.

    Every attribute MSCCL's executor reads is written; extra dependencies become ``nop`` steps.
    Raises :class:`XmlError` naming rank, channel and limit when the executor could not run it.

    >>> from synccl.collectives import library
    >>> xml = to_msccl_xml(library.build("ring", "all_gather", 2))
    >>> xml.splitlines()[0][:61]
    '<algo name="ring_all_gather_n2_c1" proto="Simple" nchannels="'
    """
    verify(program)
    if program.computes:
        raise XmlError(f"export {program.name!r}: has compute steps (produce/consume), which MSCCL XML cannot express; export the collective without them")
    spec = program.spec
    lanes = program.nlanes
    if lanes > limits.max_channels:
        raise XmlError(f"export {program.name!r}: uses {lanes} channels (lanes); MSCCL's executor allows at most {limits.max_channels}")
    lines = [
        f'<algo name="{_escape(program.name)}" proto="{program.protocol}" nchannels="{lanes}" nchunksperloop="{spec.size_chunks}" '
        f'ngpus="{spec.nranks}" coll="{_COLL_NAMES[spec.collective]}" inplace="{int(spec.inplace)}" outofplace="{int(not spec.inplace)}" '
        f'minBytes="{program.min_bytes}" maxBytes="{program.max_bytes or 0}"{_root_attribute(spec)}>'
    ]
    for rp in program.ranks:
        i_chunks, o_chunks = _declared_sizes(spec)
        lines.append(f'  <gpu id="{rp.rank}" i_chunks="{i_chunks}" o_chunks="{o_chunks}" s_chunks="{rp.scratch_chunks}">')
        _check_rank_limits(program, rp, limits)
        steps_of = _lay_out_steps(rp)
        targets = {(d_ch, d_step) for steps in steps_of.values() for _, _, _, dep in steps if dep is not None for d_ch, d_step in [dep]}
        block = _block_ids(program, rp, {d_ch for d_ch, _ in targets}, limits)
        for ch in sorted(rp.channels, key=lambda c: block[c.id]):
            steps = steps_of[ch.id]
            if len(steps) > limits.max_steps_per_tb:
                raise XmlError(f"export {program.name!r}: rank {rp.rank} channel {ch.id} has {len(steps)} steps; MSCCL's executor allows at most {limits.max_steps_per_tb} per thread block")
            send = -1 if ch.send_peer is None else ch.send_peer
            recv = -1 if ch.recv_peer is None else ch.recv_peer
            lines.append(f'    <tb id="{block[ch.id]}" send="{send}" recv="{recv}" chan="{ch.lane}">')
            for s, (op, src, dst, dep) in enumerate(steps):
                count = (src or dst).count if (src or dst) is not None else 0
                if count >= limits.max_count:
                    raise XmlError(f"export {program.name!r}: rank {rp.rank} channel {ch.id} step {s} moves {count} chunks; MSCCL's executor needs cnt < {limits.max_count}")
                a = src or dst
                b = dst or src
                sbuf, soff = (_NAMES[a.buffer], a.index) if a is not None else ("i", 0)
                dbuf, doff = (_NAMES[b.buffer], b.index) if b is not None else ("i", 0)
                if max(soff + count, doff + count) - 1 > limits.max_offset:
                    raise XmlError(f"export {program.name!r}: rank {rp.rank} channel {ch.id} step {s} reaches chunk {max(soff, doff) + count - 1}; MSCCL's executor addresses chunks 0..{limits.max_offset}")
                depid, deps = (block[dep[0]], dep[1]) if dep is not None else (-1, -1)
                hasdep = int((ch.id, s) in targets)
                lines.append(
                    f'      <step s="{s}" type="{_TYPES[op]}" srcbuf="{sbuf}" srcoff="{soff}" dstbuf="{dbuf}" dstoff="{doff}" '
                    f'cnt="{count}" depid="{depid}" deps="{deps}" hasdep="{hasdep}"/>'
                )
            lines.append("    </tb>")
        lines.append("  </gpu>")
    lines.append("</algo>")
    return "\n".join(lines) + "\n"


def _check_rank_limits(program: Program, rp: RankProgram, limits: ExecutorLimits) -> None:
    """Thread blocks per rank and peers per lane, in one line naming rank, lane and limit."""
    if len(rp.channels) > limits.max_thread_blocks:
        raise XmlError(f"export {program.name!r}: rank {rp.rank} has {len(rp.channels)} channels; MSCCL's executor runs at most {limits.max_thread_blocks} thread blocks per rank")
    for role, attribute in (("sends to", "send_peer"), ("receives from", "recv_peer")):
        peers: dict[int, set[int]] = {}
        for ch in rp.channels:
            peer = getattr(ch, attribute)
            if peer is not None:
                peers.setdefault(ch.lane, set()).add(peer)
        for lane, found in sorted(peers.items()):
            if len(found) > limits.max_peers_per_channel:
                raise XmlError(
                    f"export {program.name!r}: rank {rp.rank} {role} {len(found)} peers on lane {lane}; MSCCL's executor allows "
                    f"{limits.max_peers_per_channel} per channel (lane): give the schedule more lanes"
                )


def _block_ids(program: Program, rp: RankProgram, waited_for: set[int], limits: ExecutorLimits) -> dict[int, int]:
    """Thread block id of each channel: the channel's id, unless some block waited for would be past
    ``max_dependency_block``; then the blocks waited for come first (in channel order)."""
    if not waited_for or max(waited_for) <= limits.max_dependency_block:
        return {ch.id: ch.id for ch in rp.channels}
    if len(waited_for) > limits.max_dependency_block + 1:
        raise XmlError(
            f"export {program.name!r}: rank {rp.rank} has {len(waited_for)} channels that others wait for; MSCCL's executor "
            f"names the block a step waits for in an int8, so at most {limits.max_dependency_block + 1} can be waited for"
        )
    order = sorted(rp.channels, key=lambda ch: (ch.id not in waited_for, ch.id))
    return {ch.id: block for block, ch in enumerate(order)}


def _root_attribute(spec: CollectiveSpec) -> str:
    """MSCCL's XML names no root; synccl writes one for rooted collectives (MSCCL ignores it)."""
    return f' root="{spec.root}"' if spec.collective.is_rooted else ""


def _declared_sizes(spec: CollectiveSpec) -> tuple[int, int]:
    """``i_chunks`` and ``o_chunks`` as MSCCL declares them: 0 for the buffer an in-place call aliases away."""
    i_chunks, o_chunks = spec.input_chunks, spec.output_chunks
    if spec.inplace:
        aliased_input = spec.resolve(0, Buffer.INPUT, 0)[0] is not Buffer.INPUT
        return (0, o_chunks) if aliased_input else (i_chunks, 0)
    return i_chunks, o_chunks


def _lay_out_steps(rp: RankProgram) -> dict[int, list[tuple[Op, Slice | None, Slice | None, tuple[int, int] | None]]]:
    """Each channel's steps with one dependency each (extra ones on ``nop`` steps before), deps remapped."""
    index: dict[tuple[int, int], int] = {}
    for ch in rp.channels:
        s = 0
        for k, ins in enumerate(ch.instructions):
            s += max(0, len(ins.deps) - 1)
            index[ch.id, k] = s
            s += 1
    out: dict[int, list] = {}
    for ch in rp.channels:
        steps = []
        for ins in ch.instructions:
            deps = [(d.channel, index[d.channel, d.instruction]) for d in ins.deps]
            for extra in deps[:-1]:
                steps.append((Op.NOP, None, None, extra))
            steps.append((ins.op, ins.src, ins.dst, deps[-1] if deps else None))
        out[ch.id] = steps
    return out


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def save_msccl_xml(program: Program, path: str | os.PathLike[str], *, limits: ExecutorLimits = MSCCL_LIMITS) -> None:
    """Write :func:`to_msccl_xml` of ``program`` to ``path``."""
    text = to_msccl_xml(program, limits=limits)  # before opening: a refused Program leaves no file behind
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# -- import ----------------------------------------------------------------------------------------


def load_msccl_xml(path: str | os.PathLike[str], **options: object) -> Program:
    """Read an MSCCL XML file into a verified Program (see :func:`from_msccl_xml`)."""
    path = os.fspath(path)
    data = read_limited(path, limit=MAX_XML_BYTES, what="MSCCL XML", error=XmlError)
    return from_msccl_xml(data, source=os.path.basename(path), **options)


@gc_paused()
def from_msccl_xml(
    text: str | bytes,
    *,
    source: str = "xml",
    collective: Collective | str | None = None,
    root: int | None = None,
    check_program: bool = True,
) -> Program:
    """Parse MSCCL XML into a Program and verify it.

    ``coll`` spellings of every tool are accepted (``allreduce``, ``reducescatter``,
    ``reduce_scatter`` ...). For ``coll="custom"`` pass ``collective`` (and ``root``), or the
    importer tries every collective synccl knows and keeps the one the program implements.
    Unknown attributes and elements (TE-CCL's, RCCL's) are ignored.

    >>> from synccl.collectives import library
    >>> prog = from_msccl_xml(to_msccl_xml(library.build("ring", "all_reduce", 3)))
    >>> prog.collective.value, prog.nranks
    ('all_reduce', 3)
    """
    if isinstance(text, str):
        text = text.encode("utf-8")
    if len(text) > MAX_XML_BYTES:
        raise XmlError(f"{source} is larger than the {format_size(MAX_XML_BYTES)} limit of MSCCL XML files")
    reader = _Reader(source)
    algo, nranks, ranks, sizes = _stream(text, reader)
    coll_attr = reader.text(algo, "coll")
    inplace = reader.flag(algo, "inplace", default=False)
    outofplace = reader.flag(algo, "outofplace", default=not inplace)
    ranks.sort(key=lambda rp: rp.rank)
    if [rp.rank for rp in ranks] != list(range(nranks)):
        raise XmlError(f"{source}: <gpu> ids must be 0..{nranks - 1} once each")
    protocol = algo.get("proto", "Simple")
    meta = dict(
        name=algo.get("name", os.path.splitext(source)[0]),
        ranks=tuple(ranks),
        protocol=protocol if protocol in ("Simple", "LL", "LL128") else "Simple",
        min_bytes=reader.int(algo, "minBytes", low=0, default=0),
        max_bytes=reader.int(algo, "maxBytes", low=0, default=0) or None,
    )
    in_place = inplace and not (outofplace and not inplace)
    if root is None and algo.get("root") is not None:
        root = reader.int(algo, "root", low=0, high=nranks - 1)
    if collective is None and coll_attr.strip().lower() == "custom":
        return _infer(source, meta, nranks, sizes, in_place, root)
    coll = parse_collective(collective) if collective is not None else _parse_coll(source, coll_attr)
    if coll.is_rooted and root is None:
        root = _find_root(source, coll, meta, nranks, sizes, in_place)
    spec = _spec_from_sizes(source, coll, nranks, sizes, in_place, root)
    program = Program(spec=spec, **meta)
    if check_program:
        verify(program)
    return program


def _parse_coll(source: str, name: str) -> Collective:
    try:
        return parse_collective(name)
    except CollectiveError:
        valid = ", ".join(sorted(set(_COLL_NAMES.values()) | {"reduce_scatter", "custom"}))
        raise XmlError(f"{source}: <algo coll={name!r}> is not a collective synccl knows; valid: {valid}") from None


def _spec_from_sizes(source: str, coll: Collective, nranks: int, sizes: dict[int, tuple[int, int]], inplace: bool, root: int | None) -> CollectiveSpec:
    """The spec whose buffer sizes match the declared ``i_chunks``/``o_chunks``."""
    i_chunks, o_chunks = sizes[0]
    per_rank_share = coll in (Collective.ALL_GATHER, Collective.GATHER)
    split = coll in (Collective.REDUCE_SCATTER, Collective.ALL_TO_ALL, Collective.SCATTER)
    biggest = max(i_chunks, o_chunks)
    if biggest == 0:
        raise XmlError(f"{source}: <gpu id='0'> declares i_chunks=0 and o_chunks=0")
    if (per_rank_share or split) and biggest % nranks:
        raise XmlError(f"{source}: {coll.value} on {nranks} ranks needs a multiple of {nranks} chunks, <gpu id='0'> declares {biggest}")
    chunk_factor = biggest // nranks if (per_rank_share or split) else biggest
    spec = CollectiveSpec(coll, nranks, chunk_factor=chunk_factor, inplace=inplace, root=root if coll.is_rooted else None)
    unused = {Collective.BROADCAST: "i_chunks", Collective.SCATTER: "i_chunks", Collective.REDUCE: "o_chunks", Collective.GATHER: "o_chunks"}
    for rank, declared in sorted(sizes.items()):
        for name, got, expected in (("i_chunks", declared[0], spec.input_chunks), ("o_chunks", declared[1], spec.output_chunks)):
            # 0 is fine for a buffer the call aliases away, or one that matters only at the root.
            insignificant = spec.inplace or (unused.get(coll) == name and rank != spec.root)
            if got != expected and not (got == 0 and insignificant):
                raise XmlError(f"{source}: <gpu id='{rank}' {name}={got!r}> does not fit {spec.describe()} (expected {expected})")
    return spec


def _find_root(source: str, coll: Collective, meta: dict, nranks: int, sizes: dict[int, tuple[int, int]], inplace: bool) -> int:
    """The root a rooted program without a ``root`` attribute serves (0 if none fits, to report why)."""
    for r in range(nranks):
        try:
            spec = _spec_from_sizes(source, coll, nranks, sizes, inplace, r)
        except XmlError:
            continue
        if not check(Program(spec=spec, **meta)):
            return r
    return 0


def _infer(source: str, meta: dict, nranks: int, sizes: dict[int, tuple[int, int]], inplace: bool, root: int | None) -> Program:
    """For coll="custom": the synccl collective this program implements, if any."""
    tried = []
    for coll in Collective:
        roots = [root] if root is not None else (range(nranks) if coll.is_rooted else [None])
        for r in roots:
            try:
                spec = _spec_from_sizes(source, coll, nranks, sizes, inplace, r)
            except (XmlError, ValueError):
                continue  # this collective cannot have these buffer sizes
            program = Program(spec=spec, **meta)
            tried.append(spec.describe())
            if not check(program):
                return program
    what = f"none of the {len(tried)} collectives that fit its buffer sizes ({', '.join(sorted({t.split(' n=')[0] for t in tried}))})" if tried else "no collective: its buffer sizes fit none that synccl knows"
    raise XmlError(f"{source}: <algo coll='custom'>: the program implements {what}; pass collective= if it is meant to be one")


def _stream(text: bytes, reader: _Reader) -> tuple[Element, int, list[RankProgram], dict[int, tuple[int, int]]]:
    """Parse incrementally: the ``<algo>`` element and its ``ngpus``, each ``<gpu>`` read into a
    RankProgram as soon as it ends (then dropped), and every gpu's declared ``(i_chunks, o_chunks)``.

    A 1,024-rank schedule is a quarter of a gigabyte of XML; holding its whole element tree
    would take gigabytes more, so only one ``<gpu>`` subtree is in memory at a time.
    """
    source = reader.source
    depth = 0
    root: Element | None = None
    algo: Element | None = None
    nranks = gpus = 0
    ranks: list[RankProgram] = []
    sizes: dict[int, tuple[int, int]] = {}
    try:
        for event, el in SafeET.iterparse(io.BytesIO(text), events=("start", "end"), forbid_dtd=True):
            if event == "start":
                depth += 1
                if depth > MAX_DEPTH:
                    raise XmlError(f"{source}: elements nest deeper than {MAX_DEPTH} levels (at <{el.tag}>)")
                if root is None:
                    root = el
                if algo is None and el.tag == "algo" and (el is root or depth == 2):
                    algo = el
                    nranks = reader.int(algo, "ngpus", low=1)
                    reader.text(algo, "coll")
                continue
            depth -= 1
            if el.tag == "gpu" and algo is not None and depth == (1 if algo is root else 2):
                gpus += 1
                if gpus <= nranks:  # the ones past ngpus are only counted, for the error below
                    rank = reader.int(el, "id", low=0, high=nranks - 1)
                    sizes[rank] = (reader.int(el, "i_chunks", low=0, default=0), reader.int(el, "o_chunks", low=0, default=0))
                    ranks.append(_read_gpu(reader, el, rank, nranks))
                el.clear()  # its steps are read; drop the subtree
    except DefusedXmlException as err:
        raise XmlError(f"{source}: refused: {type(err).__name__} (DTDs and entities are not allowed)") from None
    except SafeET.ParseError as err:
        raise XmlError(f"{source}: not well-formed XML: {err}") from None
    if algo is None:
        raise XmlError(f"{source}: no <algo> element (found <{root.tag if root is not None else ''}>)")
    if gpus != nranks:
        raise XmlError(f"{source}: <algo ngpus={nranks!r}> but {gpus} <gpu> elements")
    return algo, nranks, ranks, sizes


def _read_gpu(reader: _Reader, gpu: Element, rank: int, nranks: int) -> RankProgram:
    tbs = gpu.findall("tb")
    channels = []
    ids = sorted(reader.int(tb, "id", low=0) for tb in tbs)
    if ids != list(range(len(tbs))):
        raise XmlError(f"{reader.source}: <gpu id='{rank}'>: <tb> ids must be 0..{len(tbs) - 1}, got {ids}")
    for tb in tbs:
        tb_id = reader.int(tb, "id")
        where = f"<gpu id='{rank}'> <tb id='{tb_id}'>"
        send = reader.int(tb, "send", low=-1, high=nranks - 1, default=-1, where=where)
        recv = reader.int(tb, "recv", low=-1, high=nranks - 1, default=-1, where=where)
        lane = reader.int(tb, "chan", low=0, default=0, where=where)
        steps = tb.findall("step")
        instructions = []
        for k, step in enumerate(steps):
            instructions.append(_read_step(reader, step, f"{where} <step s='{k}'>", k))
        channels.append(Channel(tb_id, None if send < 0 else send, None if recv < 0 else recv, tuple(instructions), lane))
    channels.sort(key=lambda c: c.id)
    return RankProgram(rank, tuple(channels), reader.int(gpu, "s_chunks", low=0, default=0))


def _read_step(reader: _Reader, step: Element, where: str, position: int) -> Instruction:
    s = reader.int(step, "s", low=0, where=where)
    if s != position:
        raise XmlError(f"{reader.source}: {where}: attribute 's' = {s!r}, expected {position} (steps in order)")
    kind = reader.text(step, "type", where=where)
    op = _OPS.get(kind)
    if op is None:
        raise XmlError(f"{reader.source}: {where}: attribute 'type' = {kind!r} is not an MSCCL step type ({', '.join(_OPS)})")
    depid = reader.int(step, "depid", low=-1, default=-1, where=where)
    deps = reader.int(step, "deps", low=-1, default=-1, where=where)
    dep = () if depid < 0 or deps < 0 else (Dependency(depid, deps),)
    if op is Op.NOP:
        return Instruction(op, None, None, dep)
    count = reader.int(step, "cnt", low=1, where=where)
    src = Slice(reader.buffer(step, "srcbuf", where), reader.int(step, "srcoff", low=0, where=where), count)
    dst = Slice(reader.buffer(step, "dstbuf", where), reader.int(step, "dstoff", low=0, where=where), count)
    return Instruction(op, src if op.reads_src else None, dst if op.writes_dst else None, dep)


class _Reader:
    """Attribute access with one-line errors naming file, element, attribute and value."""

    def __init__(self, source: str) -> None:
        self.source = source

    def text(self, el: Element, name: str, *, where: str | None = None) -> str:
        value = el.get(name)
        if value is None:
            raise XmlError(f"{self.source}: {where or '<' + el.tag + '>'}: missing attribute {name!r}")
        return value

    def int(self, el: Element, name: str, *, low: int | None = None, high: int | None = None, default: int | None = None, where: str | None = None) -> int:
        raw = el.get(name)
        place = where or f"<{el.tag}>"
        if raw is None:
            if default is not None:
                return default
            raise XmlError(f"{self.source}: {place}: missing attribute {name!r}")
        try:
            value = int(raw.strip())
        except ValueError:
            raise XmlError(f"{self.source}: {place}: attribute {name!r} = {raw!r} is not an integer") from None
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
            raise XmlError(f"{self.source}: {place}: attribute {name!r} = {raw!r} is outside {span}")
        return value

    def flag(self, el: Element, name: str, *, default: bool) -> bool:
        raw = el.get(name)
        if raw is None:
            return default
        if raw.strip() not in ("0", "1"):
            raise XmlError(f"{self.source}: <{el.tag}>: attribute {name!r} = {raw!r} must be 0 or 1")
        return raw.strip() == "1"

    def buffer(self, el: Element, name: str, where: str) -> Buffer:
        raw = self.text(el, name, where=where)
        buf = _BUFFERS.get(raw.strip())
        if buf is None:
            raise XmlError(f"{self.source}: {where}: attribute {name!r} = {raw!r} is not a buffer (i, o or s)")
        return buf
