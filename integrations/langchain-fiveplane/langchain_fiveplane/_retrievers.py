"""``FiveplaneRetriever``: documents filtered by label and principal, and redacted, before anyone reads them.

The query is decided first, as a ``tool_call`` of the retrieval source (a catalogued ``read`` tool,
so the policy says who may search what); a refused query raises. Then every document is decided as a
``retrieval`` step: its text is the content, its classification labels (``metadata["labels"]``)
are the action's labels and ``{"query": ..., "document": {"id": ..., "metadata": ...}}`` its
arguments, so rules can match labels, the user's roles and any metadata field (``when:
'args.document.metadata.owner == user.id'``). A refused document is dropped; a ``modify`` decision
(the data plane) replaces its text. Documents of an untrusted connector are indexed for information
flow like any other untrusted content.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, ensure_config
from pydantic import ConfigDict, model_validator

from fiveplane import (
    Action,
    ActionBlocked,
    ActionDeferred,
    ApprovalRequired,
    Decision,
    GovernanceError,
    Governor,
    MediationPoint,
    Outcome,
    OutcomeStatus,
    Run,
    Verdict,
    digest_value,
)

from ._context import run_from_config

__all__ = ["FiveplaneRetriever"]

_CONFIG: contextvars.ContextVar[RunnableConfig | None] = contextvars.ContextVar("fiveplane_retriever_config", default=None)
_EXC: dict[Verdict, type[GovernanceError]] = {Verdict.REQUIRE_APPROVAL: ApprovalRequired, Verdict.DEFER: ActionDeferred}


def _labels(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(str(v) for v in value)
    return (str(value),)


def _json(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json(v) for v in value]
    return repr(value)


class FiveplaneRetriever(BaseRetriever):
    """Wrap a retriever so every query and every document is decided before it is returned.

    Example:
        ```python
        docs = FiveplaneRetriever(retriever=vectorstore.as_retriever(), governor=governor, source="kb.search")
        docs.invoke("renewal terms", run_config(user="rep-1", roles=["sales-rep"], session_id="s-1"))
        ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: BaseRetriever
    """The wrapped retriever."""
    governor: Governor
    source: str
    """The catalog tool that names this retrieval source (its connector says whether it is trusted)."""
    label_key: str = "labels"
    """The document metadata key holding its classification labels."""
    default_run: Run | None = None
    """A fixed run when neither the config nor ``Governor.run`` gives one."""
    agent: str | None = None

    @model_validator(mode="after")
    def _source_in_catalog(self) -> FiveplaneRetriever:
        if self.source not in self.governor.policy.tools:
            known = ", ".join(sorted(self.governor.policy.tools)) or "empty"
            raise ValueError(f"source {self.source!r} is not in the policy's catalog ({known}); add it as a read tool")
        return self

    # ---- capture the config (BaseRetriever does not pass it to _get_relevant_documents) --------

    def invoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        token = _CONFIG.set(ensure_config(config))
        try:
            return super().invoke(input, config, **kwargs)
        finally:
            _CONFIG.reset(token)

    async def ainvoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        token = _CONFIG.set(ensure_config(config))
        try:
            return await super().ainvoke(input, config, **kwargs)
        finally:
            _CONFIG.reset(token)

    # ---- actions --------------------------------------------------------------------------------

    def _run(self) -> Run:
        return run_from_config(_CONFIG.get(), agent=self.agent, fallback=self.default_run)

    def _query_action(self, run: Run, query: str) -> Action:
        return run.action(MediationPoint.TOOL_CALL, tool=self.source, arguments={"query": query})

    def _doc_action(self, run: Run, query: str, doc: Document, call: Action) -> Action:
        metadata = _json(dict(doc.metadata))
        return run.action(
            MediationPoint.RETRIEVAL,
            tool=self.source,
            arguments={"query": query, "document": {"id": doc.id, "metadata": metadata}},
            content=doc.page_content,
            labels=_labels(doc.metadata.get(self.label_key)),
            parent_action_id=call.action_id,
        )

    @staticmethod
    def _stop(decision: Decision) -> None:
        raise _EXC.get(decision.verdict, ActionBlocked)(decision)

    @staticmethod
    def _keep(doc: Document, decision: Decision) -> Document | None:
        if not decision.verdict.proceeds:
            return None
        if decision.modified_content is not None:
            text = decision.modified_content if isinstance(decision.modified_content, str) else str(decision.modified_content)
            return Document(page_content=text, metadata=dict(doc.metadata), id=doc.id)
        return doc

    @staticmethod
    def _outcome(call: Action, kept: Sequence[Document], total: int, ms: float) -> Outcome:
        return Outcome(
            action_id=call.action_id,
            status=OutcomeStatus.SUCCESS,
            result_digest=digest_value([d.page_content for d in kept]),
            duration_ms=ms,
            detail={"documents": total, "kept": len(kept), "dropped": total - len(kept)},
        )

    # ---- retrieval --------------------------------------------------------------------------------

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        gov = self.governor
        run = self._run()
        call = self._query_action(run, query)
        decision = gov.decide(call)
        if not decision.verdict.proceeds:
            gov.record_outcome(call, Outcome(action_id=call.action_id, status=OutcomeStatus.BLOCKED))
            self._stop(decision)
        t0 = time.perf_counter()
        docs = self.retriever.invoke(query, config={"callbacks": run_manager.get_child()})
        kept = [k for d in docs if (k := self._keep(d, gov.decide(self._doc_action(run, query, d, call)))) is not None]
        gov.record_outcome(call, self._outcome(call, kept, len(docs), (time.perf_counter() - t0) * 1000))
        return kept

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun) -> list[Document]:
        gov = self.governor
        run = self._run()
        call = self._query_action(run, query)
        decision = await gov.adecide(call)
        if not decision.verdict.proceeds:
            await gov.arecord_outcome(call, Outcome(action_id=call.action_id, status=OutcomeStatus.BLOCKED))
            self._stop(decision)
        t0 = time.perf_counter()
        docs = await self.retriever.ainvoke(query, config={"callbacks": run_manager.get_child()})
        kept = []
        for d in docs:
            k = self._keep(d, await gov.adecide(self._doc_action(run, query, d, call)))
            if k is not None:
                kept.append(k)
        await gov.arecord_outcome(call, self._outcome(call, kept, len(docs), (time.perf_counter() - t0) * 1000))
        return kept
