"""Approvals: bound to the action digest, separation of duties, role, expiry, single use, denial for good."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fiveplane import (
    Action,
    ApprovalError,
    ApprovalRequired,
    ApprovalStatus,
    ApprovalStore,
    Governor,
    ObligationKind,
    Verdict,
    approver,
)
from fiveplane._cli import app
from tests.conftest import SALES_PACK

REP = [{"kind": "user", "id": "rep-1", "roles": ["sales-rep"]}, {"kind": "agent", "id": "sales-assistant"}]
MANAGER = approver("mgr-1", ["sales-manager"])


def update(status: str = "signed", session: str = "s") -> Action:
    return Action.model_validate(
        {
            "point": "tool_call",
            "tool": "contracts.update_status",
            "arguments": {"contract_id": "C-7", "status": status},
            "principal": REP,
            "session_id": session,
            "purpose": "sales-support",
        }
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fp.db'}"


@pytest.fixture
def gov(db: str) -> Governor:
    return Governor(SALES_PACK, approvals=ApprovalStore(db))


def pending_id(decision: Any) -> str:
    ob = decision.obligations_of(ObligationKind.APPROVAL)[0]
    return str(ob.params["approval_id"])


def test_request_approve_run_once(gov: Governor) -> None:
    assert gov.approvals is not None
    d = gov.decide(update())
    assert d.verdict is Verdict.REQUIRE_APPROVAL
    rid = pending_id(d)
    assert f"(request {rid})" in d.explanation
    # asking again while pending reuses the same request
    assert pending_id(gov.decide(update())) == rid
    gov.approvals.approve(rid, MANAGER, "ok for Globex")
    d = gov.decide(update())
    assert d.verdict is Verdict.ALLOW and "approval.granted" in d.rule_ids
    assert "approved by mgr-1" in d.explanation
    assert gov.approvals.get(rid).status is ApprovalStatus.CONSUMED
    # single use: the next identical action needs a new approval
    d = gov.decide(update())
    assert d.verdict is Verdict.REQUIRE_APPROVAL and pending_id(d) != rid


def test_an_edit_is_a_new_action(gov: Governor) -> None:
    assert gov.approvals is not None
    rid = pending_id(gov.decide(update("signed")))
    gov.approvals.approve(rid, MANAGER)
    d = gov.decide(update("cancelled"))  # edited arguments: different digest
    assert d.verdict is Verdict.REQUIRE_APPROVAL and pending_id(d) != rid
    assert gov.approvals.get(rid).status is ApprovalStatus.APPROVED  # not consumed by the edit


def test_separation_of_duties_and_role(gov: Governor) -> None:
    assert gov.approvals is not None
    rid = pending_id(gov.decide(update()))
    with pytest.raises(ApprovalError, match="separation of duties"):
        gov.approvals.approve(rid, approver("rep-1", ["sales-manager"]))
    with pytest.raises(ApprovalError, match="does not hold the role"):
        gov.approvals.approve(rid, approver("rep-2", ["sales-rep"]))
    assert gov.approvals.get(rid).status is ApprovalStatus.PENDING


def test_denied_action_never_runs_again_in_the_session(gov: Governor) -> None:
    assert gov.approvals is not None
    rid = pending_id(gov.decide(update()))
    gov.approvals.deny(rid, MANAGER, "not this quarter")
    for _ in range(3):  # re-proposal, retry, any route through decide
        d = gov.decide(update())
        assert d.verdict is Verdict.BLOCK and d.rule_ids == ("approval.denied",)
        assert "not this quarter" in d.explanation
    with pytest.raises(ApprovalError, match="not pending"):
        gov.approvals.approve(rid, MANAGER)
    # another session is another run
    assert gov.decide(update(session="other")).verdict is Verdict.REQUIRE_APPROVAL


def test_expiry(db: str) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = ApprovalStore(db, clock=lambda: now[0])
    gov = Governor(SALES_PACK, approvals=store)
    rid = pending_id(gov.decide(update()))
    now[0] += timedelta(hours=2)  # the rule says expires_in: 3600
    with pytest.raises(ApprovalError, match="expired"):
        store.approve(rid, MANAGER)
    assert store.requests(status=ApprovalStatus.PENDING) == []
    # an approval that expires before use does not let the action run
    rid2 = pending_id(gov.decide(update()))
    assert rid2 != rid
    store.approve(rid2, MANAGER)
    now[0] += timedelta(hours=2)
    assert gov.decide(update()).verdict is Verdict.REQUIRE_APPROVAL


def test_approval_from_another_process_store(db: str) -> None:
    gov = Governor(SALES_PACK, approvals=ApprovalStore(db))
    rid = pending_id(gov.decide(update()))
    ApprovalStore(db).approve(rid, MANAGER)  # e.g. the CLI, elsewhere
    assert gov.decide(update()).verdict is Verdict.ALLOW


def test_governed_tool_waits_for_approval_then_runs(gov: Governor) -> None:
    assert gov.approvals is not None
    ran: list[str] = []
    tool = gov.govern(lambda contract_id, status: ran.append(status), tool="contracts.update_status")
    with gov.run(REP, session_id="s", purpose="sales-support"):
        with pytest.raises(ApprovalRequired) as exc:
            tool(contract_id="C-7", status="signed")
        assert ran == []
        gov.approvals.approve(pending_id(exc.value.decision), MANAGER)
        tool(contract_id="C-7", status="signed")
        assert ran == ["signed"]
        with pytest.raises(ApprovalRequired):
            tool(contract_id="C-7", status="signed")
    assert ran == ["signed"]


def test_recorder_sees_every_change(db: str) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    gov = Governor(SALES_PACK, approvals=ApprovalStore(db, record=lambda k, p: events.append((k, p))))
    assert gov.approvals is not None
    rid = pending_id(gov.decide(update()))
    gov.approvals.approve(rid, MANAGER)
    gov.decide(update())
    assert [k for k, _ in events] == ["approval.requested", "approval.approved", "approval.consumed"]


def test_failing_recorder_files_nothing(db: str) -> None:
    def broken(kind: str, payload: dict[str, Any]) -> None:
        raise ConnectionError("ledger down")

    gov = Governor(SALES_PACK, approvals=ApprovalStore(db, record=broken))
    d = gov.decide(update())
    assert d.verdict is Verdict.BLOCK  # the engine fails closed
    assert ApprovalStore(db).requests() == []


def test_cli_list_approve_deny(gov: Governor, db: str) -> None:
    runner = CliRunner()
    rid = pending_id(gov.decide(update()))
    out = runner.invoke(app, ["approvals", "list", "--db", db, "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout.splitlines()[0])["id"] == rid
    out = runner.invoke(app, ["approvals", "approve", rid, "--as", "rep-1", "--role", "sales-manager", "--db", db])
    assert out.exit_code == 1 and "separation of duties" in out.stdout
    out = runner.invoke(
        app, ["approvals", "approve", rid, "--as", "mgr-1", "--role", "sales-manager", "--db", db, "--reason", "fine"]
    )
    assert out.exit_code == 0, out.stdout
    assert gov.decide(update()).verdict is Verdict.ALLOW
    rid2 = pending_id(gov.decide(update()))
    assert runner.invoke(app, ["approvals", "deny", rid2, "--as", "mgr-1", "--role", "sales-manager", "--db", db]).exit_code == 0
    assert gov.decide(update()).verdict is Verdict.BLOCK
    table = runner.invoke(app, ["approvals", "list", "--db", db])
    assert table.exit_code == 0 and "denied" in table.stdout


def test_approval_events_keep_people_out_of_the_envelope(tmp_path: Path) -> None:
    """Through the ledger's recorder, who asked and who approved land in the erasable payload only."""
    from fiveplane import open_ledger

    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", origin="test.fiveplane.local/approvals")
    try:
        gov = Governor(SALES_PACK, approvals=ApprovalStore(f"sqlite:///{tmp_path / 'state.db'}", record=ledger.record))
        assert gov.approvals is not None
        d = gov.decide(update())
        gov.approvals.approve(pending_id(d), MANAGER, "fine")
        ledger.flush()
        events = [e for _, e in ledger.iter_records() if e["kind"].startswith("approval.")]
        assert [e["kind"] for e in events] == ["approval.requested", "approval.approved"]
        for e in events:
            text = json.dumps(e)
            assert "rep-1" not in text and "mgr-1" not in text and "fine" not in text
            assert e["meta"]["approval_id"].startswith("apr-")
        story = ledger.records(events[1]["action_id"])
        approved = next(r for r in story if r.kind == "approval.approved")
        assert approved.payload["decided_by"] == "mgr-1" and approved.payload["requester"] == "rep-1"
    finally:
        ledger.close()


def test_cli_approver_verified_from_an_oidc_token(tmp_path: Path, db: str) -> None:
    """`--token` identifies the approver from a signed JWT (the pack's oidc section), not from flags."""
    import time

    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (tmp_path / "idp.pem").write_text(pem)
    pack = tmp_path / "oidc.yaml"
    pack.write_text(
        "name: idp\nunsafe_empty: true\nplanes:\n  identity:\n    oidc:\n      issuer: https://idp.acme.example/\n"
        "      audience: fiveplane\n      key_file: idp.pem\n      role_map: {managers: sales-manager}\n"
    )

    def token(signer: Any, sub: str, groups: list[str]) -> str:
        now = int(time.time())
        claims = {
            "sub": sub,
            "iss": "https://idp.acme.example/",
            "aud": "fiveplane",
            "iat": now,
            "exp": now + 300,
            "groups": groups,
        }
        return jwt.encode(claims, signer, algorithm="ES256")

    gov = Governor(SALES_PACK, approvals=ApprovalStore(db))
    rid = pending_id(gov.decide(update()))
    runner = CliRunner()
    base = ["approvals", "approve", rid, "--db", db, "--policy", str(pack), "--token"]
    # a token from another issuer key, and a verified user without the role, are refused
    out = runner.invoke(app, [*base, token(other, "mgr-9", ["managers"])])
    assert out.exit_code == 1 and "rejected" in out.stdout
    out = runner.invoke(app, [*base, token(key, "rep-7", ["reps"])])
    assert out.exit_code == 1 and "does not hold the role" in out.stdout
    # flags cannot be mixed with a token
    out = runner.invoke(app, [*base, token(key, "mgr-9", ["managers"]), "--as", "mgr-9", "--role", "sales-manager"])
    assert out.exit_code == 2
    out = runner.invoke(app, [*base, token(key, "mgr-9", ["managers"])])
    assert out.exit_code == 0, out.stdout
    assert ApprovalStore(db).get(rid).decided_by == "mgr-9"
    assert gov.decide(update()).verdict is Verdict.ALLOW
