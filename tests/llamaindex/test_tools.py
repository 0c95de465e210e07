"""GovernedFunctionTool called directly, on the sync and the async path: every verdict enforced."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from llama_index.core.tools import FunctionTool, ToolOutput
from llama_index.tools.fiveplane import GovernedFunctionTool, govern_tools

from fiveplane import (
    ActionBlocked,
    ApprovalRequired,
    BasePlane,
    Governor,
    MediationPoint,
    OutcomeStatus,
    PlaneContext,
    PlaneResult,
    Verdict,
    approver,
)
from tests.llamaindex._support import LLAMA_INDEX_WARNINGS, MODES, BrokenPlane, MemorySink, RedactPlane, make_run, run_async

LEAD = approver("lead-2", ["support-lead"])

pytestmark = LLAMA_INDEX_WARNINGS


def call(mode: str, tool: GovernedFunctionTool, *args: Any, **kwargs: Any) -> ToolOutput:
    if mode == "sync":
        return tool.call(*args, **kwargs)
    return run_async(lambda: tool.acall(*args, **kwargs))


class Mail:
    """The connector behind the e-mail tool: records what really ran."""

    def __init__(self, reply: str = "sent") -> None:
        self.sent: list[dict[str, str]] = []
        self.reply = reply

    def send_email(self, to: str, subject: str, body: str) -> str:
        """Send an e-mail."""
        self.sent.append({"to": to, "subject": subject, "body": body})
        return f"{self.reply} to {to}"


def email_tool(governor: Governor, mail: Mail) -> GovernedFunctionTool:
    return GovernedFunctionTool(
        FunctionTool.from_defaults(fn=mail.send_email), governor, policy_tool="email.send", run=make_run()
    )


@pytest.mark.parametrize("mode", MODES)
def test_allowed_call_runs_and_is_recorded(mode: str, governor: Governor, sink: MemorySink) -> None:
    mail = Mail()
    out = call(mode, email_tool(governor, mail), to="bob@acme.example", subject="Hi", body="renewal")
    assert not out.is_error
    assert out.content == "sent to bob@acme.example"
    assert mail.sent == [{"to": "bob@acme.example", "subject": "Hi", "body": "renewal"}]
    (call_action, decision), (result_action, result_decision) = sink.decisions
    assert result_decision.verdict is Verdict.ALLOW
    assert call_action.point is MediationPoint.TOOL_CALL and call_action.tool == "email.send"
    assert decision.verdict is Verdict.ALLOW and decision.rule_ids == ("email.internal",)
    assert result_action.point is MediationPoint.TOOL_RESULT and result_action.parent_action_id == call_action.action_id
    assert result_action.content == "sent to bob@acme.example"
    assert sink.outcome_of(call_action.action_id) is OutcomeStatus.SUCCESS


@pytest.mark.parametrize("mode", MODES)
def test_blocked_call_returns_a_readable_error_and_never_runs(mode: str, governor: Governor, sink: MemorySink) -> None:
    mail = Mail()
    out = call(mode, email_tool(governor, mail), to="x@evil.example", subject="C-7", body="contract")
    assert out.is_error
    assert out.content.startswith("Blocked email.send (invoke) for agent-7 via support-assistant")
    assert "[email.external-blocked]" in out.content and "send_email did not run" in out.content
    assert isinstance(out.exception, ActionBlocked)
    assert out.exception.decision.rule_ids == ("email.external-blocked",)
    assert mail.sent == []
    [(action, decision)] = sink.decisions
    assert decision.verdict is Verdict.BLOCK
    assert sink.outcome_of(action.action_id) is OutcomeStatus.BLOCKED


@pytest.mark.parametrize("mode", MODES)
def test_modify_runs_with_rewritten_arguments(mode: str, make_governor: Callable[..., Governor], sink: MemorySink) -> None:
    gov = make_governor(planes=(RedactPlane(rewrite_args={"email.send": {"body": "[minimized]"}}),))
    mail = Mail()
    out = call(mode, email_tool(gov, mail), to="bob@acme.example", subject="Hi", body="card 4111 1111 1111 1111")
    assert not out.is_error
    assert mail.sent == [{"to": "bob@acme.example", "subject": "Hi", "body": "[minimized]"}]
    assert sink.decisions[0][1].verdict is Verdict.MODIFY


@pytest.mark.parametrize("mode", MODES)
def test_result_is_redacted_before_the_model_sees_it(mode: str, governor: Governor, sink: MemorySink) -> None:
    mail = Mail(reply="sent; customer jane.roe@example.com was copied")
    out = call(mode, email_tool(governor, mail), to="bob@acme.example", subject="Hi", body="x")
    assert out.content == "sent; customer <REDACTED> was copied to bob@acme.example"
    assert out.raw_output == out.content
    assert "jane.roe" not in str(out.raw_input) + out.content
    assert sink.decisions[-1][1].verdict is Verdict.MODIFY


class WithholdSecrets(BasePlane):
    name = "withhold"

    def evaluate(self, action: Any, ctx: PlaneContext) -> PlaneResult:
        result = PlaneResult(plane=self.name)
        if action.point is MediationPoint.TOOL_RESULT and "SECRET" in str(action.content):
            result.add("secret", "the result holds a secret", verdict=Verdict.BLOCK)
        return result


@pytest.mark.parametrize("mode", MODES)
def test_a_blocked_result_is_withheld(mode: str, make_governor: Callable[..., Governor], sink: MemorySink) -> None:
    gov = make_governor(planes=(WithholdSecrets(),))
    mail = Mail(reply="SECRET token abc")
    out = call(mode, email_tool(gov, mail), to="bob@acme.example", subject="Hi", body="x")
    assert out.is_error and "withheld by policy" in out.content
    assert "abc" not in out.content
    assert len(mail.sent) == 1  # it ran; its result never reaches the model
    result_action = sink.decisions[-1][0]
    assert sink.outcome_of(result_action.action_id) is OutcomeStatus.BLOCKED


@pytest.mark.parametrize("mode", MODES)
def test_outside_a_run_nothing_runs(mode: str, governor: Governor, sink: MemorySink) -> None:
    mail = Mail()
    tool = GovernedFunctionTool(mail.send_email, governor, policy_tool="email.send")  # no run=, no governor.run()
    out = call(mode, tool, to="bob@acme.example", subject="Hi", body="x")
    assert out.is_error and "outside governor.run" in out.content
    assert mail.sent == [] and sink.decisions == []


@pytest.mark.parametrize("mode", MODES)
def test_the_run_of_the_context_is_used(mode: str, governor: Governor, sink: MemorySink) -> None:
    mail = Mail()
    tool = GovernedFunctionTool(mail.send_email, governor, policy_tool="email.send")
    with governor.run(
        [{"kind": "user", "id": "lead-2", "roles": ["support-lead"]}, {"kind": "agent", "id": "support-assistant"}],
        session_id="ctx-run",
        purpose="customer-support",
    ):
        out = call(mode, tool, to="bob@acme.example", subject="Hi", body="x")
    assert not out.is_error
    assert sink.decisions[0][0].session_id == "ctx-run"
    assert sink.decisions[0][0].user is not None and sink.decisions[0][0].user.id == "lead-2"


@pytest.mark.parametrize("mode", MODES)
def test_approval_outside_a_workflow_names_the_request_and_binds_to_the_action(
    mode: str, governor: Governor, sink: MemorySink
) -> None:
    refunds: list[tuple[str, float]] = []

    def issue_refund(ticket_id: str, amount: float) -> str:
        """Refund a ticket."""
        refunds.append((ticket_id, amount))
        return f"refunded {amount}"

    tool = GovernedFunctionTool(issue_refund, governor, policy_tool="refunds.issue", run=make_run())
    first = call(mode, tool, ticket_id="4411", amount=40)
    assert first.is_error and isinstance(first.exception, ApprovalRequired)
    assert first.content.startswith("Paused for approval refunds.issue")
    assert refunds == []
    assert sink.outcome_of(sink.decisions[0][0].action_id) is OutcomeStatus.APPROVAL_PENDING
    assert governor.approvals is not None
    [request] = governor.approvals.requests()
    assert request.id in first.content and request.role == "support-lead" and request.requester == "agent-7"

    governor.approvals.approve(request.id, LEAD, reason="ok")
    other = call(mode, tool, ticket_id="4411", amount=41)  # another action: not approved
    assert other.is_error and refunds == []
    assert not call(mode, tool, ticket_id="4411", amount=40).is_error  # the approved action, once
    assert refunds == [("4411", 40)]
    again = call(mode, tool, ticket_id="4411", amount=40)  # single use
    assert again.is_error and refunds == [("4411", 40)]


@pytest.mark.parametrize("mode", MODES)
def test_approval_without_a_store_stays_paused(mode: str, make_governor: Callable[..., Governor]) -> None:
    gov = make_governor(approvals=False)
    ran: list[int] = []
    tool = GovernedFunctionTool(lambda ticket_id, amount: ran.append(1), gov, policy_tool="refunds.issue", run=make_run())
    out = call(mode, tool, ticket_id="4411", amount=40)
    assert out.is_error and "no approval store" in out.content and ran == []


@pytest.mark.parametrize("mode", MODES)
def test_an_engine_failure_fails_closed(mode: str, make_governor: Callable[..., Governor], sink: MemorySink) -> None:
    gov = make_governor(planes=(BrokenPlane(),))
    mail = Mail()
    out = call(mode, email_tool(gov, mail), to="bob@acme.example", subject="Hi", body="x")
    assert out.is_error and "broken" in out.content
    assert mail.sent == []
    assert sink.decisions[0][1].verdict is Verdict.BLOCK


@pytest.mark.parametrize("mode", MODES)
def test_a_failing_tool_is_recorded_and_raises(mode: str, governor: Governor, sink: MemorySink) -> None:
    def send_email(to: str, subject: str, body: str) -> str:
        raise ConnectionError("smtp down")

    tool = GovernedFunctionTool(send_email, governor, policy_tool="email.send", run=make_run())
    with pytest.raises(ConnectionError):
        call(mode, tool, to="bob@acme.example", subject="Hi", body="x")
    action = sink.decisions[0][0]
    assert sink.outcome_of(action.action_id) is OutcomeStatus.ERROR
    assert [o.error for a, o in sink.outcomes] == ["ConnectionError: smtp down"]


@pytest.mark.parametrize("mode", MODES)
def test_positional_arguments_are_bound_to_the_schema(mode: str, governor: Governor, sink: MemorySink) -> None:
    mail = Mail()
    tool = email_tool(governor, mail)
    assert not call(mode, tool, "bob@acme.example", "Hi", body="x").is_error
    assert not call(mode, tool, {"to": "bob@acme.example", "subject": "Hi", "body": "y"}).is_error
    assert [m["body"] for m in mail.sent] == ["x", "y"]
    bad = call(mode, tool, "a", "b", "c", "d")
    assert bad.is_error and len(mail.sent) == 2


def test_the_model_sees_the_wrapped_tool_unchanged(governor: Governor) -> None:
    mail = Mail()
    inner = FunctionTool.from_defaults(fn=mail.send_email)
    tool = GovernedFunctionTool(inner, governor, policy_tool="email.send", run=make_run())
    assert isinstance(tool, FunctionTool)
    assert tool.metadata is inner.metadata
    assert tool.metadata.to_openai_tool() == inner.metadata.to_openai_tool()
    assert tool.requires_context and tool.ctx_param_name == "fiveplane_ctx"
    assert tool.inner is inner
    assert tool.fn(to="x@evil.example", subject="s", body="b").startswith("Blocked")  # fn is governed too
    assert mail.sent == []


def test_construction_fails_closed_on_an_uncatalogued_tool(governor: Governor) -> None:
    mail = Mail()
    with pytest.raises(ValueError, match="'send_email' is not in the catalog of policy 'rag-assistant'"):
        GovernedFunctionTool(mail.send_email, governor)
    with pytest.raises(ValueError, match="not among the tools given"):
        govern_tools([mail.send_email], governor, policy_tools={"send_email": "email.send", "typo": "email.send"})
    [tool] = govern_tools([mail.send_email], governor, policy_tools={"send_email": "email.send"}, run=make_run())
    assert tool.policy_tool == "email.send" and tool.metadata.name == "send_email"


def test_blockbuster_is_watching(governor: Governor) -> None:
    """The async runner fails blocking calls on the loop: a sync decide that reads the approval store."""
    action = make_run().action(MediationPoint.TOOL_CALL, tool="refunds.issue", arguments={"ticket_id": "1", "amount": 1})

    async def blocking() -> Any:
        return governor.decide(action)  # sync engine call on the event loop (sqlite)

    decision = run_async(blocking)
    assert decision.verdict is Verdict.BLOCK and "BlockingError" in " ".join(decision.errors)
    assert run_async(lambda: governor.adecide(action)).verdict is Verdict.REQUIRE_APPROVAL  # the async twin is fine
