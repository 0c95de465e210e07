"""Mediation coverage: which tools of an agent are not governed (check_coverage and `fiveplane coverage`)."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ToolRetryMiddleware
from langgraph.prebuilt import ToolNode
from typer.testing import CliRunner

from fiveplane import Governor
from langchain_fiveplane import (
    FiveplaneCallbackHandler,
    FiveplaneMiddleware,
    ScriptedChatModel,
    check_coverage,
    govern_tools,
    run_coverage_cli,
)
from langchain_fiveplane._cli import app as cli_app
from langchain_fiveplane._demo import DEMO_TOOL_MAP, demo_tools


def agent(*middleware: AgentMiddleware[Any, Any, Any], tools: list[Any] | None = None) -> Any:
    return create_agent(ScriptedChatModel(turns=[]), tools if tools is not None else demo_tools(), middleware=list(middleware))


def test_an_agent_with_the_middleware_is_covered(gov: Governor) -> None:
    report = check_coverage(agent(FiveplaneMiddleware(gov, tool_map=DEMO_TOOL_MAP)))
    assert report.ok and {t.status for t in report.tools} == {"governed"}
    assert {t.catalog_tool: t.action_class for t in report.tools} == {
        "crm.search_accounts": "read",
        "crm.get_account_notes": "read",
        "contracts.update_status": "modify",
        "email.send": "invoke",
    }
    assert report.middleware == ("FiveplaneMiddleware",) and report.warnings == ()


def test_an_agent_without_it_is_not(gov: Governor) -> None:
    report = check_coverage(agent(), gov)
    assert not report.ok and len(report.ungoverned) == 4
    assert "runs undecided" in report.ungoverned[0].reason


def test_a_callback_handler_is_not_governance(gov: Governor) -> None:
    handler_only = create_agent(ScriptedChatModel(turns=[]), demo_tools()).with_config(callbacks=[FiveplaneCallbackHandler()])
    assert not check_coverage(handler_only.bound if hasattr(handler_only, "bound") else handler_only, gov).ok


def test_governed_tools_without_the_middleware(gov: Governor) -> None:
    report = check_coverage(agent(tools=list(govern_tools(demo_tools(), gov, tool_map=DEMO_TOOL_MAP))))
    assert report.ok and {t.governed_by for t in report.tools} == {("tool",)}


def test_an_unmapped_tool_is_reported_as_always_blocked(gov: Governor) -> None:
    report = check_coverage(agent(FiveplaneMiddleware(gov)))  # no tool_map: the names are not catalog names
    assert report.ok  # governed (blocked), not ungoverned
    assert {t.status for t in report.tools} == {"unknown_tool"}
    assert "every call is blocked" in report.tools[0].reason


def test_middleware_after_ours_is_a_warning(gov: Governor) -> None:
    report = check_coverage(agent(FiveplaneMiddleware(gov, tool_map=DEMO_TOOL_MAP), ToolRetryMiddleware()))
    assert report.middleware == ("FiveplaneMiddleware", "ToolRetryMiddleware")
    assert any("put FiveplaneMiddleware last" in w for w in report.warnings)
    report = check_coverage(agent(ToolRetryMiddleware(), FiveplaneMiddleware(gov, tool_map=DEMO_TOOL_MAP)))
    assert report.warnings == ()


def test_lists_toolnodes_and_provider_tools(gov: Governor) -> None:
    tools = demo_tools()
    assert not check_coverage(ToolNode(tools), gov).ok
    report = check_coverage([*govern_tools(tools, gov, tool_map=DEMO_TOOL_MAP), {"type": "web_search"}], gov)
    assert [t.name for t in report.ungoverned] == ["web_search"]
    assert report.ungoverned[0].status == "provider_side"
    with pytest.raises(TypeError):
        check_coverage(42, gov)


@pytest.fixture
def cli() -> typer.Typer:
    return cli_app


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    src = textwrap.dedent(
        """
        from fiveplane import Governor
        from langchain.agents import create_agent
        from langchain_fiveplane import FiveplaneMiddleware, ScriptedChatModel
        from langchain_fiveplane._demo import DEMO_TOOL_MAP, demo_tools
        from tests.langchain.conftest import PACK

        governed = create_agent(ScriptedChatModel(turns=[]), demo_tools(),
                                middleware=[FiveplaneMiddleware(Governor(PACK), tool_map=DEMO_TOOL_MAP)])
        bare = create_agent(ScriptedChatModel(turns=[]), demo_tools())

        def build():
            return governed
        """
    )
    (tmp_path / "cov_app.py").write_text(src)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "cov_app"
    sys.modules.pop("cov_app", None)


def test_cli_coverage(cli: typer.Typer, app_module: str) -> None:
    runner = CliRunner()
    ok = runner.invoke(cli, ["coverage", f"{app_module}:governed"])
    assert ok.exit_code == 0, ok.stdout
    assert "4 governed, 0 ungoverned" in ok.stdout
    bad = runner.invoke(cli, ["coverage", f"{app_module}:bare", "--json"])
    assert bad.exit_code == 1
    assert len(json.loads(bad.stdout)["ungoverned"]) == 4
    assert runner.invoke(cli, ["coverage", f"{app_module}:build"]).exit_code == 0  # a factory is called
    assert runner.invoke(cli, ["coverage", "no_such_module:x"]).exit_code == 2
    assert runner.invoke(cli, ["coverage", "nocolon"]).exit_code == 2
    assert run_coverage_cli(f"{app_module}:bare", json_out=True) == 1  # what `fiveplane coverage` returns
    assert run_coverage_cli(f"{app_module}:governed") == 0
