"""Evidence from LlamaIndex's instrumentation: LLM calls, retrievals and tool calls, joined by span ids.

LlamaIndex's dispatcher swallows every exception its handlers raise, so these handlers only
**observe**: enforcement happens in the governed tools and retrieval filters. Each record is
handed to a ``record_event(kind, payload)`` callable (the ledger's ``record_event``, a list, a log
sink...); payloads hold identifiers, names, timings and SHA-256 digests, never prompts, documents or
tool results (those reach the ledger, redacted, through the Governor's decisions).

Kinds:

``llamaindex.span``
    A component's span ended (tools, retrievers, postprocessors, LLMs, query/chat engines and agents
    by default): ``span_id``, ``parent_span_id`` (the nearest *recorded* ancestor, so the recorded
    spans form a tree), ``name``, ``category``, ``component``, ``tool``, ``session_id``, ``status``
    (``ok`` / ``error`` / ``paused``), ``error``, ``started_at``, ``duration_ms``, and for tools
    ``is_error`` / ``result_digest``, for retrievers and postprocessors ``node_ids``.
``llamaindex.llm``
    An LLM chat or completion ended: ``span_id``, ``event_id``, ``mode``, ``messages``,
    ``response_digest``, ``tool_calls`` (the names the model proposed).
``llamaindex.retrieval``
    A retriever returned: ``span_id``, ``event_id``, ``query_digest``, ``node_ids``.
``llamaindex.decision``
    The Governor decided an action while a span was active: ``action_id``, ``span_id``,
    ``session_id``, ``point``, ``tool``, ``verdict``, ``rule_ids``. This joins the ledger's decision
    records (by ``action_id``) to the spans above (by ``span_id``).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, Self

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.chat_engine.types import BaseChatEngine
from llama_index.core.instrumentation import Dispatcher, get_dispatcher  # type: ignore[attr-defined]  # re-exported
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMCompletionEndEvent
from llama_index.core.instrumentation.events.retrieval import RetrievalEndEvent
from llama_index.core.instrumentation.span import SimpleSpan, active_span_id
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.response_synthesizers.base import BaseSynthesizer
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.tools import BaseTool, ToolOutput
from llama_index.core.workflow import Workflow
from pydantic import PrivateAttr

from fiveplane import Action, Decision, Governor, current_run, digest_value

from ._common import is_control_flow

__all__ = [
    "DEFAULT_CATEGORIES",
    "FiveplaneEventHandler",
    "FiveplaneInstrumentation",
    "FiveplaneSpanHandler",
    "RecordEvent",
]

log = logging.getLogger("fiveplane.llamaindex")

RecordEvent = Callable[[str, dict[str, Any]], object]
"""``record_event(kind, payload)``: e.g. ``functools.partial(ledger.record, durable=False)``."""

DEFAULT_CATEGORIES: frozenset[str] = frozenset({"agent", "chat", "llm", "postprocessor", "query", "retriever", "tool"})
"""Span categories recorded by default (``embedding``, ``synthesis`` and ``other`` are left out)."""


class _Recorder:
    """Calls ``record_event`` and never raises (an observer must not change what it observes)."""

    def __init__(self, record_event: RecordEvent) -> None:
        self.record_event = record_event
        self.failures = 0
        self._lock = threading.Lock()

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        try:
            self.record_event(kind, {k: v for k, v in payload.items() if v is not None})
        except Exception:
            with self._lock:
                self.failures += 1
                first = self.failures == 1
            log.warning("could not record %s evidence", kind, exc_info=first)


def _classify(instance: Any) -> tuple[str, str | None]:
    """(category, tool name) of the component a span belongs to."""
    if instance is None:
        return "other", None
    if isinstance(instance, BaseTool):
        try:
            return "tool", instance.metadata.get_name()
        except Exception:  # noqa: BLE001 - a tool without a name is still a tool
            return "tool", None
    for cls, category in (
        (BaseRetriever, "retriever"),
        (BaseNodePostprocessor, "postprocessor"),
        (BaseLLM, "llm"),
        (BaseEmbedding, "embedding"),
        (BaseQueryEngine, "query"),
        (BaseChatEngine, "chat"),
        (BaseSynthesizer, "synthesis"),
        (Workflow, "agent"),
    ):
        if isinstance(instance, cls):
            return category, None
    return "other", None


def _span_name(id_: str) -> str:
    # Dispatcher span ids are "<Class>.<method>-<uuid4>" (a uuid4 has four hyphens).
    parts = id_.rsplit("-", 5)
    return parts[0] if len(parts) == 6 else id_


class FiveplaneSpanHandler(BaseSpanHandler[SimpleSpan]):
    """Records a ``llamaindex.span`` when a component's span ends (observer only).

    Args:
        record_event: ``record_event(kind, payload)``.
        categories: the span categories to record (``None``: all). Spans of other categories are
            followed but not recorded; a recorded span's parent is its nearest recorded ancestor.
    """

    _record: _Recorder = PrivateAttr()
    _categories: frozenset[str] | None = PrivateAttr()

    def __init__(self, record_event: RecordEvent, *, categories: frozenset[str] | None = DEFAULT_CATEGORIES) -> None:
        super().__init__()
        self._record = record_event if isinstance(record_event, _Recorder) else _Recorder(record_event)
        self._categories = categories

    @classmethod
    def class_name(cls) -> str:
        return "FiveplaneSpanHandler"

    @property
    def failures(self) -> int:
        """How many records ``record_event`` refused."""
        return self._record.failures

    def new_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        parent_span_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        category, tool = _classify(instance)
        recorded = self._categories is None or category in self._categories
        ancestor = parent_span_id
        if parent_span_id is not None:
            with self.lock:
                parent = self.open_spans.get(parent_span_id)
            if parent is not None and parent.metadata is not None and not parent.metadata["recorded"]:
                ancestor = parent.metadata["ancestor"]
        run = current_run()
        return SimpleSpan(
            id_=id_,
            parent_id=parent_span_id,
            tags=dict(tags or {}),
            metadata={
                "recorded": recorded,
                "ancestor": ancestor,
                "category": category,
                "tool": tool,
                "component": type(instance).__name__ if instance is not None else None,
                "session_id": run.session_id if run is not None else None,
            },
        )

    def _close(self, id_: str, status: str, extra: dict[str, Any]) -> SimpleSpan | None:
        with self.lock:
            span = self.open_spans.get(id_)
        if span is None:
            return None
        span.end_time = datetime.now()
        span.duration = (span.end_time - span.start_time).total_seconds()
        meta = span.metadata or {}
        if meta.get("recorded"):
            self._record(
                "llamaindex.span",
                {
                    "span_id": id_,
                    "parent_span_id": meta.get("ancestor"),
                    "name": _span_name(id_),
                    "category": meta.get("category"),
                    "component": meta.get("component"),
                    "tool": meta.get("tool"),
                    "session_id": meta.get("session_id"),
                    "status": status,
                    "started_at": span.start_time.isoformat(),
                    "duration_ms": round(span.duration * 1000, 3),
                    **extra,
                },
            )
        return span

    def prepare_to_exit_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        result: Any | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        return self._close(id_, "ok", _result_fields(result))

    def prepare_to_drop_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        if err is not None and is_control_flow(err):
            return self._close(id_, "paused", {})
        return self._close(id_, "error", {"error": type(err).__name__ if err is not None else None})


def _result_fields(result: Any) -> dict[str, Any]:
    if isinstance(result, ToolOutput):
        return {"is_error": result.is_error, "result_digest": digest_value(result.content)}
    if isinstance(result, list) and all(isinstance(n, NodeWithScore) for n in result):
        return {"node_ids": [n.node.node_id for n in result]}
    return {}


class FiveplaneEventHandler(BaseEventHandler):
    """Records ``llamaindex.llm`` and ``llamaindex.retrieval`` from instrumentation events (observer only)."""

    _record: _Recorder = PrivateAttr()

    def __init__(self, record_event: RecordEvent) -> None:
        super().__init__()
        self._record = record_event if isinstance(record_event, _Recorder) else _Recorder(record_event)

    @classmethod
    def class_name(cls) -> str:
        return "FiveplaneEventHandler"

    @property
    def failures(self) -> int:
        return self._record.failures

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        try:
            record = self._describe(event)
        except Exception:
            log.debug("could not describe %s", type(event).__name__, exc_info=True)
            return
        if record is not None:
            self._record(*record)

    @staticmethod
    def _describe(event: BaseEvent) -> tuple[str, dict[str, Any]] | None:
        base = {"span_id": event.span_id, "event_id": event.id_}
        if isinstance(event, LLMChatEndEvent):
            message = event.response.message if event.response is not None else None
            return "llamaindex.llm", {
                **base,
                "mode": "chat",
                "messages": len(event.messages),
                "response_digest": digest_value(message.content) if message is not None else None,
                "tool_calls": _tool_calls(message),
            }
        if isinstance(event, LLMCompletionEndEvent):
            return "llamaindex.llm", {
                **base,
                "mode": "completion",
                "prompt_digest": digest_value(event.prompt),
                "response_digest": digest_value(event.response.text),
            }
        if isinstance(event, RetrievalEndEvent):
            query = event.str_or_query_bundle
            text = query.query_str if isinstance(query, QueryBundle) else str(query)
            return "llamaindex.retrieval", {
                **base,
                "query_digest": digest_value(text),
                "node_ids": [n.node.node_id for n in event.nodes],
            }
        return None


def _tool_calls(message: Any) -> list[str]:
    if message is None:
        return []
    names = [str(b.tool_name) for b in getattr(message, "blocks", []) if type(b).__name__ == "ToolCallBlock"]
    for call in (getattr(message, "additional_kwargs", None) or {}).get("tool_calls", []) or []:
        name = getattr(call, "tool_name", None) or (call.get("function", {}).get("name") if isinstance(call, dict) else None)
        if name:
            names.append(str(name))
    return names


class FiveplaneInstrumentation:
    """Attaches the span and event handlers to a dispatcher and joins the Governor's decisions to spans.

    Args:
        record_event: ``record_event(kind, payload)``; with the ledger,
            ``functools.partial(ledger.record, durable=False)`` (queued, never blocks a loop).
        governor: when given, every decision made while attached is recorded as
            ``llamaindex.decision`` with the active span id.
        categories: span categories to record (``None``: all).
        dispatcher: where to attach (default: LlamaIndex's root dispatcher, which sees everything).

    Use ``with FiveplaneInstrumentation(...):`` or ``attach()`` / ``detach()``.
    """

    DEFAULT_CATEGORIES: frozenset[str] = DEFAULT_CATEGORIES
    """Span categories recorded by default; e.g. ``DEFAULT_CATEGORIES | {"embedding"}``."""

    def __init__(
        self,
        record_event: RecordEvent,
        *,
        governor: Governor | None = None,
        categories: frozenset[str] | None = DEFAULT_CATEGORIES,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self._record = _Recorder(record_event)
        self.span_handler = FiveplaneSpanHandler(self._record, categories=categories)
        self.event_handler = FiveplaneEventHandler(self._record)
        self.governor = governor
        self.dispatcher = dispatcher
        self._attached: Dispatcher | None = None
        self._listening = False

    @property
    def failures(self) -> int:
        """How many records ``record_event`` refused (each is also logged)."""
        return self._record.failures

    @property
    def attached(self) -> bool:
        return self._attached is not None

    def attach(self) -> Self:
        """Start observing (idempotent)."""
        if self._attached is not None:
            return self
        d = self.dispatcher or get_dispatcher()
        d.add_span_handler(self.span_handler)
        d.add_event_handler(self.event_handler)
        self._attached = d
        if self.governor is not None and not self._listening:
            # Governor listeners cannot be removed: this one goes quiet when detached.
            self.governor.add_listener(self._on_decision)
            self._listening = True
        return self

    def detach(self) -> None:
        """Stop observing (idempotent)."""
        d, self._attached = self._attached, None
        if d is None:
            return
        d.span_handlers = [h for h in d.span_handlers if h is not self.span_handler]
        d.event_handlers = [h for h in d.event_handlers if h is not self.event_handler]

    def __enter__(self) -> Self:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _on_decision(self, action: Action, decision: Decision) -> None:
        if self._attached is None:
            return
        try:
            payload = {
                "action_id": action.action_id,
                "span_id": active_span_id.get(),
                "session_id": action.session_id,
                "point": action.point.value,
                "tool": action.tool,
                "verdict": decision.verdict.value,
                "rule_ids": list(decision.rule_ids),
            }
        except Exception:
            log.debug("could not describe a decision", exc_info=True)
            return
        self._record("llamaindex.decision", payload)
