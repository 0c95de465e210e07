"""OCSF 1.8.0 events validate against the official schema, offline (PyPI ``ocsf-json-schema``)."""

from __future__ import annotations

import functools
import json
from collections import Counter
from typing import Any

import jsonschema
import pytest
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

from fiveplane._export import OCSF_VERSION, OcsfFormat
from fiveplane._export._format import FormatContext
from fiveplane._export._ocsf import ocsf_profiles
from fiveplane._export._read import ActionIndex, open_for_export, read_range
from fiveplane._ledger import Ledger

from .conftest import fill

_CLASS_NAMES = {6003: "api_activity", 0: "base_event"}


@functools.cache
def _validator(class_uid: int) -> jsonschema.Draft202012Validator:
    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(OCSF_VERSION)).get_class_schema(
        _CLASS_NAMES[class_uid], ocsf_profiles(class_uid)
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _validate(event: dict[str, Any]) -> None:
    errors = sorted(_validator(event["class_uid"]).iter_errors(event), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:10])


def _events(ledger: Ledger, fmt: OcsfFormat | None = None) -> list[Any]:
    fmt = fmt or OcsfFormat()
    ctx = FormatContext(ledger.origin, ActionIndex(ledger))
    out = []
    for rec in read_range(ledger, 0, 100_000):
        ctx.index.observe(rec)
        out += [(rec, ev) for ev in fmt.format(rec, ctx)]
    return out


def test_every_event_kind_of_the_sample_validates(sample_url: str) -> None:
    ledger = open_for_export(sample_url)
    try:
        events = _events(ledger)
    finally:
        ledger.close()
    kinds = Counter((rec.kind.split(".")[0], ev.data["class_uid"]) for rec, ev in events)
    # decisions, outcomes and approvals are API Activity; intents and enforcement fold into decisions
    assert kinds[("decision", 6003)] == 24
    assert kinds[("outcome", 6003)] == 12
    assert kinds[("approval", 6003)] == 6
    assert not any(rec.kind in ("intent", "enforcement") for rec, _ in events)
    for _, ev in events:
        _validate(ev.data)
        assert ev.data["metadata"]["version"] == "1.8.0"
        assert ev.data["type_uid"] == ev.data["class_uid"] * 100 + ev.data["activity_id"]


def test_decision_mapping(sample_url: str) -> None:
    ledger = open_for_export(sample_url)
    try:
        events = {(rec.seq): ev.data for rec, ev in _events(ledger)}
        recs = {r.seq: r for r in read_range(ledger, 0, 1000)}
    finally:
        ledger.close()
    by = lambda pred: [e for s, e in events.items() if recs[s].kind == "decision" and pred(recs[s].meta)]  # noqa: E731
    block = by(lambda m: m.get("verdict") == "block" and m.get("session_id", "") == "" and m.get("tool") == "email.send")[0]
    assert (block["action_id"], block["disposition_id"], block["is_alert"]) == (2, 2, True)
    assert block["api"]["operation"] == "email.send" and block["api"]["service"]["name"] == "email"
    assert block["actor"]["user"]["uid"] == "rep-1" and block["actor"]["app_name"] == "sales-assistant"
    assert {a["policy"]["uid"] for a in block["actor"]["authorizations"]} >= {"email.external-blocked", "flow.email-recipient"}
    assert block["policy"]["uid"].startswith("sha256:") and block["policy"]["name"] == "sales-support"
    assert block["message_context"]["ai_role_id"] == 3  # Tool
    assert "MANAGE 2.4" in block["unmapped"]["fiveplane"]["nist_ai_rmf"]["categories"]
    approval = by(lambda m: m.get("verdict") == "require_approval")[0]
    assert (approval["action_id"], approval["disposition_id"], approval["disposition"]) == (2, 14, "Delayed")
    assert approval["activity_id"] == 3  # Update: a modify action
    modify = by(lambda m: m.get("verdict") == "modify")[0]
    assert (modify["action_id"], modify["disposition_id"]) == (4, 11)
    shadow = by(lambda m: m.get("mode") == "shadow")[0]
    assert (shadow["action_id"], shadow["disposition_id"], shadow["is_alert"]) == (3, 15, False)
    allow = by(lambda m: m.get("tool") == "crm.search_accounts" and m.get("point") == "tool_call")[0]
    assert (allow["action_id"], allow["disposition_id"], allow["activity_id"]) == (1, 1, 2)
    assert allow["api"]["token"]["uid"]  # the capability token's id (never the token)
    assert allow["trace"]["uid"] and len(allow["trace"]["uid"]) == 32


def test_approval_and_outcome_events(sample_url: str) -> None:
    ledger = open_for_export(sample_url)
    try:
        events = [(r, e.data) for r, e in _events(ledger)]
    finally:
        ledger.close()
    approved = next(d for r, d in events if r.kind == "approval.approved")
    assert (approved["action_id"], approved["disposition_id"]) == (1, 8)
    assert approved["actor"]["user"]["uid"] == "manager-1"
    requested = next(d for r, d in events if r.kind == "approval.requested")
    assert requested["disposition_id"] == 14 and requested["actor"]["user"]["uid"] == "rep-1"
    success = next(d for r, d in events if r.kind == "outcome" and r.meta.get("status") == "success")
    assert success["status_id"] == 1 and success["api"]["response"]["data"]["result_digest"].startswith("sha256:")
    blocked = next(d for r, d in events if r.kind == "outcome" and r.meta.get("status") == "blocked")
    assert blocked["status_id"] == 2


def test_custom_kinds_and_erasure_are_base_events_and_erased_payloads_export_as_erased(synthetic: Any) -> None:
    url, ledger = synthetic
    fill(ledger, 3)
    ledger.record_event("identity.grant_changed", {"grant": "g-1"}, {"by": "admin"}, durable=True)
    ledger.erase([1], reason="DSR-1", requested_by="dpo")
    reader = open_for_export(url)
    try:
        events = _events(reader)
    finally:
        reader.close()
    assert [ev.data["class_uid"] for _, ev in events] == [0] * 5
    for _, ev in events:
        _validate(ev.data)
    erased = next(ev.data for rec, ev in events if rec.seq == 1)
    assert erased["unmapped"]["fiveplane"]["payload_status"] == "erased"
    assert erased["unmapped"]["fiveplane"]["payload"] is None
    assert "event 1" not in json.dumps([ev.data for _, ev in events])
    erasure = next(ev.data for rec, ev in events if rec.kind == "erasure")
    assert erasure["unmapped"]["fiveplane"]["meta"]["erased"] == [1]
    assert "GOVERN 1.1" in erasure["unmapped"]["fiveplane"]["nist_ai_rmf"]["categories"]


def test_erased_decision_still_validates(sample_url: str) -> None:
    ledger = open_for_export(sample_url)
    try:
        target = next(r for r in read_range(ledger, 0, 1000) if r.kind == "decision" and r.meta.get("verdict") == "block")
        assert target.action_id
        ledger.erase_action(target.action_id, reason="DSR-2")
        events = {rec.seq: ev.data for rec, ev in _events(ledger)}
    finally:
        ledger.close()
    ev = events[target.seq]
    _validate(ev)
    assert ev["unmapped"]["fiveplane"]["payload_status"] == "erased"
    assert "arguments" not in json.dumps(ev["api"])  # the arguments were in the erased intent payload
    assert (ev["action_id"], ev["disposition_id"]) == (2, 2)  # verdicts live in the envelope


@pytest.mark.parametrize("include", [True, False])
def test_arguments_are_the_stored_ones_and_optional(sample_url: str, include: bool) -> None:
    ledger = open_for_export(sample_url)
    try:
        events = _events(ledger, OcsfFormat(include_content=include))
    finally:
        ledger.close()
    call = next(ev.data for rec, ev in events if rec.kind == "decision" and rec.meta.get("tool") == "contracts.update_status")
    data = call["api"]["request"].get("data", {})
    assert ("arguments" in data) is include
    if include:
        assert data["arguments"] == {"contract_id": "C-7", "status": "signed"}
