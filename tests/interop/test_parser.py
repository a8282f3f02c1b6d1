"""The MSCCL XML reader: one-line errors naming element, attribute and value; hostile XML refused; other tools' dialects accepted."""

import re

import pytest

from synccl.collectives import XmlError, from_msccl_xml, library, to_msccl_xml

RING = library.build("ring", "all_gather", 2)
BASE = to_msccl_xml(RING)


def mutate(old: str, new: str, text: str = BASE) -> str:
    """``text`` with the first ``old`` replaced by ``new`` (which must occur)."""
    assert old in text, old
    return text.replace(old, new, 1)


def nest(depth: int) -> str:
    return mutate("</gpu>", "<x>" * depth + "</x>" * depth + "</gpu>")


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE algo [\n<!ENTITY lol "lol">\n'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">\n' for i in range(1, 10))
    + ']>\n<algo name="&lol9;" ngpus="1" coll="allgather"/>\n'
)
EXTERNAL_ENTITY = '<?xml version="1.0"?>\n<!DOCTYPE algo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<algo name="&xxe;" ngpus="1" coll="allgather"/>\n'


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param(mutate('ngpus="2"', 'ngpus="two"'), "<algo>: attribute 'ngpus' = 'two' is not an integer", id="bad-int"),
        pytest.param(mutate('type="cpy"', 'type="copy"'), "<gpu id='0'> <tb id='0'> <step s='0'>: attribute 'type' = 'copy' is not an MSCCL step type", id="unknown-step-type"),
        pytest.param(mutate('srcbuf="i"', 'srcbuf="q"'), "<gpu id='0'> <tb id='0'> <step s='0'>: attribute 'srcbuf' = 'q' is not a buffer (i, o or s)", id="unknown-buffer"),
        pytest.param(mutate(' coll="allgather"', ""), "<algo>: missing attribute 'coll'", id="missing-attribute"),
        pytest.param(mutate(' cnt="1"', ""), "<step s='0'>: missing attribute 'cnt'", id="missing-step-attribute"),
        pytest.param(mutate('ngpus="2"', 'ngpus="3"'), "<algo ngpus=3> but 2 <gpu> elements", id="gpu-count-mismatch"),
        pytest.param(mutate('<tb id="1"', '<tb id="2"'), "<gpu id='0'>: <tb> ids must be 0..1, got [0, 2]", id="tb-ids-not-contiguous"),
        pytest.param(mutate('<step s="1"', '<step s="2"'), "<gpu id='0'> <tb id='0'> <step s='1'>: attribute 's' = 2, expected 1 (steps in order)", id="s-out-of-order"),
        pytest.param(mutate('send="1"', 'send="7"'), "<gpu id='0'> <tb id='0'>: attribute 'send' = '7' is outside -1..1", id="peer-out-of-range"),
        pytest.param(mutate('<gpu id="1"', '<gpu id="0"'), "<gpu> ids must be 0..1 once each", id="duplicate-gpu"),
        pytest.param(mutate('coll="allgather"', 'coll="allsum"'), "<algo coll='allsum'> is not a collective synccl knows", id="unknown-collective"),
        pytest.param(mutate('inplace="0"', 'inplace="yes"'), "<algo>: attribute 'inplace' = 'yes' must be 0 or 1", id="bad-flag"),
        pytest.param(mutate('cnt="1"', 'cnt="0"'), "attribute 'cnt' = '0' is outside 1..inf", id="zero-count"),
        pytest.param(BASE[: len(BASE) // 2], "not well-formed XML", id="truncated"),
        pytest.param("<msccl><nothing/></msccl>", "no <algo> element (found <msccl>)", id="no-algo"),
        pytest.param(BILLION_LAUGHS, "refused: DTDForbidden (DTDs and entities are not allowed)", id="billion-laughs"),
        pytest.param(EXTERNAL_ENTITY, "refused: DTDForbidden (DTDs and entities are not allowed)", id="external-entity"),
        pytest.param(nest(20), "elements nest deeper than 8 levels (at <x>)", id="too-deep"),
    ],
)
def test_malformed_xml_gets_a_one_line_error_naming_the_culprit(text, fragment):
    with pytest.raises(XmlError) as info:
        from_msccl_xml(text, source="bad.xml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("bad.xml: ") and fragment in message, message


def test_entities_are_never_expanded():
    # Refused at the DOCTYPE, before any expansion: fast, and the file's text never shows up.
    with pytest.raises(XmlError) as info:
        from_msccl_xml(EXTERNAL_ENTITY)
    assert "root:" not in str(info.value)


def test_nesting_within_the_limit_is_fine():
    assert from_msccl_xml(nest(3)).spec == RING.spec


def test_msccl_tools_2_3_style_without_outofplace_and_byte_range():
    old_style = re.sub(r' (outofplace|minBytes|maxBytes)="[^"]*"', "", BASE)
    assert "outofplace" not in old_style and "minBytes" not in old_style
    prog = from_msccl_xml(old_style)
    assert prog.spec == RING.spec and prog.min_bytes == 0 and prog.max_bytes is None


def test_in_place_from_the_inplace_flag_alone():
    ring = library.build("ring", "all_reduce", 3, inplace=True)
    text = re.sub(r' (outofplace|minBytes|maxBytes)="[^"]*"', "", to_msccl_xml(ring))
    assert from_msccl_xml(text).spec == ring.spec


def test_sccl_spelling_reduce_scatter():
    rs = library.build("ring", "reduce_scatter", 3)
    text = mutate('coll="reducescatter"', 'coll="reduce_scatter"', to_msccl_xml(rs))
    assert from_msccl_xml(text).spec == rs.spec


def test_unknown_attributes_and_elements_are_ignored():
    # TE-CCL and RCCL add attributes and elements that MSCCL's executor does not read.
    text = mutate("<algo ", '<?xml version="1.0" encoding="utf-8"?>\n<algo redop="sum" te_ccl_epoch="3" ')
    text = mutate('<tb id="0"', '<tb id="0" rccl_unroll="2" ')
    text = mutate("<step ", '<step time="1.5" ')
    text = mutate("</gpu>", '<meta key="x"><note/></meta></gpu>', text)
    text = mutate("</algo>", "<schedule epochs='3'/></algo>", text)
    prog = from_msccl_xml(text)
    assert prog.spec == RING.spec and prog.num_instructions() == RING.num_instructions()


def test_algo_inside_a_wrapper_element():
    assert from_msccl_xml(f"<msccl>{BASE}</msccl>").spec == RING.spec


def test_custom_collective_is_inferred_or_named():
    custom = mutate('coll="allgather"', 'coll="custom"')
    assert from_msccl_xml(custom).spec == RING.spec
    assert from_msccl_xml(custom, collective="all_gather").spec == RING.spec
