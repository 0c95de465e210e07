"""Mediation coverage (DESIGN.md §6.3): which tools of an agent are not governed?

A tool is governed when every execution of it goes through a fiveplane decision: the agent's tool
node carries :class:`FiveplaneMiddleware` (its ``wrap_tool_call``), or the tool itself is a
:class:`FiveplaneTool`. A governed tool whose catalog name the policy does not know is reported
too: every call of it is blocked (``unknown_tool``). A callback handler is an observer and does not
count. Provider-executed tools (dicts such as ``{"type": "web_search"}``) run at the model
provider, where nothing can stop them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from langchain_core.tools import BaseTool

from fiveplane import Governor

from ._context import ToolMap, catalog_name
from ._middleware import FiveplaneMiddleware
from ._tools import FiveplaneTool

__all__ = ["CoverageReport", "ToolCoverage", "check_coverage"]

Status = Literal["governed", "ungoverned", "unknown_tool", "provider_side"]


@dataclass(frozen=True)
class ToolCoverage:
    """One tool of the agent and how it is mediated."""

    name: str
    """The LangChain tool name."""
    catalog_tool: str | None
    """The name the policy's catalog knows it by."""
    status: Status
    governed_by: tuple[str, ...] = ()
    """``middleware`` and/or ``tool`` (a :class:`FiveplaneTool`)."""
    action_class: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class CoverageReport:
    """Coverage of one agent (or list of tools)."""

    tools: tuple[ToolCoverage, ...]
    middleware: tuple[str, ...] = ()
    """The agent's tool-call middleware, outermost first (best effort)."""
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ungoverned(self) -> list[ToolCoverage]:
        """Tools whose execution no fiveplane decision can stop."""
        return [t for t in self.tools if t.status in ("ungoverned", "provider_side")]

    @property
    def ok(self) -> bool:
        return not self.ungoverned

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "tools": [asdict(t) for t in self.tools],
            "ungoverned": [t.name for t in self.ungoverned],
            "middleware": list(self.middleware),
            "warnings": list(self.warnings),
        }


def _self_of(fn: Any) -> Any:
    wrapped = getattr(fn, "__wrapped__", None)
    target = wrapped if wrapped is not None else fn
    return getattr(target, "__self__", None)


def _wrapper_chain(fn: Any, depth: int = 0) -> Iterator[Any]:
    """The middleware objects of a composed ``wrap_tool_call`` chain, outermost first (LangChain 1.5 layout)."""
    if fn is None or depth > 64:
        return
    owner = _self_of(fn)
    if owner is not None:
        yield owner
        return
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    if code is None:
        return
    free = dict(zip(code.co_freevars, cells, strict=False))
    for key in ("outer", "inner"):
        cell = free.get(key)
        if cell is not None:
            yield from _wrapper_chain(cell.cell_contents, depth + 1)


def _tool_node(target: Any) -> Any:
    nodes = getattr(target, "nodes", None)
    if isinstance(nodes, Mapping) and "tools" in nodes:
        node = nodes["tools"]
        return getattr(node, "bound", node)
    return None


def check_coverage(
    target: Any,
    governor: Governor | None = None,
    *,
    tool_map: ToolMap | None = None,
) -> CoverageReport:
    """Report how every tool of ``target`` is mediated.

    Args:
        target: an agent from ``create_agent`` (or any compiled graph with a ``tools`` node), a
            LangGraph ``ToolNode``, or a list of tools.
        governor: whose catalog to check names against (default: the middleware's or the tools').
        tool_map: LangChain → catalog names for tools the middleware governs (default: the middleware's).

    Raises:
        TypeError: ``target`` is none of the above.
    """
    warnings: list[str] = []
    middleware: list[Any] = []
    node = _tool_node(target) if not _is_tool_node(target) else target
    if node is not None:
        tools: list[Any] = list(getattr(node, "tools_by_name", {}).values())
        chain = getattr(node, "_wrap_tool_call", None) or getattr(node, "_awrap_tool_call", None)
        middleware = list(_wrapper_chain(chain))
        if chain is not None and not middleware:
            warnings.append("could not read the agent's tool-call middleware (a LangChain version this check does not know)")
    elif isinstance(target, (BaseTool, Mapping)):
        tools = [target]
    elif isinstance(target, Sequence) and not isinstance(target, (str, bytes)):
        tools = list(target)
    elif callable(target) and not inspect.isclass(target):
        tools = [target]
    else:
        raise TypeError(f"cannot check the coverage of a {type(target).__name__}: give an agent, a ToolNode or a list of tools")

    ours = [m for m in middleware if isinstance(m, FiveplaneMiddleware)]
    if len(ours) > 1:
        warnings.append(f"{len(ours)} FiveplaneMiddleware instances: every call is decided {len(ours)} times")
    if ours:
        last = max(i for i, m in enumerate(middleware) if isinstance(m, FiveplaneMiddleware))
        after = [type(m).__name__ for m in middleware[last + 1 :]]
        if after:
            warnings.append(
                f"{', '.join(after)} wrap{'s' if len(after) == 1 else ''} tool calls inside FiveplaneMiddleware and can change "
                "a call after it was decided: put FiveplaneMiddleware last in the middleware list"
            )
    mw = ours[0] if ours else None
    gov = governor or (mw.governor if mw is not None else None)
    mapping = tool_map if tool_map is not None else (mw.tool_map if mw is not None else None)

    rows: list[ToolCoverage] = []
    for t in tools:
        if isinstance(t, Mapping):
            label = str(t.get("name") or t.get("type") or "provider tool")
            rows.append(
                ToolCoverage(
                    label,
                    None,
                    "provider_side",
                    reason="executed by the model provider: no fiveplane decision can stop it at execution",
                )
            )
            continue
        name = str(getattr(t, "name", None) or getattr(t, "__name__", None) or repr(t))
        by: list[str] = []
        catalog: str | None = None
        tgov = gov
        if mw is not None:
            by.append("middleware")
            catalog = catalog_name(name, mapping)
        if isinstance(t, FiveplaneTool):
            by.append("tool")
            catalog = t.catalog_tool if catalog is None else catalog
            tgov = tgov or t.governor
            if mw is not None and t.governor is not mw.governor:
                warnings.append(f"{name}: the tool's Governor is not the middleware's; the call is decided twice")
        if not by:
            rows.append(
                ToolCoverage(
                    name,
                    catalog_name(name, mapping),
                    "ungoverned",
                    reason="no FiveplaneMiddleware on the agent and not a FiveplaneTool: it runs undecided",
                )
            )
            continue
        spec = tgov.policy.tools.get(catalog) if tgov is not None and catalog else None
        if tgov is not None and spec is None:
            rows.append(
                ToolCoverage(
                    name,
                    catalog,
                    "unknown_tool",
                    tuple(by),
                    reason=f"{catalog!r} is not in the policy's catalog: every call is blocked (map it with tool_map=)",
                )
            )
            continue
        rows.append(ToolCoverage(name, catalog, "governed", tuple(by), spec.action_class.value if spec is not None else None, ""))
    return CoverageReport(
        tools=tuple(rows),
        middleware=tuple(type(m).__name__ for m in middleware),
        warnings=tuple(dict.fromkeys(warnings)),
    )


def _is_tool_node(target: Any) -> bool:
    return hasattr(target, "tools_by_name") and hasattr(target, "_wrap_tool_call")
