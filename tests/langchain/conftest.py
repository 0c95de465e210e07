"""Fixtures for the LangChain adapter: real create_agent / ToolNode / InMemorySaver, a scripted model, no sockets.

Every agent test takes the ``api`` fixture and runs twice: through ``invoke`` (in a worker thread)
and through ``ainvoke`` on the event loop, where blockbuster turns any blocking call into a failure.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

if not os.environ.get("CI"):  # in CI the adapter must be installed: a missing one fails loudly
    pytest.importorskip("langchain_fiveplane", reason="the LangChain adapter is not installed (make setup)")

from blockbuster import BlockBuster, blockbuster_ctx
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from fiveplane import (
    Action,
    ApprovalStore,
    BasePlane,
    Governor,
    MediationPoint,
    PlaneContext,
    PlaneResult,
    Verdict,
)
from langchain_fiveplane import FiveplaneMiddleware, ScriptedChatModel, run_config
from langchain_fiveplane._demo import DEMO_TOOL_MAP, demo_tools

HERE = Path(__file__).resolve().parent
PACK = HERE / "packs" / "langchain-test.yaml"
REP = ("rep-1", ["sales-rep"])
MANAGER = ("manager-1", ["sales-manager"])
AGENT = "sales-assistant"
PURPOSE = "sales-support"


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> str:
    """Run the test through ``invoke`` and through ``ainvoke``."""
    return str(request.param)


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """A blocking call on the event loop (sleep, file or socket I/O, SQLite, a contended lock) fails the test."""
    with blockbuster_ctx(["langchain_fiveplane", "fiveplane", "tests.langchain"]) as bb:
        yield bb


@pytest.fixture(autouse=True)
def no_network() -> Iterator[None]:
    """Hermetic: no socket can be opened (Unix sockets stay allowed for the event loop)."""
    import pytest_socket

    pytest_socket.disable_socket(allow_unix_socket=True)
    yield
    pytest_socket.enable_socket()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fiveplane.db'}"


@pytest.fixture
def gov(db: str) -> Governor:
    return Governor(PACK, approvals=ApprovalStore(db))


# ---- planes for the verdicts the pack alone does not produce ----------------------------------------


class RewritePlane(BasePlane):
    """modify: strips ``bcc`` from e-mails; redacts e-mail addresses in CRM notes."""

    name = "rewrite"

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        r = PlaneResult(plane=self.name)
        if action.point is MediationPoint.TOOL_CALL and action.tool == "email.send" and "bcc" in action.arguments:
            r.modified_arguments = {k: v for k, v in action.arguments.items() if k != "bcc"}
        if (
            action.point is MediationPoint.TOOL_RESULT
            and action.tool == "crm.get_account_notes"
            and isinstance(action.content, str)
        ):
            r.modified_content, r.content_modified = action.content.replace("jane.roe@globex.example", "<EMAIL>"), True
        return r

    async def aevaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        return self.evaluate(action, ctx)


class NarrowPlane(BasePlane):
    """narrow: a CRM search for ``narrow-me`` runs with an attenuated capability (minted when ``mint``)."""

    name = "narrowing"

    def __init__(self, mint: bool = True) -> None:
        self.mint = mint
        self.minted: dict[str, str] = {}
        self.discarded: list[str] = []

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        r = PlaneResult(plane=self.name)
        if action.point is MediationPoint.TOOL_CALL and action.arguments.get("query") == "narrow-me":
            r.add("read_only", "searches run read-only", verdict=Verdict.NARROW)
        return r

    async def aevaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        return self.evaluate(action, ctx)

    def on_decision(self, action: Action, decision: Any, ctx: PlaneContext) -> list[Any]:
        if self.mint and action.point is MediationPoint.TOOL_CALL and decision.verdict.proceeds:
            self.minted[action.action_id] = (
                f"token-for-{action.tool}-{'narrow' if decision.verdict is Verdict.NARROW else 'full'}"
            )
        return []

    def take_capability(self, action_id: str) -> str | None:
        return self.minted.pop(action_id, None)


class BrokenPlane(BasePlane):
    """Fails on every e-mail: the engine must fail closed."""

    name = "broken"

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        if action.tool == "email.send":
            raise RuntimeError("plane crashed")
        return PlaneResult(plane=self.name)

    async def aevaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        return self.evaluate(action, ctx)


# ---- an agent under test ------------------------------------------------------------------------


class Harness:
    """A real ``create_agent`` agent with FiveplaneMiddleware, the scenario's tools and a scripted model."""

    def __init__(
        self,
        governor: Governor,
        api: str,
        turns: Sequence[Any],
        *,
        before: Sequence[AgentMiddleware[Any, Any, Any]] = (),
        after: Sequence[AgentMiddleware[Any, Any, Any]] = (),
        middleware: Sequence[AgentMiddleware[Any, Any, Any]] | None = None,
        checkpointer: bool = True,
        tools: Sequence[BaseTool] | None = None,
        user: tuple[str, Sequence[str]] = REP,
        thread: str = "t-1",
        **mw_options: Any,
    ) -> None:
        self.governor = governor
        self.api = api
        self.executed: list[str] = []
        self.model = ScriptedChatModel(turns=list(turns))
        self.fiveplane = FiveplaneMiddleware(governor, agent=AGENT, purpose=PURPOSE, tool_map=DEMO_TOOL_MAP, **mw_options)
        stack = list(middleware) if middleware is not None else [*before, self.fiveplane, *after]
        self.agent = create_agent(
            self.model,
            list(tools) if tools is not None else demo_tools(self.executed),
            middleware=stack,
            checkpointer=InMemorySaver() if checkpointer else None,
        )
        self.config: dict[str, Any] = dict(run_config(user=user[0], roles=list(user[1]), thread_id=thread))
        self.result: Any = None

    async def _call(self, value: Any, config: dict[str, Any] | None = None) -> Any:
        cfg = config or self.config
        if self.api == "async":
            self.result = await self.agent.ainvoke(value, cfg, version="v2")
        else:
            self.result = await asyncio.to_thread(self.agent.invoke, value, cfg, version="v2")
        return self.result

    async def start(self, text: str = "Check Globex and update C-7.", config: dict[str, Any] | None = None) -> Any:
        return await self._call({"messages": [HumanMessage(text)]}, config)

    async def resume(self, answer: Any, config: dict[str, Any] | None = None) -> Any:
        return await self._call(Command(resume=answer), config)

    @property
    def interrupts(self) -> list[Any]:
        return list(getattr(self.result, "interrupts", ()) or ())

    def approval(self, n: int = 0) -> dict[str, Any]:
        """The fiveplane part of the n-th pending interrupt."""
        value = self.interrupts[n].value
        assert value["type"] == "tool_approval", value
        return dict(value["fiveplane"])

    @property
    def messages(self) -> list[BaseMessage]:
        return list(self.result.value["messages"])

    def tool_messages(self, name: str | None = None) -> list[ToolMessage]:
        return [m for m in self.messages if isinstance(m, ToolMessage) and (name is None or m.name == name)]

    def answer(self) -> str:
        return next(str(m.content) for m in reversed(self.messages) if isinstance(m, AIMessage))

    def ran(self, prefix: str) -> list[str]:
        return [c for c in self.executed if c.startswith(prefix)]


async def make_gov(db: str, *planes: BasePlane, approvals: bool = True) -> Governor:
    """A Governor over the test pack, built off the event loop (it opens the database)."""
    return await asyncio.to_thread(
        lambda: Governor(PACK, approvals=ApprovalStore(db) if approvals else None, planes=list(planes))
    )
