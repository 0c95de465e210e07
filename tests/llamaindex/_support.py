"""Helpers for the LlamaIndex adapter tests: an in-memory evidence sink, a stand-in data plane,
runs, and an event-loop runner with BlockBuster active."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from blockbuster import blockbuster_ctx

from fiveplane import (
    Action,
    BasePlane,
    Decision,
    MediationPoint,
    Outcome,
    OutcomeStatus,
    PlaneContext,
    PlaneResult,
    Principal,
    PrincipalKind,
    Run,
)
from tests.conftest import POLICIES

RAG_PACK = POLICIES / "examples" / "rag-assistant.yaml"
USER = Principal(kind=PrincipalKind.USER, id="agent-7", roles=("support-agent",))
FINANCE = Principal(kind=PrincipalKind.USER, id="fin-1", roles=("finance",))
AGENT = Principal(kind=PrincipalKind.AGENT, id="support-assistant")
MODES = ["sync", "async"]

LLAMA_INDEX_WARNINGS = [
    # llama-index-workflows inspects pydantic agents with inspect.getmembers (pydantic deprecations)
    pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect"),
    # ReActAgent (llama-index-core 0.14.25) still calls ctx.is_running inside a step
    pytest.mark.filterwarnings("ignore:is_running called from within a step:DeprecationWarning"),
]
"""Warnings LlamaIndex itself raises; every test module of this directory ignores them."""

T = TypeVar("T")


def make_run(user: Principal = USER, session_id: str = "s-1") -> Run:
    return Run(principal=(user, AGENT), session_id=session_id, intent="help with ticket 4411", purpose="customer-support")


# ---- an evidence sink that keeps everything ----------------------------------------------------


@dataclass
class MemorySink:
    """EvidenceSink keeping (action, decision) and (action, outcome) pairs in order."""

    decisions: list[tuple[Action, Decision]] = field(default_factory=list)
    outcomes: list[tuple[Action, Outcome]] = field(default_factory=list)

    def record_decision(self, action: Action, decision: Decision, *, durable: bool) -> None:
        self.decisions.append((action, decision))

    def record_outcome(self, action: Action, outcome: Outcome, *, durable: bool) -> None:
        self.outcomes.append((action, outcome))

    async def arecord_decision(self, action: Action, decision: Decision, *, durable: bool) -> None:
        self.record_decision(action, decision, durable=durable)

    async def arecord_outcome(self, action: Action, outcome: Outcome, *, durable: bool) -> None:
        self.record_outcome(action, outcome, durable=durable)

    def outcome_of(self, action_id: str) -> OutcomeStatus | None:
        found = [o.status for a, o in self.outcomes if a.action_id == action_id]
        return found[-1] if found else None

    def verdicts(self, point: str, tool: str | None = None) -> list[str]:
        return [d.verdict.value for a, d in self.decisions if a.point.value == point and (tool is None or a.tool == tool)]


# ---- a stand-in for the data plane ---------------------------------------------------------------


class RedactPlane(BasePlane):
    """Rewrites content (retrievals, tool results) and arguments the way the data plane will."""

    name = "test-redactor"

    def __init__(
        self, secrets: tuple[str, ...] = ("jane.roe@example.com", "+1 415 555 0134"), rewrite_args: dict[str, Any] | None = None
    ) -> None:
        self.secrets = secrets
        self.rewrite_args = rewrite_args or {}

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        result = PlaneResult(plane=self.name)
        if action.point is MediationPoint.TOOL_CALL and action.tool in self.rewrite_args:
            result.modified_arguments = {**action.arguments, **self.rewrite_args[action.tool]}
            result.add("minimized", "arguments rewritten")
        if isinstance(action.content, str) and any(s in action.content for s in self.secrets):
            text = action.content
            for s in self.secrets:
                text = text.replace(s, "<REDACTED>")
            result.modified_content = text
            result.content_modified = True
            result.add("pii_redacted", "PII redacted")
        meta = action.arguments.get("metadata")
        if action.point is MediationPoint.RETRIEVAL and isinstance(meta, dict) and "customer_email" in meta:
            result.modified_arguments = {**action.arguments, "metadata": {**meta, "customer_email": "<REDACTED>"}}
        return result


class BrokenPlane(BasePlane):
    name = "broken"

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        raise RuntimeError("plane exploded")


WATCHED = ["fiveplane", "llama_index.tools.fiveplane"]
"""BlockBuster flags blocking calls made on the event loop from these packages (and what they call).
LlamaIndex's own blocking calls elsewhere (e.g. ``CondensePlusContextChatEngine.achat`` counts tokens
through ``asyncio_run`` in a joined thread) are LlamaIndex's, not ours."""


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine in a fresh event loop with BlockBuster active: a blocking call on the loop fails."""

    async def main() -> T:
        with blockbuster_ctx(WATCHED):
            return await factory()

    return asyncio.run(main())


# ---- LlamaIndex pieces ------------------------------------------------------------------------------


def _llama() -> Any:  # imported lazily so this module imports without llama-index for the guard in conftest
    from llama_index.core.base.llms.types import CompletionResponse, LLMMetadata
    from llama_index.core.llms import CustomLLM
    from llama_index.core.llms.callbacks import llm_completion_callback
    from pydantic import PrivateAttr

    class RecordingLLM(CustomLLM):
        """A mock LLM that keeps every prompt it receives and answers with a fixed sentence."""

        _prompts: list[str] = PrivateAttr(default_factory=list)

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="recording")

        @property
        def prompts(self) -> list[str]:
            return self._prompts

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            self._prompts.append(prompt)
            return CompletionResponse(text="fixed answer")

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            raise NotImplementedError

    return RecordingLLM


def recording_llm() -> Any:
    return _llama()()
