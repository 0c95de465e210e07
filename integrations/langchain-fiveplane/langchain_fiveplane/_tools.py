"""``FiveplaneTool``: any LangChain ``BaseTool``, decided and enforced on every invocation.

For LangGraph ``ToolNode``, custom graphs and plain chains — anywhere the agent middleware does not
sit. The wrapper keeps the tool's name, description, argument schema (injected arguments such as
``ToolRuntime`` still reach the tool), ``return_direct`` and ``response_format``, and delegates
execution to the wrapped tool, so tracing shows one tool run, not two.

Invoked with a ``ToolCall`` (as ``ToolNode`` does), a refusal is an error ``ToolMessage`` the model
reads; invoked with plain arguments, a refusal raises :class:`~fiveplane.ActionBlocked`,
:class:`~fiveplane.ApprovalRequired` or :class:`~fiveplane.ActionDeferred` (each carrying the
decision). Every route into the tool goes through the decision: ``invoke``/``ainvoke``, ``run``,
``batch`` and ``stream``. When the :class:`FiveplaneMiddleware` of the same Governor has just
decided exactly this call, the wrapper does not decide it a second time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, ToolException
from langchain_core.tools import tool as as_tool
from pydantic import BaseModel, ConfigDict, PrivateAttr

from fiveplane import (
    ApprovalMode,
    ApproverResolver,
    CallContext,
    CallProtocol,
    CapabilityProvider,
    Decision,
    Execute,
    Governor,
    OutcomeStatus,
    Refusal,
    ResultAdapter,
    Run,
    adrive,
    drive,
    sealed_call,
    take_sealed,
)

from ._context import ToolMap, catalog_name, run_from_config
from ._enforce import aask, ask, is_control_flow

__all__ = ["FiveplaneTool", "govern_tool", "govern_tools"]

_CHECKPOINTER_KEY = "__pregel_checkpointer"


class _Withheld:
    """A raw (non-ToolMessage) result the policy withheld: the caller gets an exception instead."""

    def __init__(self, text: str) -> None:
        self.text = text


class _ToolResult(ResultAdapter):
    def __init__(self, tool_call_id: str | None) -> None:
        self.tool_call_id = tool_call_id

    def content(self, result: Any) -> Any:
        return result.content if isinstance(result, ToolMessage) else result

    def failed(self, result: Any) -> str | None:
        if isinstance(result, ToolMessage) and result.status == "error":
            return str(result.content)[:500]
        return None

    def replace(self, result: Any, content: Any) -> Any:
        if isinstance(result, ToolMessage):
            text = content if isinstance(content, (str, list)) else str(content)
            return result.model_copy(update={"content": text, "artifact": None})
        return content

    def withhold(self, result: Any, decision: Decision, text: str) -> Any:
        if isinstance(result, ToolMessage):
            return result.model_copy(update={"content": text, "artifact": None, "status": "error"})
        return _Withheld(text)

    def annotate(self, result: Any, note: str) -> Any:
        if isinstance(result, ToolMessage) and isinstance(result.content, str):
            return result.model_copy(update={"content": f"{note}\n\n{result.content}"})
        return result


def _visible_fields(tool: BaseTool) -> set[str] | None:
    """The arguments the model gives (without injected ones); ``None`` when unknown."""
    schema = tool.tool_call_schema
    if isinstance(schema, dict):
        return set((schema.get("properties") or {}).keys())
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return set(schema.model_fields)
    return None


class FiveplaneTool(BaseTool):
    """A governed LangChain tool (build it with :func:`govern_tool` / :func:`govern_tools`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseTool
    """The wrapped tool; it runs only when the decision lets it."""
    governor: Governor
    catalog_tool: str
    """The tool's name in the policy's catalog."""
    default_run: Run | None = None
    """A fixed run when neither the config nor ``Governor.run`` gives one."""
    agent: str | None = None
    """The acting agent's id, appended to the user named in the config."""
    _enforcer: CallProtocol = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        self._enforcer = CallProtocol(self.governor, catalog=lambda _name: self.catalog_tool)

    def configure(
        self,
        *,
        approval_mode: ApprovalMode = "auto",
        approval_timeout: float = 0.0,
        resolve_approver: ApproverResolver | None = None,
        capability: CapabilityProvider | None = None,
    ) -> FiveplaneTool:
        """Set how approvals pause and which capability the tool runs with (see :class:`FiveplaneMiddleware`)."""
        self._enforcer = CallProtocol(
            self.governor,
            approval_mode=approval_mode,
            approval_timeout=approval_timeout,
            resolve_approver=resolve_approver,
            capability=capability,
            catalog=lambda _name: self.catalog_tool,
        )
        return self

    # ---- what ToolNode and the model see: the wrapped tool's --------------------------------------

    @property
    def tool_call_schema(self) -> Any:  # type: ignore[override]
        return self.inner.tool_call_schema

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return self.inner.get_input_schema(config)  # type: ignore[return-value]

    @property
    def func(self) -> Callable[..., Any] | None:
        """The wrapped function (LangGraph reads its annotations to inject state / runtime)."""
        return getattr(self.inner, "func", None)

    @property
    def coroutine(self) -> Callable[..., Any] | None:
        return getattr(self.inner, "coroutine", None)

    # ---- the call ---------------------------------------------------------------------------------

    def _split(self, tool_input: Any) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
        """(tool_call_id, the model's arguments, injected arguments) of an input."""
        call_id: str | None = None
        if isinstance(tool_input, Mapping) and tool_input.get("type") == "tool_call":
            call_id = tool_input.get("id")
            raw = dict(tool_input.get("args") or {})
        elif isinstance(tool_input, Mapping):
            raw = dict(tool_input)
        else:
            raw = {"input": tool_input}
        visible = _visible_fields(self.inner)
        if visible is None or not isinstance(tool_input, Mapping):
            return call_id, raw, {}
        return call_id, {k: v for k, v in raw.items() if k in visible}, {k: v for k, v in raw.items() if k not in visible}

    @staticmethod
    def _rebuild(tool_input: Any, args: dict[str, Any], injected: dict[str, Any]) -> Any:
        if isinstance(tool_input, Mapping) and tool_input.get("type") == "tool_call":
            return {**tool_input, "args": {**args, **injected}}
        if isinstance(tool_input, Mapping):
            return {**args, **injected}
        return args.get("input", tool_input)

    def _context(self, tool_input: Any, config: RunnableConfig | None) -> tuple[CallContext | None, str | None, dict[str, Any]]:
        call_id, args, injected = self._split(tool_input)
        run = run_from_config(config, agent=self.agent, fallback=self.default_run)
        configurable = (config or {}).get("configurable") or {}
        return (
            CallContext(
                run=run,
                name=self.name,
                args=args,
                tool_call_id=call_id,
                adapter=_ToolResult(call_id),
                can_pause=configurable.get(_CHECKPOINTER_KEY) is not None,
                control_flow=is_control_flow,
            ),
            call_id,
            injected,
        )

    def _refuse(self, result: Refusal, call_id: str | None) -> Any:
        if call_id is not None:
            return ToolMessage(content=result.text, tool_call_id=call_id, name=self.name, status="error")
        if result.decision is None:
            raise ToolException(result.text)
        raise result.exception()

    def _final(self, result: Any, call_id: str | None) -> Any:
        if isinstance(result, Refusal):
            return self._refuse(result, call_id)
        if isinstance(result, _Withheld):
            raise ToolException(result.text)
        return result

    def invoke(self, input: str | dict[str, Any] | Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        call_id, args, injected = self._split(input)
        if take_sealed(self.governor, self.name, args):
            return self.inner.invoke(input, config, **kwargs)
        try:
            c, call_id, injected = self._context(input, config)
        except Exception as exc:  # noqa: BLE001 - no principal, no call
            return self._refuse(
                Refusal(None, f"fiveplane blocked this tool call; it did not run: {exc}", OutcomeStatus.BLOCKED), call_id
            )
        assert c is not None

        def execute(e: Execute) -> Any:
            with sealed_call(self.governor, self.name, e.args, e.capability, tool=self.catalog_tool):
                return self.inner.invoke(self._rebuild(input, e.args, injected), config, **kwargs)

        return self._final(drive(self._enforcer.call(c), self.governor, execute, ask), call_id)

    async def ainvoke(self, input: str | dict[str, Any] | Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        call_id, args, injected = self._split(input)
        if take_sealed(self.governor, self.name, args):
            return await self.inner.ainvoke(input, config, **kwargs)
        try:
            c, call_id, injected = self._context(input, config)
        except Exception as exc:  # noqa: BLE001
            return self._refuse(
                Refusal(None, f"fiveplane blocked this tool call; it did not run: {exc}", OutcomeStatus.BLOCKED), call_id
            )
        assert c is not None

        async def execute(e: Execute) -> Any:
            with sealed_call(self.governor, self.name, e.args, e.capability, tool=self.catalog_tool):
                return await self.inner.ainvoke(self._rebuild(input, e.args, injected), config, **kwargs)

        return self._final(await adrive(self._enforcer.call(c), self.governor, execute, aask), call_id)

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        """The legacy ``run()`` route: governed like ``invoke``."""
        return self.invoke(kwargs if kwargs or not args else args[0])

    async def _arun(self, *args: Any, **kwargs: Any) -> Any:
        return await self.ainvoke(kwargs if kwargs or not args else args[0])


def govern_tool(
    tool: BaseTool | Callable[..., Any],
    governor: Governor,
    *,
    catalog_tool: str | None = None,
    run: Run | None = None,
    agent: str | None = None,
    approval_mode: ApprovalMode = "auto",
    approval_timeout: float = 0.0,
    resolve_approver: ApproverResolver | None = None,
    capability: CapabilityProvider | None = None,
) -> FiveplaneTool:
    """Wrap one tool (a ``BaseTool`` or a plain function) so that every call is decided first.

    Raises:
        KeyError: the catalog tool is not in the policy (a typo would otherwise block every call).
    """
    inner = tool if isinstance(tool, BaseTool) else as_tool(tool)
    if isinstance(inner, FiveplaneTool):
        raise ValueError(f"tool {inner.name!r} is already governed")
    name = catalog_tool or inner.name
    if name not in governor.policy.tools:
        known = ", ".join(sorted(governor.policy.tools)) or "empty"
        raise KeyError(f"tool {name!r} (for the LangChain tool {inner.name!r}) is not in the policy's catalog ({known})")
    wrapped = FiveplaneTool(
        name=inner.name,
        description=inner.description,
        args_schema=inner.args_schema,
        return_direct=inner.return_direct,
        response_format=inner.response_format,
        metadata=inner.metadata,
        tags=inner.tags,
        extras=inner.extras,
        inner=inner,
        governor=governor,
        catalog_tool=name,
        default_run=run,
        agent=agent,
    )
    return wrapped.configure(
        approval_mode=approval_mode,
        approval_timeout=approval_timeout,
        resolve_approver=resolve_approver,
        capability=capability,
    )


def govern_tools(
    tools: Sequence[BaseTool | Callable[..., Any]],
    governor: Governor,
    *,
    tool_map: ToolMap | None = None,
    run: Run | None = None,
    agent: str | None = None,
    approval_mode: ApprovalMode = "auto",
    approval_timeout: float = 0.0,
    resolve_approver: ApproverResolver | None = None,
    capability: CapabilityProvider | None = None,
) -> list[FiveplaneTool]:
    """Wrap every tool; ``tool_map`` maps LangChain names to catalog names (default: the same name)."""
    out = []
    for t in tools:
        inner = t if isinstance(t, BaseTool) else as_tool(t)
        out.append(
            govern_tool(
                inner,
                governor,
                catalog_tool=catalog_name(inner.name, tool_map),
                run=run,
                agent=agent,
                approval_mode=approval_mode,
                approval_timeout=approval_timeout,
                resolve_approver=resolve_approver,
                capability=capability,
            )
        )
    return out
