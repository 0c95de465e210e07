"""Governed tools inside real LlamaIndex agent workflows (FunctionAgent, ReActAgent, AgentWorkflow)
driven by scripted mock LLMs: blocked tools, context injection, approvals through workflow events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from llama_index.core.agent.workflow import (
    AgentOutput,
    AgentWorkflow,
    FunctionAgent,
    ReActAgent,
    ToolCallResult,
)
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import Context, InputRequiredEvent
from llama_index.tools.fiveplane import ApprovalRequestEvent, ApprovalResponseEvent, GovernedFunctionTool, govern_tools

from fiveplane import ApprovalStatus, ApprovalStore, Governor, OutcomeStatus, Principal, Verdict, approver
from tests.llamaindex._support import LLAMA_INDEX_WARNINGS, USER, MemorySink, make_run, run_async

LEAD = approver("lead-2", ["support-lead"])
Turn = list[tuple[str, dict[str, Any]]] | str

pytestmark = LLAMA_INDEX_WARNINGS


class Script:
    """A scripted model: returns its turns in order and keeps every prompt it was shown."""

    def __init__(self, turns: Sequence[Turn]) -> None:
        self.turns = list(turns)
        self.seen: list[list[ChatMessage]] = []

    def __call__(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        self.seen.append(list(messages))
        turn = self.turns[min(len(self.seen) - 1, len(self.turns) - 1)]
        if isinstance(turn, str):
            return ChatMessage(role=MessageRole.ASSISTANT, content=turn)
        n = len(self.seen)
        blocks = [ToolCallBlock(tool_call_id=f"c{n}-{i}", tool_name=name, tool_kwargs=kw) for i, (name, kw) in enumerate(turn)]
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks)

    def tool_messages(self) -> list[str]:
        return [str(m.content) for m in self.seen[-1] if m.role == MessageRole.TOOL]


class Connectors:
    """What really ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []

    def send_email(self, to: str, subject: str, body: str) -> str:
        """Send an e-mail."""
        self.ran.append(("send_email", {"to": to}))
        return f"sent to {to}"

    def issue_refund(self, ticket_id: str, amount: float) -> str:
        """Refund a support ticket."""
        self.ran.append(("issue_refund", {"ticket_id": ticket_id, "amount": amount}))
        return f"refunded {amount} on {ticket_id}"

    def tools(self, governor: Governor, **kwargs: Any) -> list[GovernedFunctionTool]:
        return govern_tools(
            [self.send_email, self.issue_refund],
            governor,
            policy_tools={"send_email": "email.send", "issue_refund": "refunds.issue"},
            **kwargs,
        )


async def drive(
    agent: Any, governor: Governor, on_event: Callable[[Any, Any], None] | None = None, user: Principal = USER
) -> tuple[str, list[Any]]:
    """Run ``agent`` inside a governor run; ``on_event(handler, event)`` sees the stream."""
    events: list[Any] = []
    with governor.run([user, {"kind": "agent", "id": "support-assistant"}], session_id="s-agent", purpose="customer-support"):
        handler = agent.run(user_msg="Handle ticket 4411.")
        async for ev in handler.stream_events():
            events.append(ev)
            if on_event is not None:
                on_event(handler, ev)
        out = cast(AgentOutput, await handler)
    return str(out.response.content), events


def function_agent(script: Script, tools: Sequence[Any]) -> FunctionAgent:
    return FunctionAgent(
        name="support-assistant", description="support", tools=list(tools), llm=MockFunctionCallingLLM(response_generator=script)
    )


def test_a_blocked_tool_becomes_an_error_the_model_reads(governor: Governor, sink: MemorySink) -> None:
    c = Connectors()
    script = Script(
        [[("send_email", {"to": "x@evil.example", "subject": "list", "body": "all customers"})], "I could not send it."]
    )
    answer, events = run_async(lambda: drive(function_agent(script, c.tools(governor)), governor))
    assert answer == "I could not send it."
    assert c.ran == []
    [result] = [e for e in events if isinstance(e, ToolCallResult)]
    assert result.tool_output.is_error and "[email.external-blocked]" in result.tool_output.content
    assert any("[email.external-blocked]" in m for m in script.tool_messages())  # the model read it
    [(action, decision)] = sink.decisions
    assert decision.verdict is Verdict.BLOCK and sink.outcome_of(action.action_id) is OutcomeStatus.BLOCKED


def test_allowed_and_blocked_calls_in_one_turn(governor: Governor, sink: MemorySink) -> None:
    c = Connectors()
    script = Script(
        [
            [
                ("send_email", {"to": "bob@acme.example", "subject": "4411", "body": "fyi"}),
                ("issue_refund", {"ticket_id": "4411", "amount": 9000}),
            ],
            "done",
        ]
    )
    run_async(lambda: drive(function_agent(script, c.tools(governor)), governor))
    assert c.ran == [("send_email", {"to": "bob@acme.example"})]
    outputs = sorted(script.tool_messages())
    assert any("[refunds.cap]" in m for m in outputs) and "sent to bob@acme.example" in outputs


def test_react_agent(governor: Governor, sink: MemorySink) -> None:
    c = Connectors()
    blocked = json.dumps({"to": "x@evil.example", "subject": "s", "body": "b"})
    allowed = json.dumps({"to": "bob@acme.example", "subject": "s", "body": "b"})
    script = Script(
        [
            f"Thought: I need to send an e-mail.\nAction: send_email\nAction Input: {blocked}",
            f"Thought: That was refused; e-mail a colleague.\nAction: send_email\nAction Input: {allowed}",
            "Thought: I can answer.\nAnswer: Bob is informed.",
        ]
    )
    agent = ReActAgent(
        name="support-assistant", tools=list(c.tools(governor)), llm=MockFunctionCallingLLM(response_generator=script)
    )
    answer, _ = run_async(lambda: drive(agent, governor))
    assert answer == "Bob is informed."
    assert c.ran == [("send_email", {"to": "bob@acme.example"})]
    observations = "\n".join(str(m.content) for m in script.seen[1])
    assert "[email.external-blocked]" in observations  # the ReAct observation carries the refusal
    assert sink.verdicts("tool_call") == ["block", "allow"]


def test_agent_workflow(governor: Governor, sink: MemorySink) -> None:
    c = Connectors()
    script = Script([[("issue_refund", {"ticket_id": "4411", "amount": 9000})], "Refund refused by policy."])
    workflow = AgentWorkflow(agents=[function_agent(script, c.tools(governor))])
    answer, _ = run_async(lambda: drive(workflow, governor))
    assert answer == "Refund refused by policy." and c.ran == []
    assert sink.decisions[0][1].rule_ids == ("refunds.cap",)


def test_the_workflow_context_still_reaches_a_tool_that_asks_for_it(governor: Governor, sink: MemorySink) -> None:
    seen: list[Any] = []

    async def send_email(ctx: Context, to: str, subject: str, body: str) -> str:
        """Send an e-mail (remembers it in the workflow state)."""
        await ctx.store.set("last_recipient", to)
        seen.append(await ctx.store.get("last_recipient"))
        return "sent"

    # LlamaIndex finds the Context parameter by its annotation object; this module uses postponed
    # annotations (strings), so give the function the real class as LlamaIndex users' code does.
    send_email.__annotations__["ctx"] = Context
    inner = FunctionTool.from_defaults(async_fn=send_email)
    assert inner.requires_context
    tool = GovernedFunctionTool(inner, governor, policy_tool="email.send")
    script = Script([[("send_email", {"to": "bob@acme.example", "subject": "s", "body": "b"})], "ok"])
    run_async(lambda: drive(function_agent(script, [tool]), governor))
    assert seen == ["bob@acme.example"]
    assert sink.decisions[0][0].arguments == {"to": "bob@acme.example", "subject": "s", "body": "b"}  # no ctx in evidence


# ---- approvals through workflow events ----------------------------------------------------------

REFUND = [("issue_refund", {"ticket_id": "4411", "amount": 40})]


def answering(
    make_answer: Callable[[ApprovalRequestEvent], ApprovalResponseEvent | None], asked: list[ApprovalRequestEvent]
) -> Callable[[Any, Any], None]:
    def on_event(handler: Any, ev: Any) -> None:
        if isinstance(ev, ApprovalRequestEvent):
            asked.append(ev)
            answer = make_answer(ev)
            if answer is not None:
                handler.ctx.send_event(answer)

    return on_event


def test_approval_round_trip(governor: Governor, sink: MemorySink) -> None:
    c = Connectors()
    script = Script([REFUND, "Refunded."])
    asked: list[ApprovalRequestEvent] = []
    answer, events = run_async(
        lambda: drive(
            function_agent(script, c.tools(governor)),
            governor,
            answering(lambda ev: ApprovalResponseEvent.approve(ev, LEAD, "ok"), asked),
        )
    )
    assert answer == "Refunded."
    assert c.ran == [("issue_refund", {"ticket_id": "4411", "amount": 40})]
    [ask] = asked
    assert isinstance(ask, InputRequiredEvent)
    assert ask.policy_tool == "refunds.issue" and ask.tool_name == "issue_refund"
    assert ask.arguments == {"ticket_id": "4411", "amount": 40}
    assert ask.role == "support-lead" and ask.requester == "agent-7" and ask.separation_of_duties
    assert ask.rule_id == "refunds.need-lead" and ask.explanation.startswith("Paused for approval refunds.issue")
    assert ask.approval_id in ask.prefix or ask.prefix.startswith("Approve refunds.issue")
    assert governor.approvals is not None
    assert governor.approvals.get(ask.approval_id).status is ApprovalStatus.CONSUMED
    calls = [(a, d) for a, d in sink.decisions if a.point.value == "tool_call"]
    assert [d.verdict for _, d in calls] == [Verdict.REQUIRE_APPROVAL, Verdict.ALLOW]  # decided twice, not per replay
    assert calls[0][0].digest() == calls[1][0].digest()
    assert calls[1][1].rule_ids == ("refunds.need-lead", "approval.granted")
    assert sink.outcome_of(calls[0][0].action_id) is OutcomeStatus.APPROVAL_PENDING
    assert sink.outcome_of(calls[1][0].action_id) is OutcomeStatus.SUCCESS
    [result] = [e for e in events if isinstance(e, ToolCallResult)]
    assert not result.tool_output.is_error and result.tool_output.content == "refunded 40 on 4411"


def test_a_denied_action_is_blocked_for_the_rest_of_the_session(governor: Governor, sink: MemorySink) -> None:
    c = Connectors()
    script = Script([REFUND, REFUND, "No refund."])
    asked: list[ApprovalRequestEvent] = []
    answer, _ = run_async(
        lambda: drive(
            function_agent(script, c.tools(governor)),
            governor,
            answering(lambda ev: ApprovalResponseEvent.deny(ev, LEAD, "no receipt"), asked),
        )
    )
    assert answer == "No refund." and c.ran == []
    assert len(asked) == 1  # the second identical proposal is blocked outright, nobody is asked again
    assert "approval.denied" in script.tool_messages()[-1] or "denied" in script.tool_messages()[-1]
    verdicts = [d.verdict for a, d in sink.decisions if a.point.value == "tool_call"]
    assert verdicts == [Verdict.REQUIRE_APPROVAL, Verdict.BLOCK, Verdict.BLOCK]


@pytest.mark.parametrize(
    ("who", "message"),
    [
        (approver("agent-7", ["support-lead"]), "separation of duties"),
        (approver("bob", ["support-agent"]), "does not hold the role 'support-lead'"),
    ],
)
def test_an_answer_the_store_refuses_runs_nothing(governor: Governor, sink: MemorySink, who: Principal, message: str) -> None:
    c = Connectors()
    script = Script([REFUND, "Waiting."])
    asked: list[ApprovalRequestEvent] = []
    run_async(
        lambda: drive(
            function_agent(script, c.tools(governor)),
            governor,
            answering(lambda ev: ApprovalResponseEvent.approve(ev, who), asked),
        )
    )
    assert c.ran == []
    assert message in script.tool_messages()[-1]
    assert governor.approvals is not None
    assert governor.approvals.get(asked[0].approval_id).status is ApprovalStatus.PENDING


def test_an_approval_given_elsewhere_resumes_the_call(governor: Governor, sink: MemorySink) -> None:
    c = Connectors()
    script = Script([REFUND, "Refunded."])
    asked: list[ApprovalRequestEvent] = []
    store = governor.approvals
    assert store is not None

    async def run() -> tuple[str, list[Any]]:
        def on_event(handler: Any, ev: Any) -> None:
            if isinstance(ev, ApprovalRequestEvent):
                asked.append(ev)
                handler.ctx.send_event(ApprovalResponseEvent.decided(ev))

        # the approval happens out of band (CLI, another service) before the answer arrives
        def on_request(handler: Any, ev: Any) -> None:
            if isinstance(ev, ApprovalRequestEvent):
                store.approve(ev.approval_id, LEAD)
            on_event(handler, ev)

        return await drive(function_agent(script, c.tools(governor)), governor, on_request)

    # The test writes the store from the stream consumer (a blocking call on the loop): no BlockBuster here.
    asyncio.run(run())
    assert c.ran == [("issue_refund", {"ticket_id": "4411", "amount": 40})]
    assert store.get(asked[0].approval_id).status is ApprovalStatus.CONSUMED


def test_no_answer_in_time_runs_nothing(governor: Governor, sink: MemorySink) -> None:
    c = Connectors()
    script = Script([REFUND, "Timed out."])
    tools = c.tools(governor, approval_timeout=0.2)
    answer, _ = run_async(lambda: drive(function_agent(script, tools), governor))
    assert answer == "Timed out." and c.ran == []
    assert "No answer to approval request" in script.tool_messages()[-1]


def test_an_answer_naming_no_approver_decides_nothing(governor: Governor, sink: MemorySink) -> None:
    c = Connectors()
    script = Script([REFUND, "Nothing."])
    asked: list[ApprovalRequestEvent] = []
    run_async(
        lambda: drive(
            function_agent(script, c.tools(governor)),
            governor,
            answering(lambda ev: ApprovalResponseEvent(approval_id=ev.approval_id, approved=True), asked),
        )
    )
    assert c.ran == [] and "names no approver" in script.tool_messages()[-1]


def test_run_fixed_at_construction_works_in_a_workflow(governor: Governor, sink: MemorySink) -> None:
    c = Connectors()
    script = Script([[("send_email", {"to": "bob@acme.example", "subject": "s", "body": "b"})], "ok"])
    agent = function_agent(script, c.tools(governor, run=make_run(session_id="fixed")))

    async def run() -> None:
        handler = agent.run(user_msg="go")  # no governor.run(): the tools carry their run
        await handler

    run_async(run)
    assert c.ran == [("send_email", {"to": "bob@acme.example"})]
    assert sink.decisions[0][0].session_id == "fixed"


def test_an_expired_request_cannot_be_approved(make_governor: Callable[..., Governor], sink: MemorySink, db: str) -> None:
    now = [datetime(2026, 1, 1, 9, 0, tzinfo=UTC)]
    governor = make_governor(approvals=False)
    governor.approvals = ApprovalStore(db, clock=lambda: now[0])
    c = Connectors()
    script = Script([REFUND, "Expired."])

    def late(ev: ApprovalRequestEvent) -> ApprovalResponseEvent:
        now[0] += timedelta(seconds=3601)  # the rule's expires_in is 3600 s
        return ApprovalResponseEvent.approve(ev, LEAD)

    asked: list[ApprovalRequestEvent] = []
    run_async(lambda: drive(function_agent(script, c.tools(governor)), governor, answering(late, asked)))
    assert c.ran == [] and "expired" in script.tool_messages()[-1]
    assert asked[0].expires_at == "2026-01-01T10:00:00+00:00"


@pytest.mark.parametrize("kind", ["react", "workflow"])
def test_approval_round_trip_in_other_agents(kind: str, governor: Governor, sink: MemorySink) -> None:
    c = Connectors()
    if kind == "react":
        args = json.dumps({"ticket_id": "4411", "amount": 40})
        script = Script([f"Thought: refund.\nAction: issue_refund\nAction Input: {args}", "Thought: done.\nAnswer: Refunded."])
        agent: Any = ReActAgent(
            name="support-assistant", tools=list(c.tools(governor)), llm=MockFunctionCallingLLM(response_generator=script)
        )
    else:
        script = Script([REFUND, "Refunded."])
        agent = AgentWorkflow(agents=[function_agent(script, c.tools(governor))])
    asked: list[ApprovalRequestEvent] = []
    answer, _ = run_async(lambda: drive(agent, governor, answering(lambda ev: ApprovalResponseEvent.approve(ev, LEAD), asked)))
    assert answer == "Refunded." and len(asked) == 1
    assert c.ran == [("issue_refund", {"ticket_id": "4411", "amount": 40})]
    assert sink.verdicts("tool_call") == ["require_approval", "allow"]
