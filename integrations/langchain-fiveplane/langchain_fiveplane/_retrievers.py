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
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, ensure_config
from pydantic import ConfigDict, model_validator

from fiveplane import (
    Action,
    CallProtocol,
    Decision,
    Execute,
    Governor,
    ItemAdapter,
    MediationPoint,
    Refusal,
    RetrievalContext,
    Run,
    adrive,
    drive,
    jsonable,
)

from ._context import run_from_config
from ._enforce import is_control_flow

__all__ = ["FiveplaneRetriever"]

_CONFIG: contextvars.ContextVar[RunnableConfig | None] = contextvars.ContextVar("fiveplane_retriever_config", default=None)


class _Documents(ItemAdapter[Document]):
    """A LangChain ``Document`` as a ``retrieval`` step: its text the content, its labels the action's."""

    def __init__(self, label_key: str) -> None:
        self.label_key = label_key

    def action(self, run: Run, item: Document, source: str | None, query: str | None, parent: Action | None) -> Action:
        return run.action(
            MediationPoint.RETRIEVAL,
            tool=source,
            arguments={"query": query, "document": {"id": item.id, "metadata": jsonable(dict(item.metadata))}},
            content=item.page_content,
            labels=self.labels(item.metadata.get(self.label_key)),
            parent_action_id=parent.action_id if parent else None,
        )

    def apply(self, item: Document, decision: Decision) -> Document | None:
        if not decision.verdict.proceeds:
            return None
        if decision.modified_content is not None:
            text = decision.modified_content if isinstance(decision.modified_content, str) else str(decision.modified_content)
            return Document(page_content=text, metadata=dict(item.metadata), id=item.id)
        return item

    def text(self, item: Document) -> str:
        return item.page_content


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

    # ---- retrieval --------------------------------------------------------------------------------

    def _context(self, query: str) -> RetrievalContext[Document]:
        run = run_from_config(_CONFIG.get(), agent=self.agent, fallback=self.default_run)
        return RetrievalContext(
            run=run, adapter=_Documents(self.label_key), source=self.source, query=query, control_flow=is_control_flow
        )

    @staticmethod
    def _final(result: list[Document] | Refusal) -> list[Document]:
        if isinstance(result, Refusal):
            raise result.exception()
        return result

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        def execute(e: Execute) -> list[Document]:
            return self.retriever.invoke(query, config={"callbacks": run_manager.get_child()})

        return self._final(drive(CallProtocol(self.governor).retrieve(self._context(query)), self.governor, execute))

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun) -> list[Document]:
        async def execute(e: Execute) -> list[Document]:
            return await self.retriever.ainvoke(query, config={"callbacks": run_manager.get_child()})

        return self._final(await adrive(CallProtocol(self.governor).retrieve(self._context(query)), self.governor, execute))
