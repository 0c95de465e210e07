"""The ledger stores only redacted payloads: the scenario's PII never reaches the e-mail tool or the
evidence in clear, blocked and allowed values are redacted too, and the hook has a safe fallback."""

from __future__ import annotations

from typing import Any

import pytest

from fiveplane import Governor, MediationPoint, Verdict
from fiveplane._demo import DEMO_NOTE, run_scenario

from .conftest import DATA_PACK, Ledger, act, build_governor

pytestmark = pytest.mark.requires_model

CLEAR = ("Jane Roe", "jane.roe@globex.example", "+1 415 555 0134", "415 555 0134")


def test_the_reference_scenario_keeps_pii_out_of_the_email_tool_and_the_ledger() -> None:
    ledger = Ledger()
    gov, _ = build_governor(DATA_PACK, ledger=ledger)
    sent: list[dict[str, Any]] = []
    import fiveplane._demo as demo

    real = demo.send_email
    demo.send_email = lambda to, subject, body: (
        sent.append({"to": to, "subject": subject, "body": body}),
        real(to, subject, body),
    )[1]
    try:
        steps = run_scenario(gov)
    finally:
        demo.send_email = real
    notes = next(s for s in steps if s.action.point is MediationPoint.TOOL_RESULT and s.action.tool == "crm.get_account_notes")
    assert notes.decision.verdict is Verdict.MODIFY
    for clear in CLEAR:
        assert clear not in str(notes.decision.modified_content)
        assert clear not in ledger.text(), clear
        assert all(clear not in str(m) for m in sent)
    blocked = next(s for s in steps if s.action.tool == "email.send" and "evil" in str(s.action.arguments))
    assert blocked.decision.verdict is Verdict.BLOCK
    assert [m["to"] for m in sent] == ["bob@acme.example"]
    assert DEMO_NOTE not in ledger.text()


def test_blocked_and_allowed_values_are_redacted_in_the_evidence(governed: tuple[Governor, Any, Ledger]) -> None:
    gov, _, ledger = governed
    body = "Customer SSN 536-90-4399, call +1 415 555 0134, mail jane.roe@globex.example"
    d = gov.decide(act("tool_call", "email.send", arguments={"to": "bob@acme.example", "subject": "x", "body": body}))
    assert d.verdict is Verdict.BLOCK
    stored = ledger.actions[-1]["arguments"]
    assert stored["to"] == "bob@acme.example"  # evidence_keep: the recipient stays readable
    for clear in ("536-90-4399", "415 555 0134", "jane.roe@globex.example"):
        assert clear not in stored["body"]
    # a detection that is only reported (builtin: PERSON allow) is still redacted in the evidence
    gov.decide(act("input", content="I am Jane Roe, please help."))
    assert "Jane Roe" not in str(ledger.actions[-1]["content"])


def test_evidence_of_a_cheap_stage_block_is_completed_with_ner(governed: tuple[Governor, Any, Ledger]) -> None:
    gov, _, ledger = governed
    d = gov.decide(act("final_output", content="Jane Roe's key is AKIAIOSFODNN7EXAMPLE"))
    assert d.verdict is Verdict.BLOCK
    content = str(ledger.actions[-1]["content"])
    assert "AKIA" not in content and "Jane Roe" not in content


def test_the_hook_rescans_an_action_it_did_not_see(governed: tuple[Governor, Any, Ledger]) -> None:
    _, plane, _ = governed
    stored = plane.redact_evidence(
        act("tool_result", "crm.get_account_notes", content="Please call Jane Roe tomorrow, jane.roe@globex.example.")
    )
    assert "Jane Roe" not in str(stored.content) and "jane.roe@" not in str(stored.content)


def test_results_are_stored_as_digests_by_the_ledger(governed: tuple[Governor, Any, Ledger]) -> None:
    gov, _, ledger = governed
    notes = gov.govern(lambda account_id: DEMO_NOTE, tool="crm.get_account_notes")
    with gov.run(
        [{"kind": "user", "id": "rep-1", "roles": ["sales-rep"]}, {"kind": "agent", "id": "sales-assistant"}],
        session_id="dig",
        purpose="sales-support",
    ):
        seen = notes(account_id="ACC-1")
    assert "Jane Roe" not in seen  # the model gets pseudonyms
    assert any(o["result_digest"] and o["result_digest"].startswith("sha256:") for o in ledger.outcomes)
    assert "Jane Roe" not in ledger.text()


def test_the_real_ledger_files_hold_no_pii(tmp_path: Any) -> None:
    """Grep the raw SQLite files (main, WAL, shared memory) after the scenario ran with the data plane."""
    ledger_mod = pytest.importorskip("fiveplane._ledger")
    db = tmp_path / "evidence.db"
    led = ledger_mod.open_ledger(f"sqlite:///{db}", origin="data-plane.test/log")
    gov, _ = build_governor(DATA_PACK, ledger=led)
    run_scenario(gov)
    gov.decide(
        act(
            "tool_call",
            "email.send",
            session="led",
            arguments={"to": "bob@acme.example", "subject": "x", "body": "SSN 536-90-4399"},
        )
    )
    led.flush()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("evidence.db"))
    for clear in (*CLEAR, "536-90-4399"):
        assert clear.encode() not in raw, clear
