"""Record envelopes: RFC 8785 canonical form, what goes in the (never erasable) metadata, payload digests."""

from __future__ import annotations

import hashlib
import json

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from fiveplane import Action, Decision, Finding, Obligation, ObligationKind, Outcome, OutcomeStatus, Severity, Verdict
from fiveplane._actions import canonical_json as canonical
from fiveplane._ledger._merkle import hash_leaf
from fiveplane._ledger._records import action_records, decode_envelope, make_record, outcome_record, payload_digest

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_canonical_is_exactly_rfc8785(value: object) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(rfc8785.CanonicalizationError):
            canonical(value)
        return
    assert canonical(value) == expected


def test_canonical_edge_cases() -> None:
    cases = [
        {"\U0001f600": 1, "\ue000": 2},
        {"a": 1.0, "b": 1e21, "c": -0.0},
        {"s": '\u2028\x1f"\\'},
        [2**53 - 1, -(2**53) + 1],
        {"k": (1, "x")},
    ]
    for v in cases:
        assert canonical(v) == rfc8785.dumps(v)
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical({"big": 2**53})


def test_envelope_layout_and_leaf() -> None:
    rec = make_record("acme.example/log", "test.event", {"n": 1}, {"secret": "x"}, action_id="a1", session_id="s1")
    assert rec.envelope[0] == 1 and rec.leaf_hash == hash_leaf(rec.envelope)
    env = decode_envelope(rec.envelope)
    assert rfc8785.dumps(env) == rec.envelope[1:]
    assert set(env) == {"schema", "origin", "id", "kind", "time", "meta", "action_id", "session_id", "payload"}
    assert env["payload"] == {"digest": payload_digest(rec.salt or b"", rec.body or b""), "size": len(rec.body or b"")}
    assert env["payload"]["digest"] == "sha256:" + hashlib.sha256((rec.salt or b"") + (rec.body or b"")).hexdigest()
    assert b"secret" not in rec.envelope and json.loads(rec.body or b"") == {"secret": "x"}
    again = make_record("acme.example/log", "test.event", {"n": 1}, {"secret": "x"})
    assert again.salt != rec.salt  # salted: equal payloads give unrelated digests
    with pytest.raises(ValueError, match="version"):
        decode_envelope(b"\x02{}")


def test_metadata_carries_identifiers_not_content() -> None:
    action = Action.model_validate(
        {
            "point": "tool_call",
            "tool": "crm.update",
            "connector": "crm",
            "action_class": "modify",
            "arguments": {"email": "jane@x.example"},
            "principal": [
                {"kind": "user", "id": "jane-the-user", "claims": {"email": "jane@x.example"}},
                {"kind": "agent", "id": "bot"},
            ],
            "session_id": "s",
            "intent": "write to jane@x.example",
            "purpose": "support",
        }
    )
    decision = Decision(
        action_id=action.action_id,
        verdict=Verdict.MODIFY,
        policy_verdict=Verdict.MODIFY,
        rule_ids=("r1",),
        findings=(Finding(plane="data", code="pii", message="email found", severity=Severity.HIGH),),
        obligations=(
            Obligation(kind=ObligationKind.REDACT, plane="data", params={"fields": ["email"]}),
            Obligation(kind=ObligationKind.ATTENUATE, plane="identity", params={"token_id": "tok-1", "scope": ["crm:write"]}),
        ),
        explanation="Modified: email redacted.",
        policy_hash="sha256:abc",
        policy_version="p@1",
        modified_arguments={"email": "[REDACTED]"},
    )
    intent, dec, enforcement = action_records("o.example/log", action, decision, writer="host:1:2")
    assert [r.kind for r in (intent, dec, enforcement)] == ["intent", "decision", "enforcement"]
    for rec in (intent, dec, enforcement):
        assert b"jane" not in rec.envelope and b"REDACTED" not in rec.envelope
    meta = decode_envelope(dec.envelope)["meta"]
    assert (
        meta["verdict"] == "modify"
        and meta["rule_ids"] == ["r1"]
        and meta["planes"] == {"data": "high"}
        and meta["agent"] == "bot"
    )
    enf = json.loads(enforcement.body or b"")
    assert enf["token"] == {"id": "tok-1", "plane": "identity", "scope": ["crm:write"]} and enf["arguments_modified"] is True
    assert decode_envelope(enforcement.envelope)["meta"]["token_id"] == "tok-1"
    assert "modified_arguments" not in json.loads(dec.body or b"")["decision"]  # the rewritten values are not stored twice
    # the identity plane's shape: {"capability": scope evidence} (the bearer string is never in it)
    cap = {
        "token_id": "tok-9",
        "tool": "crm.update",
        "operation": "modify",
        "expires_at": "2025-01-01T00:00:00+00:00",
        "revocation_ids": ["r1"],
    }
    minted = decision.model_copy(
        update={"obligations": (Obligation(kind=ObligationKind.ATTENUATE, plane="identity", params={"capability": cap}),)}
    )
    enf2 = action_records("o.example/log", action, minted)[2]
    assert decode_envelope(enf2.envelope)["meta"]["token_id"] == "tok-9"
    assert json.loads(enf2.body or b"")["token"]["scope"]["operation"] == "modify"
    out = outcome_record(
        "o.example/log",
        action,
        Outcome(action_id=action.action_id, status=OutcomeStatus.SUCCESS, result_digest="sha256:not-in-the-envelope"),
    )
    assert decode_envelope(out.envelope)["meta"]["status"] == "success"
    assert b"not-in-the-envelope" not in out.envelope  # the result digest lives in the payload


def test_result_content_is_digested() -> None:
    result = Action.model_validate(
        {
            "point": "tool_result",
            "tool": "crm.lookup",
            "content": {"ssn": "078-05-1120"},
            "principal": [{"kind": "agent", "id": "bot"}],
            "session_id": "s",
        }
    )
    decision = Decision(
        action_id=result.action_id,
        verdict=Verdict.ALLOW,
        policy_verdict=Verdict.ALLOW,
        explanation="ok",
        policy_hash="h",
        policy_version="v",
    )
    intent = action_records("o.example/log", result, decision)[0]
    assert b"078-05-1120" not in (intent.body or b"")
    assert json.loads(intent.body or b"")["action"]["content_digest"].startswith("sha256:")
    kept = action_records("o.example/log", result, decision, store_results=True)[0]
    assert b"078-05-1120" in (kept.body or b"")


@settings(max_examples=2000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False) | st.floats(min_value=1e-4, max_value=1e16))
def test_floats_take_the_fast_encoder_only_where_it_is_exact(value: float) -> None:
    from fiveplane._actions import plain_json

    assert canonical({"x": value, "l": [value]}) == rfc8785.dumps({"x": value, "l": [value]})
    assert plain_json(value) == (1e-4 <= abs(value) < 1e16 and not value.is_integer())
