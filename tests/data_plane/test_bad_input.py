"""Bad input never passes unscanned: non-UTF-8 bytes, invalid text, huge payloads, deep nesting,
cycles, binary attachments, base64 blobs, unknown types, too many values."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fiveplane import Verdict
from fiveplane._pii._walk import rebuild, walk

from .conftest import act, evaluate, make_plane

pytestmark = pytest.mark.requires_model

RULES = {"rules": [{"id": "r", "entities": {"EMAIL_ADDRESS": "redact", "CREDIT_CARD": "redact", "PERSON": "redact"}}]}


def plane(**limits: Any) -> Any:
    return make_plane({**RULES, "limits": limits} if limits else RULES)


def verdicts(result: Any) -> set[Verdict]:
    return {f.verdict for f in result.findings if f.verdict is not None}


def codes(result: Any) -> set[str]:
    return {f.code for f in result.findings}


def test_utf8_bytes_are_scanned_and_stay_bytes(sales_policy: Any) -> None:
    r = evaluate(plane(), act("final_output", content={"blob": b"mail jane.roe@globex.example"}), sales_policy)
    assert r.modified_content == {"blob": b"mail <EMAIL_ADDRESS>"}


@pytest.mark.parametrize(("mode", "expect"), [("block", Verdict.BLOCK), ("strip", Verdict.MODIFY)])
def test_non_utf8_bytes_are_binary(mode: str, expect: Verdict, sales_policy: Any) -> None:
    r = evaluate(plane(binary=mode), act("final_output", content={"file": b"\xff\xfe\x00\x01binary\x80"}), sales_policy)
    assert expect in verdicts(r)
    if mode == "strip":
        assert r.modified_content == {"file": "[binary data removed (11 bytes)]"}
    else:
        assert "binary" in codes(r)


def test_lone_surrogates_are_normalized_and_scanned(sales_policy: Any) -> None:
    bad = "write to jane.roe@globex.example \udcff now"
    r = evaluate(plane(), act("final_output", content=bad), sales_policy)
    assert r.modified_content == "write to <EMAIL_ADDRESS> \ufffd now"
    assert any(f.code == "rewritten" and "U+FFFD" in f.message for f in r.findings)


def test_huge_text_is_blocked_by_default(sales_policy: Any) -> None:
    r = evaluate(plane(max_text_chars=1000), act("final_output", content="x " * 5000), sales_policy)
    assert Verdict.BLOCK in verdicts(r) and "oversize" in codes(r)


def test_huge_text_truncated_is_still_scanned(sales_policy: Any) -> None:
    text = "card 4111 1111 1111 1111 " + "filler " * 500
    r = evaluate(plane(max_text_chars=200, oversize="truncate"), act("final_output", content=text), sales_policy)
    out = r.modified_content
    assert out.startswith("card <CREDIT_CARD> ") and out.endswith("characters]")
    assert len(out) < 300 and "4111" not in out


def test_total_size_cap(sales_policy: Any) -> None:
    r = evaluate(plane(max_total_chars=500), act("final_output", content=["a" * 300, "b" * 300]), sales_policy)
    assert Verdict.BLOCK in verdicts(r)


def nested(depth: int) -> Any:
    value: Any = "jane.roe@globex.example"
    for _ in range(depth):
        value = {"n": value}
    return value


def test_deep_nesting_blocks_without_recursion_errors(sales_policy: Any) -> None:
    with pytest.raises(ValueError, match="nested deeper than 64 levels"):
        act("final_output", content=nested(5000))  # the Action boundary refuses it first
    # a payload that reached the plane anyway (model_copy does not validate) still blocks
    deep = act("final_output", content="x").model_copy(update={"content": nested(5000)})
    r = evaluate(plane(), deep, sales_policy)
    assert Verdict.BLOCK in verdicts(r) and "oversize" in codes(r)


def test_deep_nesting_truncated(sales_policy: Any) -> None:
    r = evaluate(
        plane(max_depth=3, oversize="truncate"),
        act("final_output", content={"a": "jane.roe@globex.example", "b": nested(10)}),
        sales_policy,
    )
    assert r.modified_content["a"] == "<EMAIL_ADDRESS>"
    assert "nested deeper than 3 levels" in str(r.modified_content["b"])


def test_cycles_block(sales_policy: Any) -> None:
    loop: dict[str, Any] = {"x": "y"}
    loop["self"] = loop
    with pytest.raises(ValueError, match="nested deeper than"):
        act("final_output", content=loop)
    r = evaluate(plane(), act("final_output", content="x").model_copy(update={"content": loop}), sales_policy)
    assert Verdict.BLOCK in verdicts(r)


def test_binary_attachment_blocked_and_text_attachment_scanned(sales_policy: Any) -> None:
    pdf = base64.b64encode(b"%PDF-1.7\x00\x01\x02\xff" * 100).decode()
    r = evaluate(plane(), act("final_output", content={"attachment": pdf}), sales_policy)
    assert "binary" in codes(r) and Verdict.BLOCK in verdicts(r)
    txt = base64.b64encode(("Invoice for jane.roe@globex.example. " * 10).encode()).decode()
    r2 = evaluate(plane(), act("final_output", content={"attachment": f"data:text/plain;base64,{txt}"}), sales_policy)
    out = r2.modified_content["attachment"]
    assert out.startswith("data:text/plain;base64,")
    decoded = base64.b64decode(out.split(",", 1)[1]).decode()
    assert "jane.roe" not in decoded and "<EMAIL_ADDRESS>" in decoded


def test_long_hex_is_text_not_binary(sales_policy: Any) -> None:
    r = evaluate(plane(), act("final_output", content={"sha": "ab12" * 100}), sales_policy)
    assert Verdict.BLOCK not in verdicts(r)


def test_unknown_types_cannot_pass(sales_policy: Any) -> None:
    class Opaque:
        pass

    r = evaluate(plane(), act("final_output", content={"x": Opaque()}), sales_policy)
    assert Verdict.BLOCK in verdicts(r) and "unscannable" in codes(r)


def test_too_many_values(sales_policy: Any) -> None:
    r = evaluate(plane(max_leaves=50), act("final_output", content=[str(i) for i in range(100)]), sales_policy)
    assert Verdict.BLOCK in verdicts(r)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(json_values)
def test_walk_then_rebuild_is_identity(value: Any) -> None:
    w = walk(value, max_text_chars=10_000, max_total_chars=100_000, max_depth=32, max_leaves=10_000)
    if not w.issues:
        assert rebuild(w.skeleton, w.leaves, {}, cut=False) == value
