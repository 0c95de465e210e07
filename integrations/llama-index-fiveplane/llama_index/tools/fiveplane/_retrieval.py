"""Retrieval filters: every retrieved node is a ``retrieval`` action, decided before the model sees it.

One :class:`~fiveplane.Action` per node (per-document decisions: one confidential node is dropped,
its neighbours stay). The node's text is the action's ``content``; its classification labels (node
metadata, ``labels`` by default: a list or a comma-separated string) are the action's ``labels``;
its id, score and JSON-able metadata are the action's ``arguments`` (so CEL rules can check
``args.metadata.allowed_roles`` against ``user.roles``: per-document grants).

Enforcement per node:

- ``allow`` / ``narrow`` → the node passes unchanged;
- ``modify`` → a copy of the node carries the rewritten text (``decision.modified_content``, e.g. PII
  redacted by the data plane) and rewritten metadata values (``modified_arguments["metadata"]``);
  the node in the index is never touched;
- anything else (``block``, ``require_approval``, ``defer``), or any error while deciding → the node
  is dropped (fail closed).

Two entry points share this: :class:`GovernedRetriever` wraps a retriever (query engines, chat
engines, ``RetrieverTool`` and agents that call retrievers work unchanged) and
:class:`GovernedNodePostprocessor` plugs into ``node_postprocessors=[...]``. Use one of them per
pipeline, not both (each node would be decided twice). With a ``source``, the retriever also decides
the query first, as a ``tool_call`` of that catalogued read tool (the policy says who may search
what); a refused query retrieves nothing and raises. The path is the core's
:meth:`fiveplane.CallProtocol.retrieve`, the same as the LangChain retriever's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import PrivateAttr

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
)

from ._common import is_control_flow, jsonable, resolve_run

__all__ = ["GovernedNodePostprocessor", "GovernedRetriever", "NodeGate"]

log = logging.getLogger("fiveplane.llamaindex")


class _Nodes(ItemAdapter[NodeWithScore]):
    def __init__(self, label_key: str) -> None:
        self.label_key = label_key

    def action(self, run: Run, item: NodeWithScore, source: str | None, query: str | None, parent: Action | None) -> Action:
        node = item.node
        meta = node.metadata or {}
        return run.action(
            MediationPoint.RETRIEVAL,
            tool=source,
            content=node.get_content(metadata_mode=MetadataMode.NONE),
            labels=self.labels(meta.get(self.label_key)),
            arguments={
                "node_id": node.node_id,
                "ref_doc_id": node.ref_doc_id,
                "score": jsonable(item.score),
                "metadata": jsonable(meta),
            },
            parent_action_id=parent.action_id if parent else None,
        )

    def apply(self, item: NodeWithScore, decision: Decision) -> NodeWithScore | None:
        if not decision.verdict.proceeds:
            return None
        content = decision.modified_content
        meta = (decision.modified_arguments or {}).get("metadata")
        if content is None and not isinstance(meta, dict):
            return item
        node = item.node.model_copy(deep=False)
        if isinstance(meta, dict):
            node.metadata = {**node.metadata, **{k: v for k, v in meta.items() if k in node.metadata}}
        if content is not None:
            text = content if isinstance(content, str) else str(content)
            node.set_content(text)
            if node.get_content(metadata_mode=MetadataMode.NONE) != text:
                return None  # a node type whose text cannot be replaced: never release the original
        return NodeWithScore(node=node, score=item.score)

    def text(self, item: NodeWithScore) -> str:
        return item.node.get_content(metadata_mode=MetadataMode.NONE)


class NodeGate:
    """Decides retrieved nodes one by one and applies the decisions (the shared core of the filters).

    Args:
        governor: the engine.
        run: the run when used outside ``governor.run(...)`` (a run in the calling context wins).
        source: the catalog tool naming this retriever (e.g. ``kb.search``): its connector's
            ``trusted`` flag decides whether retrieved text counts as untrusted for information
            flow, and rules can match it with ``tools:``. ``None``: an unnamed, untrusted source.
        label_key: the node metadata key holding classification labels.
    """

    def __init__(
        self, governor: Governor, *, run: Run | None = None, source: str | None = None, label_key: str = "labels"
    ) -> None:
        if source is not None and source not in governor.policy.tools:
            known = ", ".join(sorted(governor.policy.tools)) or "empty"
            raise ValueError(
                f"retrieval source {source!r} is not in the catalog of policy {governor.policy.name!r} ({known}); "
                "add it under `tools:` (class read, with its connector) or leave source=None"
            )
        self.governor = governor
        self.run = run
        self.source = source
        self.label_key = label_key
        self.nodes = _Nodes(label_key)
        self.protocol = CallProtocol(governor)

    def _run(self) -> Run:
        run = resolve_run(self.run)
        if run is None:
            raise RuntimeError(
                "a governed retriever was used outside governor.run(...) and without run=: "
                "nobody to decide for, so no node is released"
            )
        return run

    def action(self, run: Run, item: NodeWithScore) -> Action:
        """The ``retrieval`` action of one node."""
        return self.nodes.action(run, item, self.source, None, None)

    def apply(self, item: NodeWithScore, decision: Decision) -> NodeWithScore | None:
        """The node the model may see after ``decision`` (a rewritten copy), or ``None`` (dropped)."""
        return self.nodes.apply(item, decision)

    def context(self, query: str | None, items: Sequence[NodeWithScore] | None) -> RetrievalContext[NodeWithScore]:
        return RetrievalContext(
            run=self._run(), adapter=self.nodes, source=self.source, query=query, items=items, control_flow=is_control_flow
        )

    @staticmethod
    def final(result: list[NodeWithScore] | Refusal) -> list[NodeWithScore]:
        if isinstance(result, Refusal):
            raise result.exception()
        return result

    def filter(self, nodes: Sequence[NodeWithScore]) -> list[NodeWithScore]:
        """Decide each node (sync) and keep what may be seen, rewritten where the decision says."""
        return self.final(drive(self.protocol.retrieve(self.context(None, nodes)), self.governor, _nothing))

    async def afilter(self, nodes: Sequence[NodeWithScore]) -> list[NodeWithScore]:
        """Async twin of :meth:`filter`; nodes are decided in order, as on the sync path."""
        return self.final(await adrive(self.protocol.retrieve(self.context(None, nodes)), self.governor, _anothing))


def _nothing(e: Execute) -> Any:
    raise RuntimeError("a node filter executes nothing")


async def _anothing(e: Execute) -> Any:
    raise RuntimeError("a node filter executes nothing")


class GovernedRetriever(BaseRetriever):
    """A retriever whose results are decided node by node before anyone sees them.

    Args:
        retriever: the retriever to wrap (``index.as_retriever(...)``, a BM25 retriever, ...).
        governor: the engine.
        run: the run when used outside ``governor.run(...)``.
        source: the catalog tool naming this retriever (see :class:`NodeGate`).
        label_key: the node metadata key holding classification labels.

    Use it wherever a retriever goes: ``RetrieverQueryEngine.from_args(GovernedRetriever(...), llm=...)``,
    ``CondensePlusContextChatEngine.from_defaults(retriever=...)``, ``RetrieverTool``.
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        governor: Governor,
        *,
        run: Run | None = None,
        source: str | None = None,
        label_key: str = "labels",
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        self._retriever = retriever
        self._gate = NodeGate(governor, run=run, source=source, label_key=label_key)
        super().__init__(callback_manager=callback_manager or retriever.callback_manager, verbose=verbose)

    @property
    def retriever(self) -> BaseRetriever:
        """The wrapped retriever (using it directly bypasses governance)."""
        return self._retriever

    @property
    def gate(self) -> NodeGate:
        return self._gate

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        gate = self._gate

        def execute(e: Execute) -> list[NodeWithScore]:
            return self._retriever.retrieve(query_bundle)

        return gate.final(drive(gate.protocol.retrieve(gate.context(query_bundle.query_str, None)), gate.governor, execute))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        gate = self._gate

        async def execute(e: Execute) -> list[NodeWithScore]:
            return await self._retriever.aretrieve(query_bundle)

        flow = gate.protocol.retrieve(gate.context(query_bundle.query_str, None))
        return gate.final(await adrive(flow, gate.governor, execute))

    # The wrapped retriever resolves its own recursive nodes (IndexNode objects) before the gate;
    # nothing may be fetched after it, or what is fetched would reach the model undecided.
    def _handle_recursive_retrieval(self, query_bundle: QueryBundle, nodes: list[NodeWithScore]) -> list[NodeWithScore]:
        return nodes

    async def _ahandle_recursive_retrieval(self, query_bundle: QueryBundle, nodes: list[NodeWithScore]) -> list[NodeWithScore]:
        return nodes


class GovernedNodePostprocessor(BaseNodePostprocessor):
    """A node postprocessor that drops and redacts nodes by policy (``node_postprocessors=[...]``).

    Args:
        governor: the engine.
        run: the run when used outside ``governor.run(...)``.
        source: the catalog tool naming the retriever upstream (see :class:`NodeGate`).
        label_key: the node metadata key holding classification labels.

    Put it last in ``node_postprocessors`` (after rerankers) so nothing changes the nodes after it.
    """

    _gate: NodeGate = PrivateAttr()

    def __init__(
        self,
        governor: Governor,
        *,
        run: Run | None = None,
        source: str | None = None,
        label_key: str = "labels",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._gate = NodeGate(governor, run=run, source=source, label_key=label_key)

    @classmethod
    def class_name(cls) -> str:
        return "GovernedNodePostprocessor"

    @property
    def gate(self) -> NodeGate:
        return self._gate

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        return self._gate.filter(nodes)

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        return await self._gate.afilter(nodes)


def _node_id(item: NodeWithScore) -> str:
    try:
        return item.node.node_id
    except Exception:  # noqa: BLE001
        return "?"
