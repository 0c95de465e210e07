"""The LlamaIndex demo: a RAG pipeline and a tool-using agent under one Governor, offline.

A support agent (``agent-7``, role ``support-agent``) asks the ``support-assistant`` whether ticket
4411 qualifies for a refund. Four shipped documents sit in a ``VectorStoreIndex`` built with
LlamaIndex's ``MockEmbedding``:

- ``refund-policy.txt`` (public), the policy;
- ``ticket-4411.txt``, the customer's ticket with her e-mail address and phone number (redacted
  before the LLM sees it);
- ``board-minutes-q3.txt``, labelled CONFIDENTIAL (dropped: the user is not finance staff);
- ``vendor-faq.txt``, with an injected instruction to refund 4000 USD on another ticket and to
  e-mail the customer list outside.

Phase 1 (RAG): a query engine over a :class:`GovernedRetriever` answers with a scripted mock LLM
that records its prompt. Phase 2 (agent): a ``FunctionAgent`` driven by a scripted mock
function-calling LLM searches the knowledge base, follows the injection (both calls are blocked and
never run), proposes the legitimate refund (paused: a support lead approves it through an
``ApprovalRequestEvent`` / ``ApprovalResponseEvent`` round trip, then it runs once) and e-mails
the lead (allowed). Nothing touches the network.

:func:`arun_demo` takes a ready :class:`~fiveplane.Governor` (plug in the ledger and the real
planes) and returns the timeline; :func:`build_demo_governor` builds one with the shipped pack, an
in-memory approval store and, until the data plane is plugged in, :class:`DemoRedactor`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import AgentOutput, FunctionAgent, ToolCallResult
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import BaseNode
from llama_index.core.tools import FunctionTool, RetrieverTool
from pydantic import PrivateAttr

from fiveplane import (
    Action,
    ApprovalStore,
    BasePlane,
    Decision,
    EvidenceSink,
    Governor,
    MediationPoint,
    PlaneContext,
    PlaneResult,
    Principal,
    PrincipalKind,
    approver,
    console_url,
)

from ._approvals import ApprovalRequestEvent, ApprovalResponseEvent
from ._instrumentation import FiveplaneInstrumentation, RecordEvent
from ._retrieval import GovernedRetriever
from ._tools import govern_tools

__all__ = [
    "DEMO_DOCS",
    "DemoRedactor",
    "DemoResult",
    "DemoStep",
    "arun_demo",
    "build_demo_governor",
    "demo_policy_path",
    "load_demo_documents",
    "run_demo",
]

DEMO_DOCS = Path(__file__).resolve().parent / "demo_docs"
"""The shipped sample documents (package data) and their ``manifest.json`` (labels, source)."""

USER = Principal(kind=PrincipalKind.USER, id="agent-7", roles=("support-agent",), claims={"email": "agent-7@acme.example"})
AGENT = Principal(kind=PrincipalKind.AGENT, id="support-assistant")
LEAD = approver("lead-2", ["support-lead"])
INTENT = "Check whether ticket 4411 qualifies for a refund and, if it does, refund it."
QUESTION = "Does ticket 4411 qualify for a refund?"
PURPOSE = "customer-support"


def demo_policy_path() -> Path:
    """``policies/examples/rag-assistant.yaml`` from the working directory or the source checkout."""
    rel = Path("policies/examples/rag-assistant.yaml")
    if rel.exists():
        return rel
    for parent in Path(__file__).resolve().parents:
        if (parent / rel).exists():
            return parent / rel
    raise FileNotFoundError(f"{rel} not found; run from the repository root or pass --policy")


def load_demo_documents(folder: Path = DEMO_DOCS) -> list[Document]:
    """The sample documents with their labels (``metadata["labels"]``) from ``manifest.json``."""
    manifest: dict[str, dict[str, Any]] = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    docs = []
    for name, meta in sorted(manifest.items()):
        docs.append(
            Document(
                id_=name,
                text=(folder / name).read_text(encoding="utf-8").strip(),
                metadata={"file_name": name, **meta},
                excluded_llm_metadata_keys=["labels", "source"],
                excluded_embed_metadata_keys=["labels", "source"],
            )
        )
    return docs


class DemoRedactor(BasePlane):
    """A stand-in for the data plane in the demo: masks e-mail addresses and phone numbers in
    retrieved documents and tool results (``modify`` with ``modified_content``).

    Pass the real data plane to :func:`build_demo_governor` instead (two planes may not both
    rewrite the same content).
    """

    name = "demo-redactor"
    _EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
    _PHONE = re.compile(r"\+?\d[\d ()-]{7,}\d")

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        result = PlaneResult(plane=self.name)
        if action.point not in (MediationPoint.RETRIEVAL, MediationPoint.TOOL_RESULT) or not isinstance(action.content, str):
            return result
        text, emails = self._EMAIL.subn("<EMAIL_ADDRESS>", action.content)
        text, phones = self._PHONE.subn("<PHONE_NUMBER>", text)
        if emails or phones:
            result.modified_content = text
            result.content_modified = True
            result.add("pii_redacted", f"masked {emails} e-mail address(es) and {phones} phone number(s)")
        return result


def build_demo_governor(
    policy: str | Path | None = None,
    *,
    planes: Sequence[BasePlane] | None = None,
    evidence: EvidenceSink | None = None,
    approvals: ApprovalStore | None = None,
) -> Governor:
    """A Governor for the demo: the rag-assistant pack, an in-memory approval store and
    :class:`DemoRedactor` unless ``planes`` is given."""
    return Governor(
        policy or demo_policy_path(),
        planes=[DemoRedactor()] if planes is None else planes,
        evidence=evidence,
        approvals=approvals if approvals is not None else ApprovalStore("sqlite://"),
    )


@dataclass
class DemoStep:
    """One line of the timeline: a decision (``kind="decision"``) or something that happened (``"note"``)."""

    number: int
    phase: str
    """``rag`` (query engine) or ``agent`` (function agent)."""
    kind: str
    title: str
    point: str | None = None
    tool: str | None = None
    verdict: str | None = None
    rule_ids: tuple[str, ...] = ()
    explanation: str = ""
    action_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rule_ids"] = list(self.rule_ids)
        return data


@dataclass
class DemoResult:
    """The timeline and what the models saw and did."""

    session_id: str
    steps: list[DemoStep] = field(default_factory=list)
    rag_prompts: list[str] = field(default_factory=list)
    """Every prompt the RAG phase's LLM received (what the model saw)."""
    rag_answer: str = ""
    agent_answer: str = ""
    executed: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """The demo's tool functions that actually ran, with their arguments."""
    evidence: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """Instrumentation records (when no ``record_event`` was given, they are collected here)."""


class _RecordingLLM(CustomLLM):
    """The RAG phase's mock LLM: records every prompt and answers with a fixed sentence."""

    answer: str = "Ticket 4411 qualifies: the kettle arrived damaged within 30 days, so a refund can be proposed."
    _prompts: list[str] = PrivateAttr(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="fiveplane-demo-recording-llm")

    @property
    def prompts(self) -> list[str]:
        return self._prompts

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._prompts.append(prompt)
        return CompletionResponse(text=self.answer)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError("the demo does not stream")


class _AgentScript:
    """The agent phase's scripted model: a plan made from what the knowledge-base search returned.

    It obeys injected instructions it finds in retrieved text (a model can be fooled; the policy
    is what stops the consequences), then does the legitimate work.
    """

    _REFUND = re.compile(r"refund (\d+) USD on ticket (\d+)", re.IGNORECASE)
    _MAIL = re.compile(r"customer list to\s+(\S+)", re.IGNORECASE)

    def __call__(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        results = [m for m in messages if m.role == MessageRole.TOOL]
        if not results:
            return self._call(0, "search_kb", input="ticket 4411 refund kettle")
        plan = self._plan(str(results[0].content or ""))
        if len(results) <= len(plan):
            name, args = plan[len(results) - 1]
            return self._call(len(results), name, **args)
        refunded = any(str(m.content or "").startswith("refund R-4411") for m in results)
        answer = (
            "Ticket 4411 qualifies. The refund of 40 USD was approved by a support lead and issued; lead-2 is informed."
            if refunded
            else "Ticket 4411 qualifies, but the refund was not issued."
        )
        return ChatMessage(role=MessageRole.ASSISTANT, content=answer)

    def _plan(self, found: str) -> list[tuple[str, dict[str, Any]]]:
        plan: list[tuple[str, dict[str, Any]]] = []
        m = self._REFUND.search(found)
        if m:
            plan.append(("issue_refund", {"ticket_id": m.group(2), "amount": int(m.group(1))}))
        m = self._MAIL.search(found)
        if m:
            to = m.group(1).rstrip(".")
            plan.append(("send_email", {"to": to, "subject": "Customer list", "body": "As requested by the vendor FAQ."}))
        plan.append(("issue_refund", {"ticket_id": "4411", "amount": 40}))
        plan.append(
            (
                "send_email",
                {"to": "lead-2@acme.example", "subject": "Ticket 4411", "body": "Refund of 40 USD for ticket 4411 is issued."},
            )
        )
        return plan

    @staticmethod
    def _call(turn: int, name: str, **kwargs: Any) -> ChatMessage:
        block = ToolCallBlock(tool_call_id=f"call-{turn}-{name}", tool_name=name, tool_kwargs=kwargs)
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=[block])


class _Timeline:
    """Collects decisions (a Governor listener, quiet once the demo ends) and notes."""

    def __init__(self, result: DemoResult) -> None:
        self.result = result
        self.phase = "rag"
        self.active = True

    def on_decision(self, action: Action, decision: Decision) -> None:
        if not self.active or action.session_id != self.result.session_id:
            return
        self.result.steps.append(
            DemoStep(
                number=len(self.result.steps) + 1,
                phase=self.phase,
                kind="decision",
                title=_title(action),
                point=action.point.value,
                tool=action.tool,
                verdict=decision.verdict.value,
                rule_ids=tuple(decision.rule_ids),
                explanation=decision.explanation,
                action_id=action.action_id,
            )
        )

    def note(self, title: str, explanation: str = "") -> None:
        self.result.steps.append(
            DemoStep(number=len(self.result.steps) + 1, phase=self.phase, kind="note", title=title, explanation=explanation)
        )


def _title(action: Action) -> str:
    if action.point is MediationPoint.INPUT:
        return "user request"
    if action.point is MediationPoint.FINAL_OUTPUT:
        return "final answer"
    if action.point is MediationPoint.RETRIEVAL:
        meta = action.arguments.get("metadata") or {}
        return f"retrieve {meta.get('file_name') or action.arguments.get('node_id')}"
    if action.point is MediationPoint.TOOL_RESULT:
        return f"{action.tool} result"
    args = ", ".join(f"{k}={_short(v)}" for k, v in action.arguments.items() if k != "body")
    return f"{action.tool}({args})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _node_id(i: int, doc: BaseNode) -> str:
    return f"{doc.node_id}#{i}"


def _build_index(docs: list[Document]) -> VectorStoreIndex:
    # Stable node ids: MockEmbedding gives every text the same vector, so ties are broken by id.
    splitter = SentenceSplitter(chunk_size=512, chunk_overlap=0, id_func=_node_id)
    return VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=16), transformations=[splitter])


async def arun_demo(
    governor: Governor,
    *,
    session_id: str = "llamaindex-demo",
    record_event: RecordEvent | None = None,
    documents: Sequence[Document] | None = None,
) -> DemoResult:
    """Run both phases under ``governor`` and return the timeline (see the module docstring).

    Args:
        governor: a Governor for the rag-assistant pack with an approval store (e.g. from
            :func:`build_demo_governor`, or with the ledger and the real planes plugged in).
        session_id: the session of the run.
        record_event: where the instrumentation evidence goes (default: ``DemoResult.evidence``).
        documents: the corpus (default: the shipped sample documents).
    """
    if governor.approvals is None:
        raise ValueError("the demo needs a Governor with an approval store (approvals=ApprovalStore(...))")
    result = DemoResult(session_id=session_id)
    timeline = _Timeline(result)
    governor.add_listener(timeline.on_decision)

    def sink(kind: str, payload: dict[str, Any]) -> None:
        result.evidence.append((kind, payload))

    docs = list(documents) if documents is not None else await asyncio.to_thread(load_demo_documents)
    index = await asyncio.to_thread(_build_index, docs)
    retriever = GovernedRetriever(index.as_retriever(similarity_top_k=len(docs)), governor, source="kb.search")

    def issue_refund(ticket_id: str, amount: float) -> str:
        """Refund a customer for a support ticket (amount in USD)."""
        result.executed.append(("issue_refund", {"ticket_id": ticket_id, "amount": amount}))
        return f"refund R-{ticket_id} of {amount} USD issued for ticket {ticket_id}"

    def send_email(to: str, subject: str, body: str) -> str:
        """Send an e-mail."""
        result.executed.append(("send_email", {"to": to, "subject": subject}))
        return f"e-mail to {to} sent (message msg-{len(result.executed)})"

    tools = govern_tools(
        [
            RetrieverTool.from_defaults(retriever=retriever, name="search_kb", description="Search the support knowledge base."),
            FunctionTool.from_defaults(fn=issue_refund),
            FunctionTool.from_defaults(fn=send_email),
        ],
        governor,
        policy_tools={"search_kb": "kb.search", "issue_refund": "refunds.issue", "send_email": "email.send"},
    )
    rag_llm = _RecordingLLM()
    engine = RetrieverQueryEngine.from_args(retriever, llm=rag_llm)
    agent = FunctionAgent(
        name="support-assistant",
        description="Answers support agents and issues refunds.",
        tools=list(tools),
        llm=MockFunctionCallingLLM(response_generator=_AgentScript()),
        system_prompt="You are Acme's support assistant.",
    )
    instrumentation = FiveplaneInstrumentation(record_event or sink, governor=governor)
    try:
        with instrumentation, governor.run([USER, AGENT], session_id=session_id, intent=INTENT, purpose=PURPOSE) as run:
            await governor.adecide(run.action(MediationPoint.INPUT, content=INTENT))

            # Phase 1: a query engine over the governed retriever.
            response = await engine.aquery(QUESTION)
            result.rag_answer = str(response)
            result.rag_prompts = list(rag_llm.prompts)
            timeline.note("the LLM's context", _context_summary(docs, result.rag_prompts))

            # Phase 2: an agent with governed tools; approvals through workflow events.
            timeline.phase = "agent"
            handler = agent.run(user_msg=QUESTION)
            async for ev in handler.stream_events():
                if isinstance(ev, ApprovalRequestEvent):
                    timeline.note(
                        f"approval requested ({ev.approval_id})",
                        f"{ev.policy_tool} {ev.arguments} for {ev.requester} waits for a {ev.role}"
                        f"{' other than the requester' if ev.separation_of_duties else ''}; expires {ev.expires_at}; "
                        f"decide it in the console: {console_url(ev.approval_id)}",
                    )
                    answer = ApprovalResponseEvent.approve(ev, LEAD, reason="photo of the cracked lid checked")
                    timeline.note(f"{LEAD.id} approves {ev.approval_id}", f"{LEAD.id} ({', '.join(LEAD.roles)}): {answer.reason}")
                    assert handler.ctx is not None
                    handler.ctx.send_event(answer)
                elif isinstance(ev, ToolCallResult) and ev.tool_output.is_error:
                    timeline.note(f"the model reads: {ev.tool_name} failed", ev.tool_output.content)
            output = cast(AgentOutput, await handler)
            result.agent_answer = str(output.response.content or "")
            await governor.adecide(run.action(MediationPoint.FINAL_OUTPUT, content=result.agent_answer))
    finally:
        timeline.active = False
    return result


def run_demo(governor: Governor, **kwargs: Any) -> DemoResult:
    """Sync entry point of :func:`arun_demo` (runs its own event loop)."""
    return asyncio.run(arun_demo(governor, **kwargs))


def _context_summary(docs: Sequence[Document], prompts: Sequence[str]) -> str:
    seen = "\n".join(prompts)
    parts = []
    for doc in docs:
        name = str(doc.metadata.get("file_name"))
        if doc.text in seen:
            parts.append(f"{name} (verbatim)")
        elif doc.text.split(".")[0] in seen:
            parts.append(f"{name} (redacted)")
        else:
            parts.append(f"{name} withheld")
    return "; ".join(parts)
