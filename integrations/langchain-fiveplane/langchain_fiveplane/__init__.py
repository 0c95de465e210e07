"""langchain-fiveplane: fiveplane runtime governance for LangChain and LangGraph agents.

- :class:`FiveplaneMiddleware` — three lines on ``create_agent``: every tool call decided where it
  executes, the user's input, the model's proposals and the final answer judged, approvals paused
  with ``interrupt()`` and resumed with the approver's answer.
- :func:`govern_tool` / :func:`govern_tools` — the same for any ``BaseTool`` (``ToolNode``,
  custom graphs, plain chains).
- :class:`FiveplaneRetriever` — documents filtered by label and principal, and redacted.
- :class:`FiveplaneCallbackHandler` — LangChain events as evidence (an observer only).
- :func:`check_coverage` — which tools of an agent are not governed.

Names load lazily: ``import langchain_fiveplane`` does not import LangChain until one is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from ._callbacks import CallbackEvent, EventSink, FiveplaneCallbackHandler
    from ._cli import run_coverage_cli, run_demo_cli
    from ._context import MissingRunError, ToolMap, run_config
    from ._coverage import CoverageReport, ToolCoverage, check_coverage
    from ._demo import DemoEvent, DemoResult, arun_langchain_demo, run_langchain_demo
    from ._enforce import ApprovalMode, CapabilityProvider, current_capability
    from ._middleware import FiveplaneMiddleware, FiveplaneState
    from ._models import ScriptedChatModel, tool_calls
    from ._resume import resume_approve, resume_check, resume_deny, resume_edit
    from ._retrievers import FiveplaneRetriever
    from ._tools import FiveplaneTool, govern_tool, govern_tools

__all__ = [
    "ApprovalMode",
    "CallbackEvent",
    "CapabilityProvider",
    "CoverageReport",
    "DemoEvent",
    "DemoResult",
    "EventSink",
    "FiveplaneCallbackHandler",
    "FiveplaneMiddleware",
    "FiveplaneRetriever",
    "FiveplaneState",
    "FiveplaneTool",
    "MissingRunError",
    "ScriptedChatModel",
    "ToolCoverage",
    "ToolMap",
    "__version__",
    "arun_langchain_demo",
    "check_coverage",
    "current_capability",
    "govern_tool",
    "govern_tools",
    "resume_approve",
    "resume_check",
    "resume_deny",
    "resume_edit",
    "run_config",
    "run_coverage_cli",
    "run_demo_cli",
    "run_langchain_demo",
    "tool_calls",
]

_WHERE = {
    "CallbackEvent": "_callbacks",
    "EventSink": "_callbacks",
    "FiveplaneCallbackHandler": "_callbacks",
    "MissingRunError": "_context",
    "ToolMap": "_context",
    "run_config": "_context",
    "run_coverage_cli": "_cli",
    "run_demo_cli": "_cli",
    "CoverageReport": "_coverage",
    "ToolCoverage": "_coverage",
    "check_coverage": "_coverage",
    "DemoEvent": "_demo",
    "DemoResult": "_demo",
    "arun_langchain_demo": "_demo",
    "run_langchain_demo": "_demo",
    "ApprovalMode": "_enforce",
    "CapabilityProvider": "_enforce",
    "current_capability": "_enforce",
    "FiveplaneMiddleware": "_middleware",
    "FiveplaneState": "_middleware",
    "ScriptedChatModel": "_models",
    "tool_calls": "_models",
    "resume_approve": "_resume",
    "resume_check": "_resume",
    "resume_deny": "_resume",
    "resume_edit": "_resume",
    "FiveplaneRetriever": "_retrievers",
    "FiveplaneTool": "_tools",
    "govern_tool": "_tools",
    "govern_tools": "_tools",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
