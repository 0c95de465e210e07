"""The Governor: verdicts, deny-overrides, fail-closed paths, modes, governed callables, async parity."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

from fiveplane import (
    Action,
    ActionBlocked,
    ActionClass,
    ApprovalRequired,
    BasePlane,
    Decision,
    Governor,
    MediationPoint,
    Mode,
    ObligationKind,
    Outcome,
    OutcomeStatus,
    PlaneContext,
    PlaneResult,
    PolicyError,
    Verdict,
)
from tests.conftest import SALES_PACK

REP = [{"kind": "user", "id": "rep-1", "roles": ["sales-rep"]}, {"kind": "agent", "id": "sales-assistant"}]
MANAGER = [{"kind": "user", "id": "mgr-1", "roles": ["sales-manager"]}, {"kind": "agent", "id": "sales-assistant"}]


def act(
    tool: str | None,
    args: dict[str, Any] | None = None,
    *,
    point: MediationPoint = MediationPoint.TOOL_CALL,
    chain: list[dict[str, Any]] = REP,
    session: str = "s1",
    **kw: Any,
) -> Action:
    return Action.model_validate(
        {
            "point": point,
            "tool": tool,
            "arguments": args or {},
            "principal": chain,
            "session_id": session,
            "purpose": "sales-support",
            **kw,
        }
    )


@pytest.fixture
def gov() -> Governor:
    return Governor(SALES_PACK)


def test_reference_verdicts(gov: Governor) -> None:
    assert gov.decide(act("crm.search_accounts", {"query": "Globex"})).verdict is Verdict.ALLOW
    d = gov.decide(act("contracts.update_status", {"contract_id": "C-7", "status": "signed"}))
    assert d.verdict is Verdict.REQUIRE_APPROVAL
    approval = d.obligations_of(ObligationKind.APPROVAL)
    assert approval and approval[0].params["role"] == "sales-manager" and approval[0].params["separation_of_duties"] is True
    d = gov.decide(act("email.send", {"to": "x@evil.example", "subject": "s", "body": "b"}))
    assert d.verdict is Verdict.BLOCK and "email.external-blocked" in d.rule_ids
    assert d.explanation.startswith("Blocked email.send (invoke) for rep-1 via sales-assistant")
    assert d.explanation.endswith(".") and d.explanation.count(". ") == 0


def test_decision_json_is_stable(gov: Governor) -> None:
    d = gov.decide(act("crm.search_accounts", {"query": "x"}))
    data = d.to_json()
    assert Decision.model_validate(data) == d
    for key in ("verdict", "rule_ids", "findings", "explanation", "policy_hash", "evaluated_at", "obligations"):
        assert key in data


def test_catalog_is_authoritative_for_class(gov: Governor) -> None:
    # a caller claiming a modify tool is a read gets the catalog's class (and cannot dodge approval)
    d = gov.decide(act("contracts.update_status", {"contract_id": "C", "status": "signed"}, action_class="read", connector="crm"))
    assert d.verdict is Verdict.REQUIRE_APPROVAL
    assert {"class_from_catalog", "connector_from_catalog"} <= {f.code for f in d.findings}


def test_unknown_tool_and_agent_block(gov: Governor) -> None:
    assert "defaults.unknown_tool" in gov.decide(act("db.drop_all")).rule_ids
    rogue = [{"kind": "user", "id": "rep-1", "roles": ["sales-rep"]}, {"kind": "agent", "id": "rogue"}]
    d = gov.decide(act("crm.search_accounts", {"query": "x"}, chain=rogue))
    assert d.verdict is Verdict.BLOCK and "defaults.unknown_agent" in d.rule_ids


def test_tool_call_without_agent_blocks(gov: Governor) -> None:
    d = gov.decide(act("crm.search_accounts", {"query": "x"}, chain=[{"kind": "user", "id": "rep-1", "roles": ["sales-rep"]}]))
    assert d.verdict is Verdict.BLOCK


def test_runtime_cel_error_fails_closed(tmp_path: Path) -> None:
    pack = tmp_path / "p.yaml"
    pack.write_text(
        "name: p\nconnectors: [{name: c}]\ntools: [{name: c.t, connector: c, class: read}]\n"
        "agents: [{name: a, purpose: p}]\nrules:\n"
        "  - id: needs-amount\n    match: {tools: [c.t]}\n    when: 'args.amount > 10'\n    verdict: allow\n"
        "  - id: returns-int\n    match: {tools: [c.t]}\n    when: 'size(args)'\n    verdict: allow\n"
    )
    gov = Governor(pack)
    chain = [{"kind": "agent", "id": "a"}]
    d = gov.decide(act("c.t", {}, chain=chain))
    assert d.verdict is Verdict.BLOCK
    assert {f.code for f in d.findings} >= {"condition_error"}
    assert any("missing field" in e for e in d.errors) and any("not a boolean" in e for e in d.errors)
    d = gov.decide(act("c.t", {"amount": "ten"}, chain=chain))
    assert d.verdict is Verdict.BLOCK and d.errors


class Exploding(BasePlane):
    name = "exploding"

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        raise RuntimeError("detector crashed")


class Rewriter(BasePlane):
    name = "rewriter"

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        res = PlaneResult(plane=self.name)
        if action.point is MediationPoint.TOOL_CALL:
            res.modified_arguments = {k: ("<redacted>" if k == "body" else v) for k, v in action.arguments.items()}
            res.add("redacted", "body redacted", verdict=Verdict.MODIFY)
        return res


class Rewriter2(Rewriter):
    name = "rewriter2"


class Narrower(BasePlane):
    name = "narrower"

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        level: str = "read-only"

    config_model: ClassVar[type[BaseModel] | None] = Config

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        res = PlaneResult(plane=self.name)
        assert isinstance(ctx.config, Narrower.Config)
        res.add("narrowed", f"narrowed to {ctx.config.level}", verdict=Verdict.NARROW)
        return res


def test_plane_error_blocks_even_when_rules_allow() -> None:
    gov = Governor(SALES_PACK, planes=[Exploding()])
    d = gov.decide(act("crm.search_accounts", {"query": "x"}))
    assert d.verdict is Verdict.BLOCK
    assert any("detector crashed" in e for e in d.errors)


async def test_plane_error_blocks_async() -> None:
    gov = Governor(SALES_PACK, planes=[Exploding()])
    d = await gov.adecide(act("crm.search_accounts", {"query": "x"}))
    assert d.verdict is Verdict.BLOCK


def test_modify_rewrites_arguments_and_deny_overrides() -> None:
    gov = Governor(SALES_PACK, planes=[Rewriter()])
    d = gov.decide(act("email.send", {"to": "bob@acme.example", "subject": "s", "body": "secret"}))
    assert d.verdict is Verdict.MODIFY
    assert d.modified_arguments == {"to": "bob@acme.example", "subject": "s", "body": "<redacted>"}
    d = gov.decide(act("email.send", {"to": "x@evil.example", "subject": "s", "body": "secret"}))
    assert d.verdict is Verdict.BLOCK and d.modified_arguments is None


def test_two_planes_rewriting_fails_closed() -> None:
    gov = Governor(SALES_PACK, planes=[Rewriter(), Rewriter2()])
    d = gov.decide(act("email.send", {"to": "bob@acme.example", "subject": "s", "body": "b"}))
    assert d.verdict is Verdict.BLOCK and d.errors


def test_plane_config_validated_from_pack(tmp_path: Path) -> None:
    text = SALES_PACK.read_text().replace("\nplanes:\n", "\nplanes:\n  narrower: {level: none}\n", 1)
    pack = SALES_PACK.parent / "_tmp_narrow.yaml"
    try:
        pack.write_text(text)
        d = Governor(pack, planes=[Narrower()]).decide(act("crm.search_accounts", {"query": "x"}))
        assert d.verdict is Verdict.NARROW and any("none" in f.message for f in d.findings)
        pack.write_text(text.replace("level: none", "levle: none"))
        with pytest.raises(PolicyError) as exc:
            Governor(pack, planes=[Narrower()])
        assert "planes.narrower.levle" in str(exc.value) and "_tmp_narrow.yaml:" in str(exc.value)
        with pytest.raises(PolicyError, match="not installed"):
            Governor(pack)
    finally:
        pack.unlink()


def _mode_pack(tmp_path: Path, mode: str) -> Path:
    p = tmp_path / f"{mode}.yaml"
    p.write_text(
        f"name: m\nmode: {mode}\nconnectors: [{{name: c}}]\ntools: [{{name: c.t, connector: c, class: read}}]\n"
        "agents: [{name: a, purpose: p}]\nrules:\n  - id: deny-all\n    match: {tools: [c.t]}\n    verdict: block\n"
    )
    return p


def test_shadow_mode_records_but_does_not_stop(tmp_path: Path) -> None:
    gov = Governor(_mode_pack(tmp_path, "shadow"))
    d = gov.decide(act("c.t", chain=[{"kind": "agent", "id": "a"}]))
    assert d.verdict is Verdict.ALLOW and d.policy_verdict is Verdict.BLOCK and d.mode is Mode.SHADOW
    assert "though the policy says block" in d.explanation


def test_warn_mode_adds_a_warning(tmp_path: Path) -> None:
    gov = Governor(_mode_pack(tmp_path, "warn"))
    d = gov.decide(act("c.t", chain=[{"kind": "agent", "id": "a"}]))
    assert d.verdict is Verdict.ALLOW and d.mode is Mode.WARN
    assert any(f.code == "warn_mode" for f in d.findings)


def test_shadow_rule_in_enforce_pack_does_not_open_defaults(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(
        "name: m\nconnectors: [{name: c}]\ntools: [{name: c.t, connector: c, class: read}]\n"
        "agents: [{name: a, purpose: p}]\nrules:\n  - id: trial-allow\n    mode: shadow\n    match: {tools: [c.t]}\n    verdict: allow\n"
    )
    d = Governor(p).decide(act("c.t", chain=[{"kind": "agent", "id": "a"}]))
    # the shadow rule would allow; enforcement still uses the default (block)
    assert d.verdict is Verdict.BLOCK and d.policy_verdict is Verdict.ALLOW


def test_plane_errors_block_even_in_shadow_mode(tmp_path: Path) -> None:
    gov = Governor(_mode_pack(tmp_path, "shadow"), planes=[Exploding()])
    assert gov.decide(act("c.t", chain=[{"kind": "agent", "id": "a"}])).verdict is Verdict.BLOCK


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.decisions: list[tuple[Action, Decision, bool]] = []
        self.outcomes: list[tuple[Action, Outcome]] = []

    def record_decision(self, action: Action, decision: Decision, *, durable: bool) -> None:
        if self.fail:
            raise ConnectionError("ledger unreachable")
        self.decisions.append((action, decision, durable))

    def record_outcome(self, action: Action, outcome: Outcome, *, durable: bool) -> None:
        self.outcomes.append((action, outcome))

    async def arecord_decision(self, action: Action, decision: Decision, *, durable: bool) -> None:
        self.record_decision(action, decision, durable=durable)

    async def arecord_outcome(self, action: Action, outcome: Outcome, *, durable: bool) -> None:
        self.record_outcome(action, outcome, durable=durable)


def test_unreachable_evidence_blocks_and_tool_never_runs() -> None:
    ran = []
    gov = Governor(SALES_PACK, evidence=Sink(fail=True))
    tool = gov.govern(lambda query: ran.append(query), tool="crm.search_accounts")
    with gov.run(REP, session_id="s", purpose="sales-support"), pytest.raises(ActionBlocked) as exc:
        tool(query="Globex")
    assert ran == []
    assert "evidence" in exc.value.decision.explanation


def test_governed_tool_enforces_and_records() -> None:
    sink = Sink()
    sent: list[dict[str, str]] = []
    gov = Governor(SALES_PACK, evidence=sink, planes=[Rewriter()])

    def send(to: str, subject: str, body: str) -> dict[str, str]:
        sent.append({"to": to, "body": body})
        return {"ok": "yes"}

    email = gov.govern(send, tool="email.send")
    update = gov.govern(lambda contract_id, status: status, tool="contracts.update_status")
    with gov.run(REP, session_id="s", purpose="sales-support"):
        with pytest.raises(ActionBlocked):
            email(to="attacker@evil.example", subject="s", body="b")
        assert email(to="bob@acme.example", subject="s", body="secret") == {"ok": "yes"}
        with pytest.raises(ApprovalRequired) as exc:
            update(contract_id="C-7", status="signed")
        assert exc.value.decision.verdict is Verdict.REQUIRE_APPROVAL
    assert sent == [{"to": "bob@acme.example", "body": "<redacted>"}]
    statuses = [o.status for _, o in sink.outcomes]
    assert (
        statuses.count(OutcomeStatus.BLOCKED) == 1
        and OutcomeStatus.SUCCESS in statuses
        and OutcomeStatus.APPROVAL_PENDING in statuses
    )
    # the stored action carries the rewritten arguments, and modify actions are recorded durably
    stored = [a for a, d, _ in sink.decisions if a.tool == "email.send" and d.verdict is Verdict.MODIFY]
    assert stored and stored[0].arguments["body"] == "<redacted>"
    assert [dur for a, _, dur in sink.decisions if a.tool == "contracts.update_status"] == [True]


def test_govern_rejects_uncatalogued_tool(gov: Governor) -> None:
    with pytest.raises(KeyError):
        gov.govern(lambda: None, tool="shell.run")


def test_governed_tool_outside_a_run_refuses(gov: Governor) -> None:
    tool = gov.govern(lambda query: query, tool="crm.search_accounts")
    with pytest.raises(RuntimeError, match=r"outside Governor\.run"):
        tool(query="x")


def test_tool_errors_are_recorded_and_reraised() -> None:
    sink = Sink()
    gov = Governor(SALES_PACK, evidence=sink)

    def boom(query: str) -> None:
        raise ValueError("CRM down")

    tool = gov.govern(boom, tool="crm.search_accounts")
    with gov.run(REP, session_id="s", purpose="sales-support"), pytest.raises(ValueError):
        tool(query="x")
    assert sink.outcomes[-1][1].status is OutcomeStatus.ERROR and "CRM down" in (sink.outcomes[-1][1].error or "")


async def test_async_governed_tool_parity() -> None:
    sink = Sink()
    gov = Governor(SALES_PACK, evidence=sink)

    async def search(query: str) -> list[str]:
        await asyncio.sleep(0)
        return [query]

    tool = gov.govern(search, tool="crm.search_accounts")
    email = gov.govern(lambda to, subject, body: "sent", tool="email.send")
    with gov.run(REP, session_id="s", purpose="sales-support"):
        assert await tool(query="Globex") == ["Globex"]
        with pytest.raises(ActionBlocked):
            await email.acall(to="x@evil.example", subject="s", body="b")
        assert await email.acall(to="bob@acme.example", subject="s", body="b") == "sent"
    assert [o.status for _, o in sink.outcomes].count(OutcomeStatus.SUCCESS) == 2


def test_sequence_rule_uses_session_state(gov: Governor) -> None:
    cancel = {"contract_id": "C", "status": "cancelled"}
    assert gov.decide(act("contracts.update_status", cancel, session="fresh")).verdict is Verdict.REQUIRE_APPROVAL
    gov.decide(act("crm.get_account_notes", {"account_id": "A"}, session="seq"))
    d = gov.decide(act("contracts.update_status", cancel, session="seq"))
    assert d.verdict is Verdict.BLOCK and d.rule_ids == ("contracts.no-cancel-after-crm-notes",)
    # a blocked read does not count as "after"
    gov.decide(
        act(
            "crm.get_account_notes",
            {"account_id": "A"},
            session="blocked",
            chain=[{"kind": "user", "id": "x", "roles": []}, {"kind": "agent", "id": "sales-assistant"}],
        )
    )
    assert gov.decide(act("contracts.update_status", cancel, session="blocked")).verdict is Verdict.REQUIRE_APPROVAL


def test_session_counts_and_intent(gov: Governor) -> None:
    gov.decide(act(None, point=MediationPoint.INPUT, session="i", content="hi", intent="look up Globex"))
    gov.decide(act("crm.search_accounts", {"query": "x"}, session="i"))
    state = gov.sessions.get("i")
    assert state.intent == "look up Globex"
    assert state.counts["tool:crm.search_accounts"] == 1 and state.counts["class:read"] == 1
    gov.end_session("i")
    assert gov.sessions.get("i").steps == []


def test_delegation_needs_a_declared_target(gov: Governor) -> None:
    d = gov.decide(act(None, {"to_agent": "helper"}, point=MediationPoint.DELEGATION))
    assert d.verdict is Verdict.BLOCK and "purpose.delegation" in d.rule_ids


def test_action_digest_binds_content() -> None:
    a = act("email.send", {"to": "a@acme.example"})
    b = a.model_copy(update={"action_id": "other"})
    c = act("email.send", {"to": "b@acme.example"})
    assert a.digest() == b.digest() != c.digest()


def test_action_validation() -> None:
    with pytest.raises(ValueError, match="must name its tool"):
        Action.model_validate({"point": "tool_call", "principal": REP, "session_id": "s"})
    with pytest.raises(ValueError):
        Action.model_validate({"point": "tool_call", "tool": "x", "principal": [], "session_id": "s"})
    with pytest.raises(ValueError):
        Action.model_validate({"point": "teleport", "tool": "x", "principal": REP, "session_id": "s"})
    a = act("crm.search_accounts", {"q": 1}, action_class=ActionClass.READ)
    assert Action.model_validate(a.to_json()) == a


def test_tool_results_become_canonical_json_whatever_they_are() -> None:
    from fiveplane import canonical_json, jsonable

    class Odd:
        def __repr__(self) -> str:
            return "<odd>"

    value = jsonable({"nan": float("nan"), "inf": float("-inf"), "set": {1}, "t": (1, "a"), "o": Odd()})
    assert value == {"nan": None, "inf": None, "set": [1], "t": [1, "a"], "o": "<odd>"}
    canonical_json(value)  # RFC 8785 rejects NaN: the converted value must be accepted
    sink = Sink()
    gov = Governor(SALES_PACK, evidence=sink)
    tool = gov.govern(lambda query: {"score": float("nan")}, tool="crm.search_accounts")
    with gov.run(REP, session_id="s", purpose="sales-support"):
        returned = tool(query="x")  # the caller gets the real result; only its evidence is converted
    assert returned["score"] != returned["score"]  # NaN
    result = [a for a, _, _ in sink.decisions if a.point is MediationPoint.TOOL_RESULT]
    assert result and result[0].content == {"score": None}
    canonical_json(result[0].to_json())


def test_an_unknown_tool_is_blocked_in_warn_and_shadow_mode_too(tmp_path: Path) -> None:
    for mode in ("warn", "shadow"):
        pack = tmp_path / f"{mode}.yaml"
        pack.write_text(
            f"name: p\nmode: {mode}\nconnectors: [{{name: t}}]\ntools: [{{name: t.a, connector: t, class: read}}]\n"
            "agents: [{name: ag, purpose: testing}]\nrules: [{id: a, match: {}, verdict: allow}]\n"
        )
        d = Governor(pack).decide(
            Action(point="tool_call", tool="db.drop_all", principal=[{"kind": "agent", "id": "ag"}], session_id="s")
        )
        assert d.verdict is Verdict.BLOCK and "defaults.unknown_tool" in d.rule_ids, mode
