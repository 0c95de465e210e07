"""Governed tools for LlamaIndex agents (``FunctionAgent``, ``ReActAgent``, ``AgentWorkflow``).

LlamaIndex agent workflows have no pre-tool hook and turn every tool exception into an output the
model reads, so the enforcement point is the tool itself. :class:`GovernedFunctionTool` is a
``FunctionTool`` (the agents inject the workflow ``Context`` only into ``FunctionTool``s) that wraps
any tool and, on every call:

1. builds a ``tool_call`` :class:`~fiveplane.Action` of the current run and decides it;
2. ``block`` / ``defer`` → returns an error ``ToolOutput`` the model reads (``is_error=True``, the
   decision's explanation, the :class:`~fiveplane.GovernanceError` attached); the tool does not run;
3. ``require_approval`` inside a workflow → pauses on ``ctx.wait_for_event`` with an
   :class:`ApprovalRequestEvent` (see :mod:`._approvals`); outside a workflow → an error output
   naming the request (approve it, then the identical call runs once);
4. ``modify`` → runs the tool with the rewritten arguments;
5. records the outcome, then mediates the result as a ``tool_result`` action (redaction rewrites the
   output, a block withholds it) before the model sees it.

The path itself is the core's :class:`~fiveplane.CallProtocol`, the same for every adapter (the
capability a call runs with included: the tool reads it with :func:`~fiveplane.current_capability`
or declares a ``capability`` parameter); this module only maps it onto LlamaIndex: the workflow
``Context``, ``ToolOutput`` and the runtime's replay of a paused step. Any failure of the engine
fails closed: the tool does not run.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from llama_index.core.tools import BaseTool, FunctionTool, ToolMetadata, ToolOutput
from llama_index.core.tools.types import AsyncBaseTool, adapt_to_async_tool
from llama_index.core.workflow import Context

from fiveplane import (
    Ask,
    CallContext,
    CallProtocol,
    Decision,
    Execute,
    Governor,
    Refusal,
    ResultAdapter,
    Run,
    Verdict,
    adrive,
    approval_id,
    drive,
    exception_for,
    sealed_call,
)

from ._approvals import ApprovalRequestEvent, ApprovalResponseEvent
from ._common import is_control_flow, jsonable, resolve_run

__all__ = ["GovernedFunctionTool", "govern_tools"]

log = logging.getLogger("fiveplane.llamaindex")

_CTX_PARAM = "fiveplane_ctx"
"""The keyword under which agents inject the workflow ``Context`` into a governed tool."""
_PENDING_KEY = "fiveplane_approval_"
"""``ctx.store`` key prefix (no dots: the store reads dotted keys as paths) of a paused call's decision."""


class _Outputs(ResultAdapter):
    """A ``ToolOutput``: its ``content`` is what the model reads."""

    def __init__(self, tool: GovernedFunctionTool, arguments: dict[str, Any]) -> None:
        self.tool = tool
        self.arguments = arguments

    def content(self, result: Any) -> Any:
        return result.content if isinstance(result, ToolOutput) else jsonable(result)

    def failed(self, result: Any) -> str | None:
        return "the tool returned an error output" if isinstance(result, ToolOutput) and result.is_error else None

    def replace(self, result: Any, content: Any) -> Any:
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, default=repr)
        return ToolOutput(
            content=text,
            tool_name=result.tool_name,
            raw_input=result.raw_input,
            raw_output=content,
            is_error=result.is_error,
        )

    def withhold(self, result: Any, decision: Decision, text: str) -> Any:
        return self.tool._error(
            f"The result of {self.tool.metadata.get_name()} was withheld by policy: {decision.explanation}",
            self.arguments,
            exception=exception_for(decision),
        )


class GovernedFunctionTool(FunctionTool):
    """A ``FunctionTool`` that is decided, enforced and recorded by a :class:`~fiveplane.Governor`.

    Args:
        tool: the tool to govern: any LlamaIndex tool (``FunctionTool``, ``QueryEngineTool``,
            ``RetrieverTool``, a ``ToolSpec``'s tools...) or a plain function.
        governor: the engine that decides every call.
        policy_tool: the tool's name in the policy's catalog (default: the tool's own name). Models
            need names like ``send_email``; catalogs use ``email.send``: map them here.
        run: the run (principal chain, session, intent) when calls happen outside
            ``governor.run(...)``; a run set in the calling context wins.
        approval_timeout: seconds a paused workflow waits for an :class:`ApprovalResponseEvent`
            (``None``: no limit; the request's own expiry still applies).

    The model sees the wrapped tool's name, description and schema unchanged. A ``FunctionTool``
    that takes the workflow ``Context`` still receives it. Calls take keyword arguments (a single
    positional argument is bound to the schema's first field).

    Raises:
        ValueError: ``policy_tool`` is not in the policy's catalog (fail closed at construction).
    """

    def __init__(
        self,
        tool: BaseTool | Callable[..., Any],
        governor: Governor,
        *,
        policy_tool: str | None = None,
        run: Run | None = None,
        approval_timeout: float | None = 3600.0,
    ) -> None:
        inner: BaseTool = tool if isinstance(tool, BaseTool) else FunctionTool.from_defaults(fn=tool)
        self._inner: AsyncBaseTool = inner if isinstance(inner, AsyncBaseTool) else adapt_to_async_tool(inner)
        name = inner.metadata.get_name()
        catalog_name = policy_tool or name
        if catalog_name not in governor.policy.tools:
            known = ", ".join(sorted(governor.policy.tools)) or "empty"
            raise ValueError(
                f"tool {catalog_name!r} is not in the catalog of policy {governor.policy.name!r} ({known}); "
                f"add it under `tools:` or pass policy_tool= naming the catalogued tool"
            )
        self.governor = governor
        self.policy_tool = catalog_name
        self.approval_timeout = approval_timeout
        self._run = run
        self._inner_ctx_param: str | None = None
        if isinstance(inner, FunctionTool) and inner.requires_context and inner.ctx_param_name:
            self._inner_ctx_param = inner.ctx_param_name
        fn = getattr(inner, "async_fn", None) or getattr(inner, "fn", None)
        try:
            self._wants_capability = fn is not None and "capability" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            self._wants_capability = False
        # one answer per pause: the runtime replays the step on resume, so a refused answer ends the call
        self._protocol = CallProtocol(governor, max_approval_rounds=1, catalog=lambda _name: catalog_name)
        super().__init__(fn=self._sync_entry, async_fn=self._async_entry, metadata=inner.metadata)
        # The agents inject the workflow Context into FunctionTools that ask for it (by this name).
        self.requires_context = True
        self.ctx_param_name = _CTX_PARAM

    # ---- what the agents and users call ---------------------------------------------------------

    @property
    def inner(self) -> BaseTool:
        """The wrapped tool (calling it directly bypasses governance)."""
        return self._inner

    @property
    def metadata(self) -> ToolMetadata:
        return self._metadata

    def __call__(self, *args: Any, **kwargs: Any) -> ToolOutput:
        return self.call(*args, **kwargs)

    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        """Decide, enforce and run synchronously (an approval cannot pause here: it returns an error output)."""
        kwargs.pop(_CTX_PARAM, None)
        prepared = self._prepare(args, kwargs)
        if isinstance(prepared, ToolOutput):
            return prepared
        run, arguments = prepared

        def execute(e: Execute) -> Any:
            if self._inner_ctx_param is not None:
                raise ValueError(
                    f"tool {self.metadata.get_name()!r} needs the workflow Context: call it through acall() in a workflow"
                )
            with sealed_call(self.governor, self.policy_tool, e.args, e.capability):
                return self._inner.call(**self._with_capability(e))

        c = CallContext(
            run=run, name=self.policy_tool, args=arguments, adapter=_Outputs(self, arguments), control_flow=is_control_flow
        )
        return self._final(drive(self._protocol.call(c), self.governor, execute), arguments)

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        """Decide, enforce and run; inside an agent workflow an approval pauses the workflow."""
        ctx = kwargs.pop(_CTX_PARAM, None)
        if ctx is not None and not isinstance(ctx, Context):
            ctx = None
        prepared = self._prepare(args, kwargs)
        if isinstance(prepared, ToolOutput):
            return prepared
        run, arguments = prepared
        # A call paused for approval is replayed by the runtime when the answer arrives: its decision
        # is remembered per action digest in the workflow state, so the replay waits for that answer
        # instead of deciding (and recording) again.
        key = ""
        resumed: Decision | None = None
        if ctx is not None:
            try:
                key = _PENDING_KEY + self._protocol.call_action(run, self.policy_tool, arguments).digest()
            except Exception:  # noqa: BLE001 - the protocol refuses this call itself, with the reason
                key = ""
            saved = await ctx.store.get(key, default=None) if key else None
            if isinstance(saved, dict):
                resumed = Decision.model_validate(saved)

        async def execute(e: Execute) -> Any:
            call_args = self._with_capability(e)
            if self._inner_ctx_param is not None:
                if ctx is None:
                    raise ValueError(
                        f"tool {self.metadata.get_name()!r} needs the workflow Context: call it from an agent workflow"
                    )
                call_args[self._inner_ctx_param] = ctx
            with sealed_call(self.governor, self.policy_tool, e.args, e.capability):
                return await self._inner.acall(**call_args)

        async def ask(effect: Ask) -> Any:
            assert ctx is not None
            return await self._ask(ctx, key, effect)

        c = CallContext(
            run=run,
            name=self.policy_tool,
            args=arguments,
            adapter=_Outputs(self, arguments),
            can_pause=ctx is not None and bool(key),
            control_flow=is_control_flow,
            resumed=resumed,
        )
        return self._final(await adrive(self._protocol.call(c), self.governor, execute, ask), arguments)

    def _with_capability(self, e: Execute) -> dict[str, Any]:
        return {**e.args, "capability": e.capability} if self._wants_capability else dict(e.args)

    def _final(self, result: Any, arguments: dict[str, Any]) -> ToolOutput:
        if isinstance(result, Refusal):
            return self._refusal(result, arguments)
        return cast(ToolOutput, result)

    # ---- approvals inside a workflow ------------------------------------------------------------

    async def _ask(self, ctx: Context, key: str, effect: Ask) -> Any:
        """Pause on the workflow for a person's answer; returns it in the protocol's answer shape."""
        request = effect.request
        await ctx.store.set(key, effect.decision.to_json())
        ask = ApprovalRequestEvent(
            approval_id=request.id,
            tool_name=self.metadata.get_name(),
            policy_tool=self.policy_tool,
            arguments=dict(request.action.get("arguments") or {}),
            explanation=request.explanation,
            role=request.role,
            requester=request.requester,
            separation_of_duties=request.separation_of_duties,
            expires_at=request.expires_at.isoformat(),
            rule_id=request.rule_id,
            prefix=f"Approve {self.policy_tool} requested by {request.requester}? {request.explanation}",
        )
        try:
            answer = await ctx.wait_for_event(
                ApprovalResponseEvent,
                waiter_event=ask,
                waiter_id=f"fiveplane-approval-{request.id}",
                requirements={"approval_id": request.id},
                timeout=self.approval_timeout,
            )
        except BaseException as exc:
            if not is_control_flow(exc):  # the first pass pauses here: keep the decision for the replay
                await ctx.store.set(key, None)
            raise
        await ctx.store.set(key, None)
        if answer.approved is None:
            return {"type": "check"}
        out: dict[str, Any] = {"type": "approve" if answer.approved else "deny", "reason": answer.reason}
        if answer.approver_id:
            out["approver"] = {"id": answer.approver_id, "roles": list(answer.approver_roles)}
        return out

    # ---- pieces ---------------------------------------------------------------------------------

    def _prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Run, dict[str, Any]] | ToolOutput:
        try:
            arguments = self._bind(args, kwargs)
        except ValueError as exc:
            return self._error(f"{self.metadata.get_name()} was not called: {exc}", dict(kwargs))
        run = resolve_run(self._run)
        if run is None:
            return self._error(
                f"{self.metadata.get_name()} did not run: it was called outside governor.run(...) and has no run=, "
                "so there is nobody to decide for.",
                arguments,
            )
        return run, arguments

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if not args:
            return cast(dict[str, Any], jsonable(kwargs))
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            return cast(dict[str, Any], jsonable(dict(args[0])))
        schema = self.metadata.fn_schema
        fields = list(schema.model_fields) if schema is not None else []
        if len(args) > len(fields):
            raise ValueError(f"{len(args)} positional arguments for the fields {fields}")
        bound = dict(zip(fields, args, strict=False))
        if set(bound) & set(kwargs):
            raise ValueError(f"arguments given twice: {sorted(set(bound) & set(kwargs))}")
        return cast(dict[str, Any], jsonable({**bound, **kwargs}))

    def _refusal(self, refusal: Refusal, arguments: dict[str, Any]) -> ToolOutput:
        decision = refusal.decision
        name = self.metadata.get_name()
        if decision is None:
            return self._error(f"{name} did not run: {refusal.text}", arguments, exception=refusal.exception())
        # The explanation is a full sentence naming the verdict ("Blocked …", "Paused for approval …").
        explanation = decision.explanation
        rid = approval_id(decision)
        if decision.verdict is Verdict.REQUIRE_APPROVAL:
            if rid is None:
                text = f"{explanation} {name} did not run (no approval store is configured, so nobody can approve it)."
            else:
                text = f"{explanation} {name} did not run; once request {rid} is approved, the same call runs once."
        else:
            text = f"{explanation} {name} did not run."
        if refusal.note:
            text = f"{text} {refusal.note}"
        return self._error(text, arguments, exception=refusal.exception())

    def _error(self, text: str, arguments: dict[str, Any], *, exception: Exception | None = None) -> ToolOutput:
        return ToolOutput(
            content=text,
            tool_name=self.metadata.get_name(),
            raw_input={"kwargs": arguments},
            raw_output=text,
            is_error=True,
            exception=exception,
        )

    def _sync_entry(self, **kwargs: Any) -> Any:
        """``fn``: the governed call (for code that calls ``tool.fn`` or converts the tool)."""
        out = self.call(**kwargs)
        return out.content if out.is_error else out.raw_output

    async def _async_entry(self, **kwargs: Any) -> Any:
        out = await self.acall(**kwargs)
        return out.content if out.is_error else out.raw_output


def govern_tools(
    tools: Iterable[BaseTool | Callable[..., Any]],
    governor: Governor,
    *,
    policy_tools: Mapping[str, str] | None = None,
    run: Run | None = None,
    approval_timeout: float | None = 3600.0,
) -> list[GovernedFunctionTool]:
    """Wrap every tool of an agent; ``policy_tools`` maps the model-facing name to the catalog name.

    Raises:
        ValueError: a tool's catalog name is not in the policy (nothing is wrapped half-way).
    """
    mapping = dict(policy_tools or {})
    out: list[GovernedFunctionTool] = []
    for tool in tools:
        inner: BaseTool = tool if isinstance(tool, BaseTool) else FunctionTool.from_defaults(fn=tool)
        name = inner.metadata.get_name()
        out.append(
            GovernedFunctionTool(inner, governor, policy_tool=mapping.pop(name, None), run=run, approval_timeout=approval_timeout)
        )
    if mapping:
        raise ValueError(f"policy_tools names tools that are not among the tools given: {sorted(mapping)}")
    return out
