"""Durable evidence in an agent loop: a proposal made only of tool calls is committed with its first call's
decision, a call's outcome with the decision on its result — both on disk before anything they allowed
runs or is released; a proposal with text of its own is committed on its own."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from langchain_core.tools import StructuredTool

from fiveplane import Governor
from fiveplane._ledger import Ed25519Signer, open_ledger
from langchain_fiveplane import tool_calls
from tests.langchain.conftest import PACK, Harness


def _committed(db_path: Path) -> list[tuple[str, str | None]]:
    """(kind, point) of every committed record, read through another connection."""
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT kind, envelope FROM ledger_leaves ORDER BY seq").fetchall()
    return [(kind, json.loads(bytes(env)[1:]).get("meta", {}).get("point")) for kind, env in rows]


def _search_tool(db_path: Path, seen: list[list[tuple[str, str | None]]]) -> StructuredTool:
    def crm_search_accounts(query: str) -> str:
        """Search CRM accounts by name."""
        seen.append(_committed(db_path))  # what is on disk when the tool runs
        return "ACC-1 Globex Corporation (negotiation)"

    return StructuredTool.from_function(crm_search_accounts)


async def _run(
    tmp_path: Path, api: str, text: str
) -> tuple[int, list[list[tuple[str, str | None]]], list[tuple[str, str | None]]]:
    db_path = tmp_path / "ledger.db"

    def setup() -> tuple[Any, Governor]:  # file I/O: off the event loop (blockbuster watches it)
        signer = Ed25519Signer.generate("test.fiveplane.local/lc")
        led = open_ledger(f"sqlite:///{db_path}", key=signer, checkpoint_interval=None, linger=60.0)
        return led, Governor(PACK, evidence=led)  # the pack's evidence is `required`

    led, gov = await asyncio.to_thread(setup)
    try:
        seen: list[list[tuple[str, str | None]]] = []
        turns: list[Any] = [tool_calls(("crm_search_accounts", {"query": "Globex"}), text=text), "Globex is in negotiation."]
        h = Harness(gov, api, turns, tools=[_search_tool(db_path, seen)])
        before = led.stats.flushes
        await h.start("Look up Globex.")
        commits = led.stats.flushes - before
        assert h.answer() == "Globex is in negotiation."
        final = await asyncio.to_thread(_committed, db_path)  # right after the run: no linger has passed
        assert (await asyncio.to_thread(led.verify)).ok
        return commits, seen, final
    finally:
        await led.aclose()


async def test_a_calls_only_proposal_and_an_outcome_ride_with_the_next_commit(tmp_path: Path, api: str) -> None:
    commits, seen, final = await _run(tmp_path, api, "")
    # the proposal's and the call's records are on disk before the tool runs
    assert seen == [
        [("intent", "input"), ("decision", "input")]
        + [("intent", "model_output"), ("decision", "model_output"), ("intent", "tool_call"), ("decision", "tool_call")]
    ]
    assert [k for k, _ in final[6:]] == ["outcome", "intent", "decision", "intent", "decision"]
    assert [p for _, p in final[7:]] == ["tool_result", "tool_result", "final_output", "final_output"]
    assert commits == 4  # input; proposal + call; outcome + result; final answer


async def test_a_proposal_with_text_is_committed_on_its_own(tmp_path: Path, api: str) -> None:
    commits, seen, _final = await _run(tmp_path, api, "Let me look that up.")
    assert seen[0][2:6] == [
        ("intent", "model_output"),
        ("decision", "model_output"),
        ("intent", "tool_call"),
        ("decision", "tool_call"),
    ]
    assert commits == 5  # input; proposal (its text reaches the run's state and stream); call; outcome + result; final
