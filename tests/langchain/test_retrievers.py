"""FiveplaneRetriever: documents filtered by label and principal, redacted, before anyone reads them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from fiveplane import ActionBlocked, Governor
from langchain_fiveplane import FiveplaneRetriever, run_config
from langchain_fiveplane._demo import DemoRedactionPlane
from tests.langchain.conftest import make_gov

DOCS = [
    Document(id="d1", page_content="Renewal terms: 12 months.", metadata={"labels": ["PUBLIC"]}),
    Document(id="d2", page_content="Merger plan.", metadata={"labels": ["CONFIDENTIAL"]}),
    Document(id="d3", page_content="rep-1's pipeline notes.", metadata={"owner": "rep-1"}),
    Document(id="d4", page_content="rep-2's pipeline notes.", metadata={"owner": "rep-2"}),
    Document(id="d5", page_content="Contact: jane.roe@globex.example, +1 415 555 0134.", metadata={}),
]


class ListRetriever(BaseRetriever):
    docs: list[Document]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return list(self.docs)


def cfg(user: str, roles: list[str]) -> Any:
    return run_config(user=user, roles=roles, agent="kb-assistant", session_id=f"kb-{user}")


async def retrieve(r: FiveplaneRetriever, api: str, query: str, config: Any) -> list[Document]:
    if api == "async":
        return await r.ainvoke(query, config)
    return await asyncio.to_thread(r.invoke, query, config)


@pytest.fixture
async def kb(db: str) -> FiveplaneRetriever:
    gov = await make_gov(db, DemoRedactionPlane(), approvals=False)
    return FiveplaneRetriever(retriever=ListRetriever(docs=DOCS), governor=gov, source="kb.search")


async def test_documents_are_filtered_by_label_and_owner_and_redacted(kb: FiveplaneRetriever, api: str) -> None:
    docs = await retrieve(kb, api, "pipeline", cfg("rep-1", ["sales-rep"]))
    assert [d.id for d in docs] == ["d1", "d3", "d5"]
    assert docs[2].page_content == "Contact: <EMAIL_ADDRESS>, <PHONE_NUMBER>."
    assert docs[2].metadata == {} and DOCS[4].page_content.startswith("Contact: jane")  # the source is untouched


async def test_legal_sees_confidential_documents(kb: FiveplaneRetriever, api: str) -> None:
    docs = await retrieve(kb, api, "merger", cfg("lee", ["legal"]))
    assert "d2" in [d.id for d in docs] and "d3" not in [d.id for d in docs]


async def test_a_refused_query_raises(kb: FiveplaneRetriever, api: str) -> None:
    with pytest.raises(ActionBlocked):
        await retrieve(kb, api, "anything", cfg("guest", []))


async def test_every_document_is_a_retrieval_step_with_its_labels(db: str, api: str) -> None:
    gov = await make_gov(db, approvals=False)
    steps: list[tuple[str, str | None, tuple[str, ...], str]] = []
    gov.add_listener(lambda a, d: steps.append((a.point.value, a.tool, a.labels, d.verdict.value)))
    kb = FiveplaneRetriever(retriever=ListRetriever(docs=DOCS[:2]), governor=gov, source="kb.search")
    await retrieve(kb, api, "q", cfg("rep-1", ["sales-rep"]))
    assert steps == [
        ("tool_call", "kb.search", (), "allow"),
        ("retrieval", "kb.search", ("PUBLIC",), "allow"),
        ("retrieval", "kb.search", ("CONFIDENTIAL",), "block"),
    ]


def test_the_source_must_be_in_the_catalog(gov: Governor) -> None:
    with pytest.raises(ValueError, match="not in the policy's catalog"):
        FiveplaneRetriever(retriever=ListRetriever(docs=[]), governor=gov, source="kb.find")
