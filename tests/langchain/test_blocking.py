"""The async guard itself: a blocking call on the event loop fails the test (so the parity tests mean something)."""

from __future__ import annotations

import time

import pytest
from blockbuster import BlockingError
from langchain_core.tools import StructuredTool

from fiveplane import Governor
from langchain_fiveplane import tool_calls
from tests.langchain.conftest import Harness


async def test_a_blocking_tool_on_the_event_loop_fails(gov: Governor) -> None:
    async def crm_search_accounts(query: str) -> str:
        """Search CRM accounts."""
        time.sleep(0.01)  # noqa: ASYNC251 - the blocking call this test must catch
        return "ACC-1"

    tool = StructuredTool.from_function(coroutine=crm_search_accounts)
    h = Harness(gov, "async", [tool_calls(("crm_search_accounts", {"query": "Globex"})), "ok"], tools=[tool])
    with pytest.raises(BlockingError):
        await h.start()
