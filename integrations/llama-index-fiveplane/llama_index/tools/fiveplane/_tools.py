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

Any failure of the engine fails closed: the tool does not run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from llama_index.core.tools import BaseTool, FunctionTool, ToolMetadata, ToolOutput
from llama_index.core.tools.types import AsyncBaseTool, adapt_to_async_tool
from llama_index.core.workflow import Context

from fiveplane import (
    Action,
    ActionBlocked,
    ActionDeferred,
    ApprovalError,
    ApprovalRequired,
    Decision,
    GovernanceError,
    Governor,
    MediationPoint,
    ObligationKind,
    Outcome,
    OutcomeStatus,
    Principal,
    PrincipalKind,
    Run,
    Verdict,
    digest_value,
)

from ._approvals import ApprovalRequestEvent, ApprovalResponseEvent
from ._common import is_control_flow, jsonable, resolve_run

__all__ = ["GovernedFunctionTool", "govern_tools"]

log = logging.getLogger("fiveplane.llamaindex")

_CTX_PARAM = "fiveplane_ctx"
"""The keyword under which agents inject the workflow ``Context`` into a governed tool."""
_PENDING_KEY = "fiveplane_approval_"
"""``ctx.store`` key prefix (no dots: the store reads dotted keys as paths) of a paused call's request."""

_STATUS = {
    Verdict.BLOCK: OutcomeStatus.BLOCKED,
    Verdict.REQUIRE_APPROVAL: OutcomeStatus.APPROVAL_PENDING,
    Verdict.DEFER: OutcomeStatus.DEFERRED,
}
_EXC: dict[Verdict, type[GovernanceError]] = {
    Verdict.BLOCK: ActionBlocked,
    Verdict.REQUIRE_APPROVAL: ApprovalRequired,
    Verdict.DEFER: ActionDeferred,
}


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
        action = run.action(MediationPoint.TOOL_CALL, tool=self.policy_tool, arguments=arguments)
        decision = self.governor.decide(action)
        if not decision.verdict.proceeds:
            self._record_stop(action, decision)
            return self._refusal(action, decision, arguments)
        call_args = decision.modified_arguments if decision.modified_arguments is not None else arguments
        if self._inner_ctx_param is not None:
            self._fail_outcome(action, "the tool needs the workflow Context; call it from an agent workflow", 0.0)
            raise ValueError(
                f"tool {self.metadata.get_name()!r} needs the workflow Context: call it through acall() in a workflow"
            )
        t = time.perf_counter()
        try:
            output = self._inner.call(**call_args)
        except Exception as exc:
            if not is_control_flow(exc):
                self._fail_outcome(action, f"{type(exc).__name__}: {exc}", _ms(t))
            raise
        self.governor.record_outcome(action, self._outcome(action, output, _ms(t)))
        result = self._result_action(run, action, output)
        res_decision = self.governor.decide(result)
        return self._mediated(result, res_decision, output, arguments)

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        """Decide, enforce and run; inside an agent workflow an approval pauses the workflow."""
        ctx = kwargs.pop(_CTX_PARAM, None)
        if ctx is not None and not isinstance(ctx, Context):
            ctx = None
        prepared = self._prepare(args, kwargs)
        if isinstance(prepared, ToolOutput):
            return prepared
        run, arguments = prepared
        action = run.action(MediationPoint.TOOL_CALL, tool=self.policy_tool, arguments=arguments)
        # A call paused for approval is replayed by the runtime when the answer arrives: the request
        # is remembered per action digest in the workflow state, so the replay waits for that answer
        # instead of deciding (and filing) again.
        key = _PENDING_KEY + action.digest() if ctx is not None else ""
        pending: str | None = None
        if ctx is not None:
            pending = await ctx.store.get(key, default=None)
        if pending is None:
            decision = await self.governor.adecide(action)
            approval_id = _approval_id(decision)
            if decision.verdict is not Verdict.REQUIRE_APPROVAL or ctx is None or approval_id is None:
                if not decision.verdict.proceeds:
                    await self._arecord_stop(action, decision)
                    return self._refusal(action, decision, arguments)
            else:
                await self._arecord_stop(action, decision)
                await ctx.store.set(key, approval_id)
                pending = approval_id
        if pending is not None:
            assert ctx is not None
            # The first pass pauses here (the runtime's control-flow exception passes through).
            answered = await self._await_answer(ctx, key, pending, arguments)
            if isinstance(answered, ToolOutput):
                return answered
            decision = await self.governor.adecide(action)
            if not decision.verdict.proceeds:
                await self._arecord_stop(action, decision)
                return self._refusal(action, decision, arguments)
        call_args = decision.modified_arguments if decision.modified_arguments is not None else arguments
        if self._inner_ctx_param is not None:
            if ctx is None:
                await self._afail_outcome(action, "the tool needs the workflow Context", 0.0)
                raise ValueError(f"tool {self.metadata.get_name()!r} needs the workflow Context: call it from an agent workflow")
            call_args = {**call_args, self._inner_ctx_param: ctx}
        t = time.perf_counter()
        try:
            output = await self._inner.acall(**call_args)
        except Exception as exc:
            if not is_control_flow(exc):
                await self._afail_outcome(action, f"{type(exc).__name__}: {exc}", _ms(t))
            raise
        await self.governor.arecord_outcome(action, self._outcome(action, output, _ms(t)))
        result = self._result_action(run, action, output)
        res_decision = await self.governor.adecide(result)
        if not res_decision.verdict.proceeds:
            await self._arecord_stop(result, res_decision)
        return self._mediated(result, res_decision, output, arguments, recorded=True)

    # ---- approvals inside a workflow ------------------------------------------------------------

    async def _await_answer(self, ctx: Context, key: str, approval_id: str, arguments: dict[str, Any]) -> ToolOutput | None:
        """Pause for the person's answer and hand it to the approval store; ``None`` → decide again."""
        store = self.governor.approvals
        if store is None:  # cannot happen: a filed request implies a store
            await ctx.store.set(key, None)
            return self._error(f"Approval request {approval_id} cannot be answered: no approval store.", arguments)
        request = await asyncio.to_thread(store.get, approval_id)
        ask = ApprovalRequestEvent(
            approval_id=approval_id,
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
                waiter_id=f"fiveplane-approval-{approval_id}",
                requirements={"approval_id": approval_id},
                timeout=self.approval_timeout,
            )
        except TimeoutError:
            await ctx.store.set(key, None)
            return self._error(
                f"No answer to approval request {approval_id} within {self.approval_timeout} s; {self.policy_tool} did not run.",
                arguments,
            )
        except Exception as exc:
            if is_control_flow(exc):
                raise
            await ctx.store.set(key, None)
            return self._error(
                f"Could not wait for approval request {approval_id} ({type(exc).__name__}: {exc}); {self.policy_tool} did not run.",
                arguments,
            )
        await ctx.store.set(key, None)
        if answer.approved is None:
            return None
        if not answer.approver_id:
            return self._error(f"The answer to approval request {approval_id} names no approver; nothing was decided.", arguments)
        who = Principal(kind=PrincipalKind.USER, id=answer.approver_id, roles=tuple(answer.approver_roles))
        decide = store.approve if answer.approved else store.deny
        try:
            await asyncio.to_thread(decide, approval_id, who, answer.reason)
        except ApprovalError as exc:
            return self._error(
                f"The answer to approval request {approval_id} was not accepted: {exc}. {self.policy_tool} did not run.",
                arguments,
            )
        return None

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

    def _result_action(self, run: Run, call: Action, output: ToolOutput) -> Action:
        return run.action(
            MediationPoint.TOOL_RESULT, tool=self.policy_tool, content=output.content, parent_action_id=call.action_id
        )

    def _mediated(
        self, result: Action, decision: Decision, output: ToolOutput, arguments: dict[str, Any], *, recorded: bool = False
    ) -> ToolOutput:
        if not decision.verdict.proceeds:
            if not recorded:
                self._record_stop(result, decision)
            text = f"The result of {self.metadata.get_name()} was withheld by policy: {decision.explanation}"
            return self._error(text, arguments, exception=_EXC[decision.verdict](decision, result))
        if decision.modified_content is None:
            return output
        content = decision.modified_content
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, default=repr)
        return ToolOutput(
            content=text,
            tool_name=output.tool_name,
            raw_input=output.raw_input,
            raw_output=content,
            is_error=output.is_error,
        )

    def _refusal(self, action: Action, decision: Decision, arguments: dict[str, Any]) -> ToolOutput:
        approval_id = _approval_id(decision)
        explanation = decision.explanation
        # The explanation is a full sentence naming the verdict ("Blocked …", "Paused for approval …").
        name = self.metadata.get_name()
        if decision.verdict is Verdict.REQUIRE_APPROVAL:
            if approval_id is None:
                text = f"{explanation} {name} did not run (no approval store is configured, so nobody can approve it)."
            else:
                text = f"{explanation} {name} did not run; once request {approval_id} is approved, the same call runs once."
        else:
            text = f"{explanation} {name} did not run."
        return self._error(text, arguments, exception=_EXC[decision.verdict](decision, action))

    def _error(self, text: str, arguments: dict[str, Any], *, exception: Exception | None = None) -> ToolOutput:
        return ToolOutput(
            content=text,
            tool_name=self.metadata.get_name(),
            raw_input={"kwargs": arguments},
            raw_output=text,
            is_error=True,
            exception=exception,
        )

    @staticmethod
    def _outcome(action: Action, output: ToolOutput, ms: float) -> Outcome:
        if output.is_error:
            return Outcome(
                action_id=action.action_id,
                status=OutcomeStatus.ERROR,
                error="the tool returned an error output",
                result_digest=digest_value(output.content),
                duration_ms=ms,
            )
        return Outcome(
            action_id=action.action_id, status=OutcomeStatus.SUCCESS, result_digest=digest_value(output.content), duration_ms=ms
        )

    def _record_stop(self, action: Action, decision: Decision) -> None:
        self.governor.record_outcome(action, Outcome(action_id=action.action_id, status=_STATUS[decision.verdict]))

    async def _arecord_stop(self, action: Action, decision: Decision) -> None:
        await self.governor.arecord_outcome(action, Outcome(action_id=action.action_id, status=_STATUS[decision.verdict]))

    def _fail_outcome(self, action: Action, error: str, ms: float) -> None:
        self.governor.record_outcome(
            action, Outcome(action_id=action.action_id, status=OutcomeStatus.ERROR, error=error, duration_ms=ms)
        )

    async def _afail_outcome(self, action: Action, error: str, ms: float) -> None:
        await self.governor.arecord_outcome(
            action, Outcome(action_id=action.action_id, status=OutcomeStatus.ERROR, error=error, duration_ms=ms)
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


def _approval_id(decision: Decision) -> str | None:
    for ob in decision.obligations_of(ObligationKind.APPROVAL):
        value = ob.params.get("approval_id")
        if value:
            return str(value)
    return None


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
