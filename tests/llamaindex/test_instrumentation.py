"""Instrumentation evidence: LLM calls, retrievals, tool calls and decisions joined by span ids;
observers only (a failing recorder changes nothing)."""

from __future__ import annotations

import json
from typing import Any

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import RetrieverTool
from llama_index.tools.fiveplane import (
    ApprovalRequestEvent,
    ApprovalResponseEvent,
    FiveplaneEventHandler,
    FiveplaneInstrumentation,
    FiveplaneSpanHandler,
    GovernedRetriever,
    govern_tools,
)

from fiveplane import Governor, approver
from tests.llamaindex._support import LLAMA_INDEX_WARNINGS, USER, MemorySink, run_async
from tests.llamaindex.test_agents import Connectors, Script

pytestmark = LLAMA_INDEX_WARNINGS

LEAD = approver("lead-2", ["support-lead"])


def scenario(governor: Governor, record: Any) -> tuple[Connectors, FiveplaneInstrumentation]:
    """An agent with a governed retriever tool and governed tools: search, a blocked e-mail, an approved refund."""
    docs = [
        Document(text="Refund policy: 30 days.", metadata={"labels": ["PUBLIC"]}),
        Document(text="Board minutes.", metadata={"labels": ["CONFIDENTIAL"]}),
    ]
    index = VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8))
    retriever = GovernedRetriever(index.as_retriever(similarity_top_k=2), governor, source="kb.search")
    c = Connectors()
    tools = govern_tools(
        [RetrieverTool.from_defaults(retriever=retriever, name="search_kb"), c.send_email, c.issue_refund],
        governor,
        policy_tools={"search_kb": "kb.search", "send_email": "email.send", "issue_refund": "refunds.issue"},
    )
    script = Script(
        [
            [("search_kb", {"input": "refund"})],
            [("send_email", {"to": "x@evil.example", "subject": "s", "body": "b"})],
            [("issue_refund", {"ticket_id": "4411", "amount": 40})],
            "done",
        ]
    )
    agent = FunctionAgent(
        name="support-assistant", description="d", tools=list(tools), llm=MockFunctionCallingLLM(response_generator=script)
    )
    instrumentation = FiveplaneInstrumentation(record, governor=governor)

    async def run() -> None:
        with (
            instrumentation,
            governor.run([USER, {"kind": "agent", "id": "support-assistant"}], session_id="s-ev", purpose="customer-support"),
        ):
            handler = agent.run(user_msg="refund 4411")
            async for ev in handler.stream_events():
                if isinstance(ev, ApprovalRequestEvent):
                    assert handler.ctx is not None
                    handler.ctx.send_event(ApprovalResponseEvent.approve(ev, LEAD))
            await handler

    run_async(run)
    return c, instrumentation


def test_every_step_leaves_evidence_joined_by_span_ids(governor: Governor, sink: MemorySink) -> None:
    records: list[tuple[str, dict[str, Any]]] = []
    c, _ = scenario(governor, lambda kind, payload: records.append((kind, payload)))
    assert c.ran == [("issue_refund", {"ticket_id": "4411", "amount": 40})]
    spans = {p["span_id"]: p for k, p in records if k == "llamaindex.span"}
    decisions = [p for k, p in records if k == "llamaindex.decision"]
    # every decision of the engine is joined: same action ids as the ledger's (here: the memory sink)
    assert [d["action_id"] for d in decisions] == [a.action_id for a, _ in sink.decisions]
    for d in decisions:
        span = spans[d["span_id"]]
        if d["point"] in ("tool_call", "tool_result"):
            assert span["name"] == "GovernedFunctionTool.acall" and span["category"] == "tool"
        else:
            assert d["point"] == "retrieval" and span["name"] == "GovernedRetriever.aretrieve"
    # the recorded spans form a tree rooted at the agent run
    root = next(s for s in spans.values() if s["category"] == "agent")
    for span in spans.values():
        hops = 0
        while span is not root and hops < 20:
            span = spans[span["parent_span_id"]]
            hops += 1
        assert span is root
    tool_spans = [s for s in spans.values() if s["name"] == "GovernedFunctionTool.acall"]
    assert sorted(s["tool"] for s in tool_spans) == ["issue_refund", "issue_refund", "search_kb", "send_email"]
    assert sorted(s["status"] for s in tool_spans) == ["ok", "ok", "ok", "paused"]  # the approval pause
    blocked = next(s for s in tool_spans if s["tool"] == "send_email")
    assert blocked["is_error"] is True and blocked["session_id"] == "s-ev"
    llm = [p for k, p in records if k == "llamaindex.llm"]
    assert [p["tool_calls"] for p in llm if p.get("tool_calls")] == [["search_kb"], ["send_email"], ["issue_refund"]]
    retrievals = [p for k, p in records if k == "llamaindex.retrieval"]
    assert sorted(len(p["node_ids"]) for p in retrievals) == [1, 2]  # the governed retriever returned 1 of 2
    # identifiers, names and digests only: no document, prompt or argument text
    dumped = json.dumps(records)
    for text in ("Board minutes", "Refund policy", "x@evil.example"):
        assert text not in dumped


def test_a_failing_recorder_changes_nothing(governor: Governor, sink: MemorySink) -> None:
    def broken(kind: str, payload: dict[str, Any]) -> None:
        raise OSError("ledger unreachable")

    c, instrumentation = scenario(governor, broken)
    assert c.ran == [("issue_refund", {"ticket_id": "4411", "amount": 40})]
    assert [d.verdict.value for _, d in sink.decisions if _.point.value == "tool_call"] == [
        "allow",
        "block",
        "require_approval",
        "allow",
    ]
    assert instrumentation.failures > 10


def test_attach_and_detach(governor: Governor) -> None:
    records: list[tuple[str, dict[str, Any]]] = []
    inst = FiveplaneInstrumentation(lambda k, p: records.append((k, p)), governor=governor)
    root = get_dispatcher()
    assert inst.attach() is inst.attach() and inst.attached
    assert sum(h is inst.span_handler for h in root.span_handlers) == 1
    inst.detach()
    inst.detach()
    assert not inst.attached
    assert inst.span_handler not in root.span_handlers and inst.event_handler not in root.event_handlers
    run_ = governor.run([USER], session_id="s-quiet")
    with run_ as run:
        governor.decide(run.action("input", content="hi"))  # type: ignore[arg-type]
    assert records == []  # detached: the Governor listener is quiet too


def test_handlers_work_alone(governor: Governor) -> None:
    records: list[str] = []
    span_handler = FiveplaneSpanHandler(lambda k, p: records.append(p["name"]), categories=None)
    event_handler = FiveplaneEventHandler(lambda k, p: records.append(k))
    assert span_handler.class_name() == "FiveplaneSpanHandler" and event_handler.class_name() == "FiveplaneEventHandler"
    root = get_dispatcher()
    root.add_span_handler(span_handler)
    root.add_event_handler(event_handler)
    try:
        index = VectorStoreIndex.from_documents([Document(text="a")], embed_model=MockEmbedding(embed_dim=4))
        index.as_retriever().retrieve("a")
    finally:
        root.span_handlers = [h for h in root.span_handlers if h is not span_handler]
        root.event_handlers = [h for h in root.event_handlers if h is not event_handler]
    assert "VectorIndexRetriever.retrieve" in records and "llamaindex.retrieval" in records
    assert any(name.startswith("MockEmbedding.") for name in records)  # categories=None records everything
    assert span_handler.open_spans == {} and span_handler.completed_spans == []  # nothing accumulates
