"""Mutated MSCCL XML: the importer returns a verified Program or raises a SyncclError -- nothing else, and never hangs."""

import copy
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synccl.collectives import Program, from_msccl_xml, library, to_msccl_xml, verify
from synccl.exceptions import SyncclError

# As tests/conftest.py MSCCL_CORPUS (needed here at import time): $SYNCCL_MSCCL_CORPUS, else ../shared/msccl-xml.
CORPUS = Path(os.environ.get("SYNCCL_MSCCL_CORPUS") or Path(__file__).resolve().parents[3] / "shared" / "msccl-xml")
CORPUS_FILES = ["allgather_ring_2r_1ch_1i_LL.xml", "allreduce_simple_ring_4r_1i_Simple.xml", "sccl_broadcast_dgx1_8r_root0_s2.xml", "alltoall_allpairs_4r_2i_LL.xml"]


def _sources() -> list[str]:
    texts = [
        to_msccl_xml(library.build("ring", "all_reduce", 3)),
        to_msccl_xml(library.build("recursive_doubling", "all_gather", 4)),  # nop steps
        to_msccl_xml(library.build("binomial", "broadcast", 4, root=1, inplace=True)),
        to_msccl_xml(library.build("ring", "reduce_scatter", 3, inplace=True)),
    ]
    texts += [(CORPUS / name).read_text() for name in CORPUS_FILES if (CORPUS / name).is_file()]
    return texts


SOURCES = _sources()
ATTRIBUTES = ["ngpus", "coll", "inplace", "outofplace", "nchunksperloop", "id", "i_chunks", "o_chunks", "s_chunks", "send", "recv", "chan", "s", "type", "srcbuf", "srcoff", "dstbuf", "dstoff", "cnt", "depid", "deps", "hasdep", "root", "proto", "minBytes"]
VALUES = st.one_of(
    st.integers(-3, 20).map(str),
    st.sampled_from(["i", "o", "s", "r", "cpy", "re", "rcs", "rrc", "rrs", "rrcs", "nop", "custom", "allreduce", "allgather", "reduce_scatter", "broadcast", "LL", "", " 1", "1e3", "0x10", "9" * 30, "-0"]),
    st.text(max_size=6),
)


def _elements(root: ET.Element) -> list[tuple[ET.Element, ET.Element | None]]:
    return [(root, None)] + [(child, parent) for parent in root.iter() for child in parent]


@st.composite
def mutated_xml(draw: st.DrawFn) -> str:
    root = ET.fromstring(draw(st.sampled_from(SOURCES)))
    for _ in range(draw(st.integers(1, 4))):
        elements = _elements(root)
        element, parent = draw(st.sampled_from(elements))
        action = draw(st.sampled_from(["set", "set", "set", "delete-attribute", "delete", "duplicate"]))
        if action == "set":
            element.set(draw(st.sampled_from(ATTRIBUTES)), draw(VALUES))
        elif action == "delete-attribute" and element.attrib:
            del element.attrib[draw(st.sampled_from(sorted(element.attrib)))]
        elif action == "delete" and parent is not None:
            parent.remove(element)
        elif action == "duplicate" and parent is not None:
            parent.insert(draw(st.integers(0, len(parent))), copy.deepcopy(element))
    text = ET.tostring(root, encoding="unicode")
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_xml())
def test_mutated_xml_is_imported_verified_or_refused_with_a_synccl_error(text):
    try:
        program = from_msccl_xml(text, source="fuzz.xml")
    except SyncclError as err:
        message = str(err)
        assert message and "\n" not in message.split(" (and ")[0], message
        return
    assert isinstance(program, Program)
    verify(program)
