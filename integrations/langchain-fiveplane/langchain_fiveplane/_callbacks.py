"""``FiveplaneCallbackHandler``: LangChain callback events as evidence — an observer, never enforcement.

LangChain runs callback handlers inside ``try/except`` and carries on when one fails (unless the
handler sets ``raise_error``), and a callback cannot rewrite inputs or outputs. So this handler only
*records*: model, tool, retriever and agent-run events, with digests of inputs and outputs (not the
payloads themselves, unless asked), to an event sink such as the fiveplane ledger
(``Ledger.record_event``) and to an in-memory list. Enforcement is the middleware's and the governed
tools' job; ``fiveplane coverage`` reports a tool that only this handler sees as ungoverned.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from fiveplane import digest_value, jsonable

__all__ = ["CallbackEvent", "EventSink", "FiveplaneCallbackHandler"]

logger = logging.getLogger(__name__)


class EventSink(Protocol):
    """Where events go: the shape of ``fiveplane`` ``Ledger.record_event``.

    ``metadata`` is hashed into the ledger and never erasable (identifiers only); ``payload`` is
    stored apart and can be erased.
    """

    def record_event(
        self,
        kind: str,
        metadata: dict[str, Any],
        payload: Any = None,
        *,
        action_id: str | None = None,
        session_id: str | None = None,
        durable: bool = True,
    ) -> Any: ...


@dataclass(frozen=True)
class CallbackEvent:
    """One recorded callback event."""

    kind: str
    """``langchain.<what>_<start|end|error>``, e.g. ``langchain.tool_end``."""
    run_id: str
    parent_run_id: str | None
    name: str | None
    session_id: str | None
    at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    payload: Any = None


def _name(serialized: dict[str, Any] | None, kwargs: dict[str, Any]) -> str | None:
    if kwargs.get("name"):
        return str(kwargs["name"])
    if serialized:
        if serialized.get("name"):
            return str(serialized["name"])
        ids = serialized.get("id")
        if isinstance(ids, list) and ids:
            return str(ids[-1])
    return None


def _convert(value: Any) -> Any:
    """LangChain types as JSON-able values (for :func:`fiveplane.jsonable`)."""
    if isinstance(value, BaseMessage):
        return {"type": value.type, "content": value.content}
    if isinstance(value, Document):
        return {"page_content": value.page_content, "metadata": value.metadata}
    return NotImplemented


def _jsonable(value: Any) -> Any:
    return jsonable(value, convert=_convert)


class FiveplaneCallbackHandler(BaseCallbackHandler):
    """Record LLM / chain / tool / retriever events as evidence (observer only).

    Example:
        ```python
        handler = FiveplaneCallbackHandler(ledger)          # or FiveplaneCallbackHandler() to keep them in memory
        agent.invoke(inputs, {"callbacks": [handler], **run_config(...)})
        handler.events                                      # what happened, in order
        ```

    Args:
        sink: receives every event (``record_event(kind, metadata, payload, session_id=..., durable=False)``).
        include_payloads: also store inputs and outputs as the (erasable) payload; by default only
            their SHA-256 digests are recorded, so the evidence does not become a copy of the data.
        redact: rewrites a payload before it is stored (e.g. the data plane's redaction).
        all_chains: record every chain / graph-node run; by default only the outermost run (the
            agent invocation) is recorded.
        keep: how many events to keep in memory (``events``).
    """

    raise_error = False  # an observer: a failing sink never stops the agent
    run_inline = False

    def __init__(
        self,
        sink: EventSink | None = None,
        *,
        include_payloads: bool = False,
        redact: Callable[[Any], Any] | None = None,
        all_chains: bool = False,
        keep: int = 10_000,
    ) -> None:
        super().__init__()
        self.sink = sink
        self.include_payloads = include_payloads
        self.redact = redact
        self.all_chains = all_chains
        self.events: deque[CallbackEvent] = deque(maxlen=keep)
        self.dropped = 0
        """Events the sink refused (logged; the agent carried on)."""
        self._started: dict[UUID, tuple[float, str | None, str | None]] = {}

    # ---- recording ------------------------------------------------------------------------------

    def _emit(
        self,
        kind: str,
        run_id: UUID,
        parent_run_id: UUID | None,
        *,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        data: Any = None,
        start: bool = False,
        session: str | None = None,
        **fields: Any,
    ) -> None:
        try:
            if start:
                self._started[run_id] = (time.perf_counter(), name, session)
                elapsed = None
            else:
                t0, started_name, started_session = self._started.pop(run_id, (None, None, None))
                name = name or started_name
                session = session or started_session
                elapsed = round((time.perf_counter() - t0) * 1000, 3) if t0 is not None else None
            meta: dict[str, Any] = {
                "run_id": str(run_id),
                "parent_run_id": str(parent_run_id) if parent_run_id else None,
                "name": name,
                **{k: v for k, v in fields.items() if v is not None},
            }
            if elapsed is not None:
                meta["duration_ms"] = elapsed
            payload = None
            if data is not None:
                value = _jsonable(data)
                meta["digest"] = digest_value(value)
                if self.include_payloads:
                    payload = self.redact(value) if self.redact else value
            event = CallbackEvent(
                kind=kind,
                run_id=str(run_id),
                parent_run_id=meta["parent_run_id"],
                name=name,
                session_id=session,
                at=datetime.now(UTC),
                metadata=meta,
                payload=payload,
            )
            self.events.append(event)
            if self.sink is not None:
                self.sink.record_event(kind, meta, payload, session_id=session, durable=False)
        except Exception:
            self.dropped += 1
            logger.exception("fiveplane callback handler could not record %s", kind)

    @staticmethod
    def _session(metadata: dict[str, Any] | None) -> str | None:
        if not metadata:
            return None
        for key in ("fiveplane_session", "session_id", "thread_id"):
            if metadata.get(key):
                return str(metadata[key])
        return None

    # ---- chat models / LLMs -----------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        self._emit(
            "langchain.chat_model_start",
            run_id,
            parent_run_id,
            name=_name(serialized, kwargs),
            data=messages,
            start=True,
            session=self._session(metadata),
            messages=sum(len(m) for m in messages),
        )

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        self._emit(
            "langchain.llm_start",
            run_id,
            parent_run_id,
            name=_name(serialized, kwargs),
            data=prompts,
            start=True,
            session=self._session(metadata),
        )

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> Any:
        tool_calls: list[str] = []
        texts: list[Any] = []
        for generations in response.generations:
            for g in generations:
                msg = getattr(g, "message", None)
                tool_calls.extend(tc["name"] for tc in getattr(msg, "tool_calls", None) or [])
                texts.append(_jsonable(msg) if msg is not None else g.text)
        usage = (response.llm_output or {}).get("token_usage") or (response.llm_output or {}).get("usage")
        self._emit(
            "langchain.llm_end",
            run_id,
            parent_run_id,
            data=texts,
            tool_calls=tool_calls or None,
            usage=_jsonable(usage) if usage else None,
        )

    def on_llm_error(self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> Any:
        self._emit("langchain.llm_error", run_id, parent_run_id, error=f"{type(error).__name__}: {error}")

    # ---- chains (the agent run) ---------------------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: dict[str, Any] | Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        if self.all_chains or parent_run_id is None:
            self._emit(
                "langchain.chain_start",
                run_id,
                parent_run_id,
                name=_name(serialized, kwargs),
                data=inputs,
                start=True,
                session=self._session(metadata),
            )

    def on_chain_end(
        self, outputs: dict[str, Any] | Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> Any:
        if run_id in self._started:
            self._emit("langchain.chain_end", run_id, parent_run_id, data=outputs)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> Any:
        # a LangGraph interrupt (an approval pause) surfaces here from the node that paused: not a failure
        if type(error).__name__ in ("GraphInterrupt", "NodeInterrupt"):
            self._emit("langchain.chain_paused", run_id, parent_run_id)
        elif run_id in self._started:
            self._emit("langchain.chain_error", run_id, parent_run_id, error=f"{type(error).__name__}: {error}")

    # ---- tools -------------------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        self._emit(
            "langchain.tool_start",
            run_id,
            parent_run_id,
            name=_name(serialized, kwargs),
            data=inputs if inputs is not None else input_str,
            start=True,
            session=self._session(metadata),
            tool_call_id=kwargs.get("tool_call_id"),
        )

    def on_tool_end(self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> Any:
        status = getattr(output, "status", None)
        self._emit("langchain.tool_end", run_id, parent_run_id, data=getattr(output, "content", output), status=status)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> Any:
        self._emit("langchain.tool_error", run_id, parent_run_id, error=f"{type(error).__name__}: {error}")

    # ---- retrievers ---------------------------------------------------------------------------

    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        self._emit(
            "langchain.retriever_start",
            run_id,
            parent_run_id,
            name=_name(serialized, kwargs),
            data=query,
            start=True,
            session=self._session(metadata),
        )

    def on_retriever_end(
        self, documents: Sequence[Document], *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> Any:
        self._emit("langchain.retriever_end", run_id, parent_run_id, data=list(documents), documents=len(documents))

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> Any:
        self._emit("langchain.retriever_error", run_id, parent_run_id, error=f"{type(error).__name__}: {error}")
