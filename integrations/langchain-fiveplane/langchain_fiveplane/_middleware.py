"""``FiveplaneMiddleware``: fiveplane governance for ``langchain.agents.create_agent``.

Where each step is stopped (DESIGN.md §3):

- ``before_agent`` — the user's request (``input``): the run's principal, session and declared intent
  are fixed here and kept in the graph state (so a resume acts for the same requester);
- ``wrap_model_call`` — what the model proposes (``model_output``: text and tool calls) and the
  final answer (``final_output``), before either enters the state;
- ``wrap_tool_call`` — every tool call immediately before it executes (``tool_call``: block, modify,
  narrow, approval) and its result before the model sees it (``tool_result``).

Enforcement happens in ``wrap_tool_call`` whatever route led there (a re-proposal, another
middleware's ``jump_to="tools"``, a resume), because every route executes through it. Put this
middleware **last** in the list: it is then the innermost ``wrap_tool_call``, so no other middleware
can change a call after it was decided.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Annotated, Any, NotRequired

from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ModelRequest,
    ModelResponse,
    PrivateStateAttr,
    hook_config,
)
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall, ToolMessage
from langgraph.config import get_config
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command, TracePolicy, omit_payload

from fiveplane import (
    Action,
    ApprovalMode,
    ApproverResolver,
    CallContext,
    CallProtocol,
    CapabilityProvider,
    Decision,
    Execute,
    Governor,
    MediationPoint,
    Refusal,
    ResultAdapter,
    Run,
    adrive,
    drive,
    jsonable,
    sealed_call,
)

from ._context import ToolMap, catalog_name, run_from_config, run_from_state, run_to_state
from ._enforce import aask, ask, is_control_flow

__all__ = ["FiveplaneMiddleware", "FiveplaneState"]

STATE_KEY = "fiveplane"
_CHECKPOINTER_KEY = "__pregel_checkpointer"


class FiveplaneState(AgentState[Any]):
    """The agent state with the fiveplane run of the thread (private: not in the input or output schema)."""

    fiveplane: NotRequired[Annotated[dict[str, Any], PrivateStateAttr]]


def _text(message: BaseMessage) -> str:
    """The message's text as a plain ``str`` (``.text`` is a ``str`` subclass some engines reject)."""
    text = message.text
    return str.__str__(text) if isinstance(text, str) else str(message.content)


def _as_content(value: Any) -> str | list[str | dict[Any, Any]]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, (str, dict)) for v in value):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


class _MessageResult(ResultAdapter):
    """Results of ``wrap_tool_call``: a ``ToolMessage``, or a ``Command`` whose update carries it."""

    def __init__(self, tool_call_id: str | None) -> None:
        self.tool_call_id = tool_call_id

    def _message(self, result: Any) -> ToolMessage | None:
        if isinstance(result, ToolMessage):
            return result
        if isinstance(result, Command) and isinstance(result.update, Mapping):
            for m in result.update.get("messages") or ():
                if isinstance(m, ToolMessage) and m.tool_call_id == self.tool_call_id:
                    return m
        return None

    def _swap(self, result: Any, new: ToolMessage) -> Any:
        if isinstance(result, ToolMessage):
            return new
        assert isinstance(result, Command) and isinstance(result.update, Mapping)
        messages = [
            new if isinstance(m, ToolMessage) and m.tool_call_id == self.tool_call_id else m for m in result.update["messages"]
        ]
        return replace(result, update={**result.update, "messages": messages})

    def content(self, result: Any) -> Any:
        msg = self._message(result)
        return ResultAdapter.NOTHING if msg is None else msg.content

    def failed(self, result: Any) -> str | None:
        msg = self._message(result)
        return _text(msg)[:500] if msg is not None and msg.status == "error" else None

    def replace(self, result: Any, content: Any) -> Any:
        msg = self._message(result)
        if msg is None:
            return result
        return self._swap(result, msg.model_copy(update={"content": _as_content(content), "artifact": None}))

    def withhold(self, result: Any, decision: Decision, text: str) -> Any:
        msg = self._message(result)
        if msg is None:
            return result
        return self._swap(result, msg.model_copy(update={"content": text, "artifact": None, "status": "error"}))

    def annotate(self, result: Any, note: str) -> Any:
        msg = self._message(result)
        if msg is None:
            return result
        content = msg.content
        new: str | list[str | dict[Any, Any]] = f"{note}\n\n{content}" if isinstance(content, str) else [note, *content]
        return self._swap(result, msg.model_copy(update={"content": new}))


class FiveplaneMiddleware(AgentMiddleware[FiveplaneState, Any, Any]):
    """Govern a LangChain agent with a fiveplane :class:`~fiveplane.Governor`.

    Example:
        ```python
        from fiveplane import ApprovalStore, Governor
        from langchain_fiveplane import FiveplaneMiddleware, run_config

        governor = Governor("policies/examples/sales-support.yaml", approvals=ApprovalStore())
        agent = create_agent(model, tools, middleware=[FiveplaneMiddleware(governor, agent="sales-assistant")],
                             checkpointer=InMemorySaver())
        agent.invoke({"messages": [...]}, run_config(user="rep-1", roles=["sales-rep"], thread_id="t-1",
                                                     purpose="sales-support"))
        ```

    Args:
        governor: the engine that decides every step.
        agent: the acting agent's id (declared in the policy pack), appended to the user of the run.
        purpose: the declared purpose when the run config does not give one.
        run: a fixed run for every invocation (scripts, tests); the config and ``Governor.run`` win over it.
        tool_map: LangChain tool name → catalog tool name (default: the same name). A tool that
            maps to nothing in the catalog is blocked by the policy's ``unknown_tool`` default.
        approval_mode: how ``require_approval`` pauses (see :data:`ApprovalMode`; default ``auto``:
            ``interrupt()`` with a checkpointer, else ``wait``/``defer``).
        approval_timeout: seconds to wait for an approval in ``wait`` mode (and in ``auto`` without
            a checkpointer when > 0).
        resolve_approver: turns a resume payload into the approving principal (default: the payload's
            ``approver``); raise to refuse it.
        capability: returns the capability a proceeding call runs with (default: the token an
            identity plane minted); available to the tool as :func:`current_capability`.
        mediate_input: judge the user's request at the start of the run.
        mediate_model_output: judge what the model proposes and its final answer.
        max_approval_rounds: how many answers one paused call takes before it gives up (as pending)
            when the answers are refused (wrong approver, malformed).
    """

    state_schema = FiveplaneState
    trace_policy = TracePolicy(process_inputs=omit_payload)

    def __init__(
        self,
        governor: Governor,
        *,
        agent: str | None = None,
        purpose: str | None = None,
        run: Run | None = None,
        tool_map: ToolMap | None = None,
        approval_mode: ApprovalMode = "auto",
        approval_timeout: float = 0.0,
        resolve_approver: ApproverResolver | None = None,
        capability: CapabilityProvider | None = None,
        mediate_input: bool = True,
        mediate_model_output: bool = True,
        max_approval_rounds: int = 5,
    ) -> None:
        super().__init__()
        if not isinstance(governor, Governor):
            raise TypeError(f"FiveplaneMiddleware needs a fiveplane Governor, not {type(governor).__name__}")
        policy = governor.policy
        if isinstance(tool_map, Mapping):
            unknown = sorted(v for v in tool_map.values() if v not in policy.tools)
            if unknown:
                raise ValueError(f"tool_map names tools that are not in the policy's catalog: {', '.join(unknown)}")
        if agent is not None and policy.agents and agent not in policy.agents:
            raise ValueError(f"agent {agent!r} is not declared in the policy (declared: {', '.join(sorted(policy.agents))})")
        if approval_mode == "interrupt" and governor.approvals is None:
            raise ValueError("approval_mode='interrupt' needs a Governor with approvals= (an ApprovalStore)")
        self.governor = governor
        self.agent = agent
        self.purpose = purpose
        self.run = run
        self.tool_map = tool_map
        self._last_run: tuple[Any, Run] | None = None
        self.mediate_input = mediate_input
        self.mediate_model_output = mediate_model_output
        self.enforcer = CallProtocol(
            governor,
            approval_mode=approval_mode,
            approval_timeout=approval_timeout,
            resolve_approver=resolve_approver,
            capability=capability,
            max_approval_rounds=max_approval_rounds,
            catalog=lambda name: catalog_name(name, tool_map),
        )

    # ---- the run --------------------------------------------------------------------------------

    def _start(self, state: Mapping[str, Any]) -> tuple[Run, HumanMessage | None]:
        """Resolve the run of this invocation (config → Governor.run → run=) and fix its session and intent."""
        try:
            config = get_config()
        except RuntimeError:
            config = None
        run = run_from_config(config, agent=self.agent, purpose=self.purpose, fallback=self.run, require_session=False)
        configurable = (config or {}).get("configurable") or {}
        previous = state.get(STATE_KEY) or {}
        session = run.session_id or configurable.get("thread_id") or previous.get("session_id") or f"lc-{uuid.uuid4().hex}"
        human = next((m for m in reversed(state.get("messages") or []) if isinstance(m, HumanMessage)), None)
        intent = run.intent or (_text(human) if human is not None else None)
        return Run(principal=run.principal, session_id=str(session), intent=intent, purpose=run.purpose or self.purpose), human

    def run_of(self, state: Any, config: Mapping[str, Any] | None = None) -> Run:
        """The run a hook acts for: the one fixed at the start of the thread's current invocation."""
        data = state.get(STATE_KEY) if isinstance(state, Mapping) else getattr(state, STATE_KEY, None)
        if data:
            cached = self._last_run
            if cached is not None and cached[0] is data:
                return cached[1]
            run = run_from_state(data)
            self._last_run = (data, run)  # the state keeps the same object from step to step
            return run
        return run_from_config(config, agent=self.agent, purpose=self.purpose, fallback=self.run)

    # ---- input ----------------------------------------------------------------------------------

    def _input_action(self, run: Run, human: HumanMessage | None) -> Action | None:
        if not self.mediate_input or human is None:
            return None
        return run.action(MediationPoint.INPUT, content=_text(human))

    def _input_update(self, run: Run, human: HumanMessage | None, decision: Decision | None) -> dict[str, Any]:
        update: dict[str, Any] = {STATE_KEY: run_to_state(run)}
        if decision is None:
            return update
        if not decision.verdict.proceeds:
            update["messages"] = [
                AIMessage(content=f"fiveplane refused this request ({decision.verdict.value}). {decision.explanation}")
            ]
            update["jump_to"] = "end"
        elif decision.modified_content is not None and human is not None:
            update["messages"] = [HumanMessage(content=_as_content(decision.modified_content), id=human.id)]
        return update

    @hook_config(can_jump_to=["end"])
    def before_agent(self, state: FiveplaneState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Fix the run (principal, session, intent) and judge the user's request."""
        run, human = self._start(state)
        action = self._input_action(run, human)
        return self._input_update(run, human, self.governor.decide(action) if action is not None else None)

    @hook_config(can_jump_to=["end"])
    async def abefore_agent(self, state: FiveplaneState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        run, human = self._start(state)
        action = self._input_action(run, human)
        return self._input_update(run, human, await self.governor.adecide(action) if action is not None else None)

    # ---- model output and final answer ------------------------------------------------------------

    def _output_action(self, request: ModelRequest[Any], response: ModelResponse[Any]) -> tuple[Action, int, bool] | None:
        """The step to judge, the index of its message, and whether it is a proposal made only of tool
        calls (no content of its own reaches anyone: each call is decided before it runs)."""
        if not self.mediate_model_output:
            return None
        idx = next((i for i in range(len(response.result) - 1, -1, -1) if isinstance(response.result[i], AIMessage)), None)
        if idx is None:
            return None
        msg = response.result[idx]
        assert isinstance(msg, AIMessage)
        run = self.run_of(request.state, get_config())
        if msg.tool_calls:
            content: Any = {
                "text": _text(msg),
                "tool_calls": [
                    {"tool": catalog_name(tc["name"], self.tool_map), "name": tc["name"], "args": tc["args"]}
                    for tc in msg.tool_calls
                ],
            }
            return run.action(MediationPoint.MODEL_OUTPUT, content=jsonable(content)), idx, not msg.content
        if response.structured_response is not None:
            structured = json.loads(json.dumps(response.structured_response, default=lambda o: getattr(o, "__dict__", str(o))))
            return run.action(MediationPoint.FINAL_OUTPUT, content={"text": _text(msg), "structured": structured}), idx, False
        return run.action(MediationPoint.FINAL_OUTPUT, content=_text(msg)), idx, False

    @staticmethod
    def _apply_output(response: ModelResponse[Any], idx: int, decision: Decision) -> ModelResponse[Any]:
        msg = response.result[idx]
        assert isinstance(msg, AIMessage)
        final = not msg.tool_calls
        if decision.verdict.proceeds:
            if decision.modified_content is None:
                return response
            new_content = decision.modified_content
            if isinstance(new_content, Mapping) and "text" in new_content:
                new_content = new_content["text"]
            new = msg.model_copy(update={"content": _as_content(new_content)})
        else:
            what = "answer" if final else "plan"
            new = AIMessage(
                content=f"fiveplane withheld the model's {what} ({decision.verdict.value}). {decision.explanation}",
                id=msg.id,
            )
        result = [*response.result[:idx], new, *response.result[idx + 1 :]]
        structured = response.structured_response if decision.verdict.proceeds else None
        return ModelResponse(result=result, structured_response=structured)

    def wrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], ModelResponse[Any]]
    ) -> ModelResponse[Any]:
        """Run the model, then judge its proposal (``model_output``) or its answer (``final_output``)."""
        response = handler(request)
        found = self._output_action(request, response)
        if found is None:
            return response
        action, idx, calls_only = found
        return self._apply_output(response, idx, self.governor.decide(action, with_next=calls_only))

    async def awrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]]
    ) -> ModelResponse[Any]:
        response = await handler(request)
        found = self._output_action(request, response)
        if found is None:
            return response
        action, idx, calls_only = found
        return self._apply_output(response, idx, await self.governor.adecide(action, with_next=calls_only))

    # ---- tool calls -----------------------------------------------------------------------------

    def _call_context(self, request: ToolCallRequest) -> CallContext | ToolMessage:
        call = request.tool_call
        runtime = request.runtime
        config = getattr(runtime, "config", None) or {}
        try:
            run = self.run_of(request.state, config)
        except Exception as exc:  # noqa: BLE001 - no principal, no tool call
            return self._refusal(request, f"fiveplane blocked this tool call; it did not run: {exc}")
        configurable = config.get("configurable") or {}
        tools = list(getattr(runtime, "tools", None) or [])
        return CallContext(
            run=run,
            name=call["name"],
            args=dict(call.get("args") or {}),
            tool_call_id=call.get("id"),
            adapter=_MessageResult(call.get("id")),
            can_pause=configurable.get(_CHECKPOINTER_KEY) is not None,
            retarget=lambda name: any(t.name == name for t in tools),
            control_flow=is_control_flow,
        )

    @staticmethod
    def _refusal(request: ToolCallRequest, text: str) -> ToolMessage:
        return ToolMessage(
            content=text, tool_call_id=request.tool_call.get("id") or "", name=request.tool_call["name"], status="error"
        )

    @staticmethod
    def _request_for(request: ToolCallRequest, e: Execute) -> ToolCallRequest:
        call: ToolCall = {**request.tool_call, "name": e.name, "args": e.args}
        if e.name == request.tool_call["name"]:
            return request.override(tool_call=call)
        tool = next(t for t in request.runtime.tools if t.name == e.name)
        return request.override(tool_call=call, tool=tool)

    def _finish(self, request: ToolCallRequest, result: Any) -> ToolMessage | Command[Any]:
        if isinstance(result, Refusal):
            return self._refusal(request, result.text)
        return result  # type: ignore[no-any-return]

    def wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]]
    ) -> ToolMessage | Command[Any]:
        """Decide the call where it executes; run it only as the decision allows; mediate its result."""
        c = self._call_context(request)
        if isinstance(c, ToolMessage):
            return c

        def execute(e: Execute) -> ToolMessage | Command[Any]:
            with sealed_call(self.governor, e.name, e.args, e.capability, tool=self.enforcer.catalog(e.name)):
                return handler(self._request_for(request, e))

        return self._finish(request, drive(self.enforcer.call(c), self.governor, execute, ask))

    async def awrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]]
    ) -> ToolMessage | Command[Any]:
        c = self._call_context(request)
        if isinstance(c, ToolMessage):
            return c

        async def execute(e: Execute) -> ToolMessage | Command[Any]:
            with sealed_call(self.governor, e.name, e.args, e.capability, tool=self.enforcer.catalog(e.name)):
                return await handler(self._request_for(request, e))

        return self._finish(request, await adrive(self.enforcer.call(c), self.governor, execute, aask))
