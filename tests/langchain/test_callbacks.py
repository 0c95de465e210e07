"""FiveplaneCallbackHandler: evidence of model / tool / agent events — an observer that never stops a run."""

from __future__ import annotations

from typing import Any

from fiveplane import Governor
from langchain_fiveplane import FiveplaneCallbackHandler, tool_calls
from tests.langchain.conftest import MANAGER, Harness

SEARCH = tool_calls(("crm_search_accounts", {"query": "Globex"}))


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.events: list[tuple[str, dict[str, Any], Any, str | None]] = []

    def record_event(
        self,
        kind: str,
        metadata: dict[str, Any],
        payload: Any = None,
        *,
        action_id: str | None = None,
        session_id: str | None = None,
        durable: bool = True,
    ) -> None:
        if self.fail:
            raise ConnectionError("ledger down")
        self.events.append((kind, metadata, payload, session_id))


async def test_events_are_recorded_with_digests_not_payloads(gov: Governor, api: str) -> None:
    sink = Sink()
    handler = FiveplaneCallbackHandler(sink)
    h = Harness(gov, api, [SEARCH, "done"])
    h.config["callbacks"] = [handler]
    await h.start()
    kinds = [k for k, *_ in sink.events]
    assert kinds[0] == "langchain.chain_start" and kinds[-1] == "langchain.chain_end"
    assert kinds.count("langchain.chat_model_start") == 2 and kinds.count("langchain.llm_end") == 2
    assert "langchain.tool_start" in kinds and "langchain.tool_end" in kinds
    tool_end = next(m for k, m, *_ in sink.events if k == "langchain.tool_end")
    assert tool_end["name"] == "crm_search_accounts" and tool_end["digest"].startswith("sha256:")
    assert tool_end["duration_ms"] >= 0
    llm_end = [m for k, m, *_ in sink.events if k == "langchain.llm_end"]
    assert llm_end[0]["tool_calls"] == ["crm_search_accounts"]
    assert all(p is None for _, _, p, _ in sink.events)  # no payloads by default
    assert {s for *_, s in sink.events} == {"t-1"}  # the LangGraph thread as the session
    assert len(handler.events) == len(sink.events)


async def test_payloads_on_request_are_redacted_first(gov: Governor, api: str) -> None:
    sink = Sink()
    handler = FiveplaneCallbackHandler(sink, include_payloads=True, redact=lambda v: "<redacted>")
    h = Harness(gov, api, [SEARCH, "done"])
    h.config["callbacks"] = [handler]
    await h.start()
    assert {p for _, _, p, _ in sink.events if p is not None} == {"<redacted>"}


async def test_a_failing_sink_never_stops_the_agent(gov: Governor, api: str) -> None:
    handler = FiveplaneCallbackHandler(Sink(fail=True))
    h = Harness(gov, api, [SEARCH, "done"])
    h.config["callbacks"] = [handler]
    await h.start()
    assert h.answer() == "done" and h.ran("crm_search_accounts")
    assert handler.dropped > 0 and handler.raise_error is False


async def test_a_paused_run_is_recorded_as_paused(gov: Governor, api: str) -> None:
    handler = FiveplaneCallbackHandler()
    update = tool_calls(("contracts_update_status", {"contract_id": "C-7", "status": "signed"}))
    h = Harness(gov, api, [update, "ok"])
    h.config["callbacks"] = [handler]
    await h.start()
    kinds = [e.kind for e in handler.events]
    assert "langchain.chain_paused" in kinds and "langchain.tool_start" not in kinds
    from langchain_fiveplane import resume_approve

    await h.resume(resume_approve(*MANAGER))
    assert "langchain.tool_end" in [e.kind for e in handler.events]
