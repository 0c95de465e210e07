"""``DataPlane.redact_value`` / ``redact_text`` (and their async twins): what is stored or shown but
is not an action — the declared intent, an outcome's error, an approval row — redacted with the
pack's engine like the evidence; never raising. And JSON strings scanned field by field."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from fiveplane import MediationPoint, Verdict

from .conftest import DATA_PACK, act, evaluate, make_plane

pytestmark = pytest.mark.requires_model

INTENT = "Send the renewal quote to jane.roe@globex.example; the card is 4111 1111 1111 1111, token AKIAIOSFODNN7EXAMPLE"


@pytest.fixture(scope="module")
def plane() -> Any:
    return make_plane()


def test_intent_text_keeps_nothing_detected(plane: Any) -> None:
    out = plane.redact_text(INTENT)
    assert out == "Send the renewal quote to <EMAIL_ADDRESS>; the card is <CREDIT_CARD>, token <API_KEY>"


def test_allowed_and_blocked_entities_are_redacted_too(plane: Any) -> None:
    # at tool_call the built-in rules block secrets and only report e-mail addresses: recorded, both are redacted
    out = plane.redact_value(
        {"to": "jane.roe@globex.example", "note": "key AKIAIOSFODNN7EXAMPLE"}, point=MediationPoint.TOOL_CALL
    )
    assert out == {"to": "<EMAIL_ADDRESS>", "note": "key <API_KEY>"}


def test_outcome_error_with_the_pack_rules(plane: Any, data_policy: Any) -> None:
    error = "ValueError: no account for Jane Roe <jane.roe@globex.example> (phone +1 415 555 0134)"
    out = plane.redact_text(error, policy=data_policy, point=MediationPoint.TOOL_RESULT, tool="crm.get_account_notes")
    assert "jane.roe@globex.example" not in out and "415 555 0134" not in out and "Jane Roe" not in out
    assert out.startswith("ValueError: no account for ")


def test_pseudonyms_follow_the_session(plane: Any, data_policy: Any) -> None:
    kw: dict[str, Any] = {"policy": data_policy, "point": MediationPoint.TOOL_RESULT, "tool": "crm.get_account_notes"}
    one = plane.redact_text("Jane Roe called", session_id="s1", **kw)
    two = plane.redact_text("Jane Roe called", session_id="s1", **kw)
    other = plane.redact_text("Jane Roe called", session_id="s2", **kw)
    assert one == two != other and re.match(r"<PERSON#[A-Za-z0-9_-]+> called", one)


def test_json_values_keep_their_shape(plane: Any) -> None:
    row = {
        "id": 7,
        "approver": "mgr-1",
        "arguments": {"to": ["jane.roe@globex.example"], "amount": 1200.5, "ok": True, "none": None},
        "card": b"4111 1111 1111 1111",
    }
    out = plane.redact_value(row)
    assert out == {
        "id": 7,
        "approver": "mgr-1",
        "arguments": {"to": ["<EMAIL_ADDRESS>"], "amount": 1200.5, "ok": True, "none": None},
        "card": b"<CREDIT_CARD>",
    }


def test_what_cannot_be_scanned_never_comes_back_in_clear(plane: Any) -> None:
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    out = plane.redact_value({"blob": b"\xff\xfe\x00binary", "obj": object(), "deep": deep})
    assert out["blob"].startswith("[binary data removed") and "cannot be scanned" in out["obj"]
    assert "deeper than" in json.dumps(out["deep"])


def test_a_scan_failure_gives_a_digest(plane: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from fiveplane._pii import _scan

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("presidio exploded")

    monkeypatch.setattr(_scan, "redact_value", boom)
    text = plane.redact_text("jane.roe@globex.example")
    assert re.fullmatch(r"\[unscanned sha256:[0-9a-f]{64}\]", text)
    value = plane.redact_value({"to": "jane.roe@globex.example"})
    assert set(value) == {"_unscanned"} and "jane" not in json.dumps(value)


async def test_async_twins(plane: Any) -> None:
    loop_thread = asyncio.get_running_loop()
    assert loop_thread is not None
    text, value = await asyncio.gather(plane.aredact_text(INTENT), plane.aredact_value({"to": "jane.roe@globex.example"}))
    assert text == plane.redact_text(INTENT) and value == {"to": "<EMAIL_ADDRESS>"}


# ---- JSON strings, field by field ----------------------------------------------------------------


def _rows() -> list[dict[str, Any]]:
    return [
        {"id": "ACC-10442", "name": "Dana Whitfield", "email": "dana.whitfield@globex.example", "status": "open"},
        {"id": "ACC-10443", "name": "Jane Roe", "email": "jane.roe@globex.example", "status": "won"},
    ]


def test_a_json_string_result_is_scanned_per_field(sales_policy: Any) -> None:
    p = make_plane(
        {
            "rules": [
                {
                    "id": "crm",
                    "match": {"points": ["tool_result"], "connectors": ["crm"]},
                    "entities": {"PERSON": "redact", "EMAIL_ADDRESS": "redact"},
                    "evidence_keep": ["status"],
                }
            ]
        }
    )
    text = json.dumps(_rows())
    r = evaluate(p, act("tool_result", "crm.search_accounts", connector="crm", content=text), sales_policy)
    assert r.content_modified and isinstance(r.modified_content, str)
    rows = json.loads(r.modified_content)
    assert [row["name"] for row in rows] == ["<PERSON>", "<PERSON>"]
    assert [row["email"] for row in rows] == ["<EMAIL_ADDRESS>", "<EMAIL_ADDRESS>"]
    assert [row["id"] for row in rows] == ["ACC-10442", "ACC-10443"] and rows[1]["status"] == "won"
    message = next(f.message for f in r.findings if f.verdict is Verdict.MODIFY)
    assert "content" in message and "Dana" not in message


def test_ner_skip_fields_apply_inside_json_strings(sales_policy: Any) -> None:
    p = make_plane(
        {
            "rules": [
                {
                    "id": "crm",
                    "match": {"points": ["tool_result"]},
                    "entities": {"PERSON": "redact"},
                    "ner_skip_fields": ["label"],
                }
            ]
        }
    )
    text = json.dumps({"label": "Dana Whitfield", "owner": "Dana Whitfield"})
    r = evaluate(p, act("tool_result", "crm.search_accounts", connector="crm", content=text), sales_policy)
    out = json.loads(r.modified_content)
    assert out == {"label": "Dana Whitfield", "owner": "<PERSON>"}


def test_an_unchanged_json_string_is_kept_byte_for_byte(plane: Any, sales_policy: Any) -> None:
    text = '{ "status" : "open",\n  "count": 3 }'
    r = evaluate(plane, act("tool_result", "crm.search_accounts", connector="crm", content=text), sales_policy)
    assert not r.content_modified
    assert plane.redact_value(text) == text


def test_a_rewritten_json_string_keeps_its_layout(plane: Any) -> None:
    compact = json.dumps({"card": "4111 1111 1111 1111", "n": 1}, separators=(",", ":"))
    assert plane.redact_value(compact) == '{"card":"<CREDIT_CARD>","n":1}'
    indented = json.dumps({"card": "4111 1111 1111 1111"}, indent=2)
    assert plane.redact_value(indented) == json.dumps({"card": "<CREDIT_CARD>"}, indent=2)


def test_strings_that_are_not_json_are_text(plane: Any) -> None:
    for text in ("[card 4111 1111 1111 1111]", "{not json: 4111 1111 1111 1111}", '{"a": NaN, "c": "4111 1111 1111 1111"}'):
        out = plane.redact_value(text)
        assert "4111" not in out and "<CREDIT_CARD>" in out


def test_json_inside_json_and_the_data_pack(data_policy: Any) -> None:
    from .conftest import build_governor

    gov, _ = build_governor(DATA_PACK)
    inner = json.dumps({"contact": {"email": "jane.roe@globex.example", "card": "4111 1111 1111 1111"}})
    outer = json.dumps({"result": inner, "ok": True})
    d = gov.decide(act("tool_result", "crm.get_account_notes", connector="crm", content=outer))
    assert d.verdict.proceeds
    assert "4111 1111 1111 1111" not in json.dumps(d.modified_content)
    decoded = json.loads(json.loads(d.modified_content)["result"])
    assert decoded["contact"]["card"] == "<CREDIT_CARD>"
