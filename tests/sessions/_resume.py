"""Processes that pause a real agent for approval and processes that resume it (another process).

LangGraph: ``create_agent`` with the fiveplane middleware and a SQLite checkpointer file; the first
process runs until the approval interrupt and exits; the second builds the same agent on the same
files and resumes with ``Command(resume=resume_approve(...))``.

LlamaIndex: a ``FunctionAgent`` with governed tools; the first process runs until the
``ApprovalRequestEvent`` and saves the workflow ``Context`` (``ctx.to_dict``) to a file; the second
restores it (``Context.from_dict``), sends the ``ApprovalResponseEvent`` and finishes the run.

The agent's memory is pickled with the context (``JsonPickleSerializer``): both processes must run
the same code. Both record what the tool really did in a file, so the parent can check it ran exactly once.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from tests.sessions._workers import CTX

LC_PACK = Path(__file__).resolve().parent.parent / "langchain" / "packs" / "langchain-test.yaml"


def _ran(out: str, line: str) -> None:
    with open(out, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _langgraph(db: str, checkpoints: str, out: str, thread: str, phase: str, answer: dict[str, Any] | None, q: Any) -> None:
    from langchain.agents import create_agent
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import StructuredTool
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.types import Command

    from fiveplane import ApprovalStore, Governor, SqlSessionStore
    from langchain_fiveplane import FiveplaneMiddleware, ScriptedChatModel, run_config, tool_calls

    def contracts_update_status(contract_id: str, status: str) -> str:
        """Change the status of a contract."""
        _ran(out, f"update {contract_id} {status}")
        return f"{contract_id} is now {status}"

    gov = Governor(LC_PACK, sessions=SqlSessionStore(db), approvals=ApprovalStore(db))
    turns: list[Any] = (
        [tool_calls(("contracts_update_status", {"contract_id": "C-7", "status": "signed"})), "C-7 is signed."]
        if phase == "start"
        else ["C-7 is signed."]
    )
    agent = create_agent(
        ScriptedChatModel(turns=turns),
        [StructuredTool.from_function(contracts_update_status)],
        middleware=[
            FiveplaneMiddleware(gov, agent="sales-assistant", tool_map={"contracts_update_status": "contracts.update_status"})
        ],
        checkpointer=SqliteSaver(sqlite3.connect(checkpoints, check_same_thread=False)),
    )
    config = run_config(user="rep-1", roles=["sales-rep"], thread_id=thread, purpose="sales-support")
    if phase == "start":
        result = agent.invoke({"messages": [HumanMessage("Mark contract C-7 signed.")]}, config)
        [pause] = result["__interrupt__"]
        q.put({"approval_id": pause.value["fiveplane"]["approval_id"]})
    else:
        result = agent.invoke(Command(resume=answer), config)
        q.put({"answer": str(result["messages"][-1].content), "paused": bool(result.get("__interrupt__"))})


def run_langgraph(
    db: str, checkpoints: str, out: str, thread: str, phase: str, answer: dict[str, Any] | None = None
) -> dict[str, Any]:
    q = CTX.Queue()
    p = CTX.Process(target=_langgraph, args=(db, checkpoints, out, thread, phase, answer, q))
    p.start()
    try:
        got = q.get(timeout=240)
    finally:
        p.join(60)
    assert p.exitcode == 0, f"the {phase} process failed (exit {p.exitcode})"
    return dict(got)


def _llamaindex(db: str, ctx_file: str, out: str, phase: str, answer: dict[str, Any] | None, q: Any) -> None:
    import asyncio

    from llama_index.core.agent.workflow import AgentOutput, FunctionAgent
    from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
    from llama_index.core.llms.mock import MockFunctionCallingLLM
    from llama_index.core.utils import get_tokenizer
    from llama_index.core.workflow import Context, JsonPickleSerializer
    from llama_index.tools.fiveplane import ApprovalRequestEvent, ApprovalResponseEvent, govern_tools

    get_tokenizer()  # LlamaIndex's bundled tiktoken file: the restored memory needs it, never a download

    from fiveplane import ApprovalStore, Governor, SqlSessionStore, approver
    from tests.llamaindex._support import RAG_PACK as PACK
    from tests.llamaindex._support import USER

    def issue_refund(ticket_id: str, amount: float) -> str:
        """Refund a support ticket."""
        _ran(out, f"refund {ticket_id} {amount}")
        return f"refunded {amount} on {ticket_id}"

    def script(messages: Any, **kwargs: Any) -> ChatMessage:
        if any(m.role == MessageRole.TOOL for m in messages):
            return ChatMessage(role=MessageRole.ASSISTANT, content="Refunded.")
        call = ToolCallBlock(tool_call_id="c1", tool_name="issue_refund", tool_kwargs={"ticket_id": "4411", "amount": 40})
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])

    gov = Governor(PACK, sessions=SqlSessionStore(db), approvals=ApprovalStore(db))
    tools = govern_tools([issue_refund], gov, policy_tools={"issue_refund": "refunds.issue"})
    agent = FunctionAgent(
        name="support-assistant", description="support", tools=tools, llm=MockFunctionCallingLLM(response_generator=script)
    )

    async def start() -> dict[str, Any]:
        with gov.run([USER, {"kind": "agent", "id": "support-assistant"}], session_id="s-li-resume", purpose="customer-support"):
            handler = agent.run(user_msg="Handle ticket 4411.")
            async for ev in handler.stream_events():
                if isinstance(ev, ApprovalRequestEvent):
                    assert handler.ctx is not None
                    saved = json.dumps(handler.ctx.to_dict(serializer=JsonPickleSerializer()))
                    await asyncio.to_thread(Path(ctx_file).write_text, saved)
                    await handler.cancel_run()
                    return {"approval_id": ev.approval_id}
        raise AssertionError("the run never asked for approval")

    async def resume() -> dict[str, Any]:
        saved = await asyncio.to_thread(Path(ctx_file).read_text)
        ctx = Context.from_dict(agent, json.loads(saved), serializer=JsonPickleSerializer())
        assert answer is not None
        with gov.run([USER, {"kind": "agent", "id": "support-assistant"}], session_id="s-li-resume", purpose="customer-support"):
            handler = agent.run(ctx=ctx)
            assert handler.ctx is not None
            handler.ctx.send_event(ApprovalResponseEvent.approve(answer["approval_id"], approver("lead-2", ["support-lead"])))
            out_ = await handler
        assert isinstance(out_, AgentOutput)
        return {"answer": str(out_.response.content)}

    q.put(asyncio.run(start() if phase == "start" else resume()))


def run_llamaindex(db: str, ctx_file: str, out: str, phase: str, answer: dict[str, Any] | None = None) -> dict[str, Any]:
    q = CTX.Queue()
    p = CTX.Process(target=_llamaindex, args=(db, ctx_file, out, phase, answer, q))
    p.start()
    try:
        got = q.get(timeout=240)
    finally:
        p.join(60)
    assert p.exitcode == 0, f"the {phase} process failed (exit {p.exitcode})"
    return dict(got)
