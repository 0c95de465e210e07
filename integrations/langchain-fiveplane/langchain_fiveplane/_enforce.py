"""One tool call, decided and enforced at the point of execution: shared by the middleware and the tool wrapper.

The path is written once, as a generator of *effects* (decide, record, a blocking database call,
wait for an approval, execute the tool); a sync driver and an async driver perform them. Sync and
async agents therefore take exactly the same decisions in the same order (async parity by
construction), and the async driver keeps every blocking call off the event loop.

Path of one call: build the ``tool_call`` Action (catalog name, the run's principal, session and
intent) → decide → ``require_approval``: pause with ``interrupt()`` (LangGraph with a
checkpointer), wait for the approval store, or refuse as pending → ``block`` / ``defer`` / a
pending approval: the tool does not run and the model reads the explanation → ``modify``: the tool
runs with the rewritten arguments → ``narrow``: the tool runs with the attenuated capability (or
not at all when no plane provided one) → the result is decided as a ``tool_result`` step (data
plane, information flow) and redacted or withheld before the model sees it. Anything that fails on
the way blocks the call (fail closed); an error of the tool itself is recorded and re-raised.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from langgraph.errors import GraphBubbleUp
from langgraph.types import interrupt
from pydantic import ValidationError

from fiveplane import (
    Action,
    ApprovalError,
    ApprovalRequest,
    ApprovalStatus,
    ApprovalStore,
    Decision,
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

__all__ = [
    "ApprovalMode",
    "CallContext",
    "CapabilityProvider",
    "Enforcer",
    "Refusal",
    "ResultAdapter",
    "adrive",
    "current_capability",
    "drive",
]

T = TypeVar("T")

ApprovalMode = Literal["auto", "interrupt", "wait", "defer"]
"""How a ``require_approval`` decision pauses the call.

- ``interrupt``: LangGraph ``interrupt()`` with the approval request; the run resumes with the approver's
  answer (``Command(resume=...)``). Needs a checkpointer.
- ``wait``: block this call until the request is decided in the approval store (CLI, Python API,
  another process) or ``approval_timeout`` passes.
- ``defer``: do not wait: the call does not run and the model is told it awaits approval; once
  approved, the same call proposed again runs (once).
- ``auto`` (default): ``interrupt`` inside a LangGraph run with a checkpointer, otherwise ``wait`` when
  ``approval_timeout > 0``, otherwise ``defer``.
"""

CapabilityProvider = Callable[[Governor, Action, Decision], Any]
"""Returns the capability (e.g. the identity plane's attenuated token) a proceeding call runs with, or ``None``."""

_CAPABILITY: contextvars.ContextVar[Any] = contextvars.ContextVar("fiveplane_capability", default=None)


def current_capability() -> Any:
    """The capability token the current governed tool call runs with (``None`` when no plane minted one).

    A tool that talks to a connector reads it here and presents it instead of a standing credential::

        @tool
        def update_status(contract_id: str, status: str) -> str:
            token = current_capability()
            return contracts_api(token).update(contract_id, status)
    """
    return _CAPABILITY.get()


def default_capability(governor: Governor, action: Action, decision: Decision) -> Any:
    """The token a plane minted for this action: any plane with ``take_capability(action_id)`` (identity)."""
    for plane in governor.planes:
        take = getattr(plane, "take_capability", None)
        if callable(take):
            cap = take(action.action_id)
            if cap is not None:
                return cap
    return None


# ---- sealed calls: a governed tool does not decide again what the middleware just decided ---------


@dataclass
class _Sealed:
    governor: Governor
    name: str
    args: Any
    """The arguments decided (JSON form)."""
    used: bool = False


_SEALED: contextvars.ContextVar[_Sealed | None] = contextvars.ContextVar("fiveplane_sealed_call", default=None)


def take_sealed(governor: Governor, name: str, args: Mapping[str, Any]) -> bool:
    """True (once) when the middleware of the same governor decided exactly this call just now."""
    sealed = _SEALED.get()
    if sealed is None or sealed.used or sealed.governor is not governor or sealed.name != name:
        return False
    if sealed.args != json_value(dict(args)):
        return False
    sealed.used = True
    return True


# ---- effects and drivers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decide:
    action: Action


@dataclass(frozen=True, slots=True)
class Record:
    action: Action
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Blocking:
    """A call that may block (database, token vault): off the event loop in async runs."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class WaitFor:
    store: ApprovalStore
    request_id: str
    timeout: float


@dataclass(frozen=True, slots=True)
class Execute:
    name: str
    args: dict[str, Any]
    capability: Any


Effect = Decide | Record | Blocking | WaitFor | Execute
Flow = Generator[Effect, Any, T]


def drive(flow: Flow[T], governor: Governor, execute: Callable[[Execute], Any]) -> T:
    """Run a flow synchronously."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error, value = None, None
        try:
            if isinstance(effect, Decide):
                value = governor.decide(effect.action)
            elif isinstance(effect, Record):
                governor.record_outcome(effect.action, effect.outcome)
            elif isinstance(effect, Blocking):
                value = effect.fn(*effect.args)
            elif isinstance(effect, WaitFor):
                value = effect.store.wait(effect.request_id, effect.timeout)
            else:
                value = execute(effect)
        except BaseException as exc:  # noqa: BLE001 - handed to the flow, which decides (and re-raises)
            error = exc


async def adrive(flow: Flow[T], governor: Governor, execute: Callable[[Execute], Awaitable[Any]]) -> T:
    """Run a flow on the event loop; blocking effects run in worker threads."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error, value = None, None
        try:
            if isinstance(effect, Decide):
                value = await governor.adecide(effect.action)
            elif isinstance(effect, Record):
                await governor.arecord_outcome(effect.action, effect.outcome)
            elif isinstance(effect, Blocking):
                value = await asyncio.to_thread(effect.fn, *effect.args)
            elif isinstance(effect, WaitFor):
                value = await effect.store.await_decision(effect.request_id, effect.timeout)
            else:
                value = await execute(effect)
        except BaseException as exc:  # noqa: BLE001
            error = exc


# ---- the call and its outcome ----------------------------------------------------------------------


class ResultAdapter:
    """How a framework result carries content (LangChain: a ToolMessage, a Command, or a raw value)."""

    NOTHING: Any = object()

    def content(self, result: Any) -> Any:
        """The content the model will see, or ``NOTHING`` when there is none to mediate."""
        raise NotImplementedError

    def failed(self, result: Any) -> str | None:
        """The error the tool reported through its result (e.g. ``status="error"``), if any."""
        return None

    def replace(self, result: Any, content: Any, *, withheld: bool) -> Any:
        """The result with ``content`` instead (redacted, or a notice when ``withheld``)."""
        raise NotImplementedError

    def annotate(self, result: Any, note: str) -> Any:
        """The result with ``note`` put before its content (an approver's edit)."""
        return result


@dataclass
class CallContext:
    """One tool call as the framework proposed it."""

    run: Run
    name: str
    """The framework's tool name (may differ from the catalog name)."""
    args: dict[str, Any]
    """The arguments the model gave (without framework-injected values)."""
    tool_call_id: str | None
    adapter: ResultAdapter
    interrupts: bool
    """A LangGraph run with a checkpointer: ``interrupt()`` can pause and resume this call."""
    retarget: Callable[[str], bool] | None = None
    """Can an approver's edit turn this call into a call of the tool ``name``? (``None``: never.)"""


@dataclass
class Refusal:
    """The call did not run: what the model (or the caller) is told, with the decision behind it."""

    decision: Decision | None
    text: str
    status: OutcomeStatus


@dataclass
class _Pending:
    action: Action
    decision: Decision
    name: str
    args: dict[str, Any]
    edited_by: str | None = None
    replaced: list[tuple[str, Principal, str]] = field(default_factory=list)
    """Approval requests an edit replaced: denied once the edited call is settled."""


def approval_id(decision: Decision) -> str | None:
    for ob in decision.obligations_of(ObligationKind.APPROVAL):
        rid = ob.params.get("approval_id")
        if rid:
            return str(rid)
    return None


def refusal_text(decision: Decision) -> str:
    """What the model reads when its call did not run."""
    v = decision.verdict
    if v is Verdict.REQUIRE_APPROVAL:
        rid = approval_id(decision)
        ob = decision.obligations_of(ObligationKind.APPROVAL)
        role = ob[0].params.get("role") if ob else None
        who = f" by a {role}" if role else ""
        req = f" (request {rid})" if rid else " (nobody can approve it, so it stays paused)"
        return (
            f"fiveplane: this tool call needs approval{who} and did not run{req}. {decision.explanation} "
            "Tell the user it awaits approval; proposing it again runs it once it is approved."
        )
    if v is Verdict.DEFER:
        return f"fiveplane deferred this tool call; it did not run. {decision.explanation}"
    return f"fiveplane blocked this tool call; it did not run. {decision.explanation} Do not retry it unchanged."


def _status(decision: Decision) -> OutcomeStatus:
    if decision.verdict is Verdict.REQUIRE_APPROVAL:
        return OutcomeStatus.APPROVAL_PENDING
    if decision.verdict is Verdict.DEFER:
        return OutcomeStatus.DEFERRED
    if "approval.denied" in decision.rule_ids:
        return OutcomeStatus.APPROVAL_DENIED
    return OutcomeStatus.BLOCKED


def json_value(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return json_value(dump(mode="json"))
        except Exception:  # noqa: BLE001 - fall back to the text form
            return repr(value)
    return repr(value)


# ---- the approval answer ---------------------------------------------------------------------------

ApproverResolver = Callable[[Mapping[str, Any]], Principal]
"""Turns a resume payload into the approving principal (e.g. verifying a signed token); raise to refuse."""


def approver_from_payload(answer: Mapping[str, Any]) -> Principal:
    """The default: the payload names the approver (``{"approver": {"id": ..., "roles": [...]}}``).

    Whoever can resume the graph is trusted to say who approves, exactly like ``fiveplane approvals
    approve --as``; pass ``resolve_approver=`` to verify a token instead.
    """
    who = answer.get("approver")
    if isinstance(who, Principal):
        return who
    if isinstance(who, Mapping):
        return Principal.model_validate({"kind": PrincipalKind.USER.value, **who})
    if isinstance(who, str) and answer.get("roles"):
        return Principal(kind=PrincipalKind.USER, id=who, roles=tuple(answer["roles"]))
    raise ApprovalError("the answer must name the approver: {'approver': {'id': ..., 'roles': [...]}}")


_KINDS = {"approve": "approve", "approved": "approve", "deny": "deny", "denied": "deny", "reject": "deny", "edit": "edit"}


def _parse_answer(answer: Any) -> tuple[str, Mapping[str, Any]]:
    if answer is None:
        return "check", {}
    if isinstance(answer, str):
        answer = {"type": answer}
    if not isinstance(answer, Mapping):
        raise ApprovalError(f"cannot read the answer {answer!r}: expected a mapping with a 'type'")
    kind = str(answer.get("type", "check")).lower()
    if kind == "check":
        return "check", answer
    if kind not in _KINDS:
        raise ApprovalError(f"unknown answer type {kind!r}: use approve, deny (reject), edit or check")
    return _KINDS[kind], answer


def _edited(answer: Mapping[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    edited = answer.get("edited_action")  # LangChain HITL's shape
    if isinstance(edited, Mapping):
        new_name, args = str(edited.get("name") or name), edited.get("args")
    else:
        new_name, args = str(answer.get("name") or name), answer.get("args")
    if not isinstance(args, Mapping):
        raise ApprovalError("an edit must give the new arguments: {'type': 'edit', 'args': {...}}")
    return new_name, dict(args)


def _check_can_decide(req: ApprovalRequest, who: Principal, now: datetime) -> None:
    """The checks ``ApprovalStore.approve`` makes, without deciding (an edit replaces the request)."""
    if req.status is not ApprovalStatus.PENDING:
        raise ApprovalError(f"request {req.id} is {req.status.value}, not pending")
    if req.expired(now):
        raise ApprovalError(f"request {req.id} expired at {req.expires_at.isoformat()}")
    if req.role not in who.roles:
        raise ApprovalError(f"{who.id} does not hold the role {req.role!r} this approval needs")
    if req.separation_of_duties and who.id == req.requester:
        raise ApprovalError(f"{who.id} requested this action and cannot also approve, deny or edit it (separation of duties)")


# ---- the enforcer ----------------------------------------------------------------------------------


class Enforcer:
    """Decides and enforces tool calls for one Governor (used by the middleware and the tool wrapper)."""

    def __init__(
        self,
        governor: Governor,
        *,
        approval_mode: ApprovalMode = "auto",
        approval_timeout: float = 0.0,
        resolve_approver: ApproverResolver | None = None,
        capability: CapabilityProvider | None = None,
        max_approval_rounds: int = 5,
        catalog: Callable[[str], str] = lambda name: name,
    ) -> None:
        if approval_mode not in ("auto", "interrupt", "wait", "defer"):
            raise ValueError(f"approval_mode must be auto, interrupt, wait or defer, not {approval_mode!r}")
        if approval_mode == "wait" and approval_timeout <= 0:
            raise ValueError("approval_mode='wait' needs approval_timeout > 0 (seconds)")
        if approval_timeout < 0 or max_approval_rounds < 1:
            raise ValueError("approval_timeout must be >= 0 and max_approval_rounds >= 1")
        self.governor = governor
        self.approval_mode = approval_mode
        self.approval_timeout = approval_timeout
        self.resolve_approver = resolve_approver or approver_from_payload
        self.capability = capability or default_capability
        self.max_approval_rounds = max_approval_rounds
        self.catalog = catalog

    # -- building actions --------------------------------------------------------------------------

    def call_action(self, run: Run, name: str, args: Mapping[str, Any]) -> Action:
        return run.action(MediationPoint.TOOL_CALL, tool=self.catalog(name), arguments=json_value(dict(args)))

    def _mode(self, c: CallContext) -> ApprovalMode:
        if self.approval_mode != "auto":
            return self.approval_mode
        if c.interrupts:
            return "interrupt"
        return "wait" if self.approval_timeout > 0 else "defer"

    # -- the flow ----------------------------------------------------------------------------------

    def call(self, c: CallContext) -> Flow[Any]:
        """Decide, pause, enforce, execute and mediate one call. Returns the result or a :class:`Refusal`."""
        try:
            action = self.call_action(c.run, c.name, c.args)
        except GraphBubbleUp:
            raise
        except Exception as exc:  # noqa: BLE001 - a call that cannot be judged does not run
            return Refusal(
                None, f"fiveplane blocked this tool call; it did not run: it could not be judged ({exc}).", OutcomeStatus.BLOCKED
            )
        decision: Decision = yield Decide(action)
        p = _Pending(action, decision, c.name, dict(c.args))
        if decision.verdict is Verdict.REQUIRE_APPROVAL:
            p = yield from self._approve(p, c)
        action, decision = p.action, p.decision
        if not decision.verdict.proceeds:
            yield Record(action, Outcome(action_id=action.action_id, status=_status(decision)))
            if decision.verdict is Verdict.BLOCK:
                yield from self._settle(p)
            return Refusal(decision, refusal_text(decision), _status(decision))
        args = dict(decision.modified_arguments) if decision.modified_arguments is not None else p.args
        capability = yield Blocking(self.capability, (self.governor, action, decision))
        if decision.verdict is Verdict.NARROW and capability is None:
            yield Record(
                action, Outcome(action_id=action.action_id, status=OutcomeStatus.BLOCKED, detail={"reason": "no capability"})
            )
            return Refusal(
                decision,
                "fiveplane blocked this tool call; it did not run: the decision narrows its authority but no identity "
                f"plane provided the attenuated capability to run it with. {decision.explanation}",
                OutcomeStatus.BLOCKED,
            )
        t0 = time.perf_counter()
        try:
            result = yield Execute(p.name, args, capability)
        except GraphBubbleUp:
            raise  # the tool itself paused the run (its own interrupt): not an outcome yet
        except BaseException as exc:
            yield Record(
                action,
                Outcome(
                    action_id=action.action_id,
                    status=OutcomeStatus.ERROR,
                    error=f"{type(exc).__name__}: {exc}",
                    duration_ms=(time.perf_counter() - t0) * 1000,
                ),
            )
            yield from self._settle(p)
            raise
        ms = (time.perf_counter() - t0) * 1000
        yield from self._settle(p)
        content = c.adapter.content(result)
        if self.governor.evidence is not None:  # the digest costs a canonical-JSON pass: only for evidence
            failed = c.adapter.failed(result)
            yield Record(
                action,
                Outcome(
                    action_id=action.action_id,
                    status=OutcomeStatus.ERROR if failed else OutcomeStatus.SUCCESS,
                    error=failed,
                    result_digest=None if content is ResultAdapter.NOTHING else digest_value(json_value(content)),
                    duration_ms=ms,
                ),
            )
        if content is not ResultAdapter.NOTHING:
            result = yield from self._mediate_result(c, action, result, content)
        if p.edited_by is not None:
            result = c.adapter.annotate(
                result,
                f"Note: the approver {p.edited_by} replaced your tool call before it ran; executed instead: "
                f"{p.name} with arguments {json_value(args)}. Do not re-issue your original call.",
            )
        return result

    def _mediate_result(self, c: CallContext, call: Action, result: Any, content: Any) -> Flow[Any]:
        try:
            res_action = c.run.action(
                MediationPoint.TOOL_RESULT, tool=call.tool, content=json_value(content), parent_action_id=call.action_id
            )
        except GraphBubbleUp:
            raise
        except Exception as exc:  # noqa: BLE001 - a result that cannot be judged does not reach the model
            return c.adapter.replace(
                result, f"fiveplane withheld this tool result: it could not be judged ({exc}).", withheld=True
            )
        rd: Decision = yield Decide(res_action)
        if rd.verdict.proceeds:
            if rd.modified_content is not None:
                return c.adapter.replace(result, rd.modified_content, withheld=False)
            return result
        return c.adapter.replace(
            result, f"fiveplane withheld this tool result ({rd.verdict.value}). {rd.explanation}", withheld=True
        )

    # -- approvals ---------------------------------------------------------------------------------

    def _approve(self, p: _Pending, c: CallContext) -> Flow[_Pending]:
        store = self.governor.approvals
        mode = self._mode(c)
        if mode == "interrupt" and not c.interrupts:
            # an interrupt nobody can resume would pause the run forever: refuse now, as pending
            return p
        error: str | None = None
        rounds = 0
        while p.decision.verdict is Verdict.REQUIRE_APPROVAL:
            rid = approval_id(p.decision)
            if store is None or rid is None or mode == "defer":
                break
            if mode == "wait":
                yield WaitFor(store, rid, self.approval_timeout)
                p.decision = yield Decide(p.action)
                break
            if rounds >= self.max_approval_rounds:
                break
            rounds += 1
            answer = interrupt(self._interrupt_value(p, c, rid, error))
            error = None
            try:
                yield from self._apply(p, c, store, rid, answer)
            except GraphBubbleUp:
                raise
            except (ApprovalError, ValidationError, ValueError, TypeError, KeyError) as exc:
                error = str(exc)
            p.decision = yield Decide(p.action)
        return p

    def _interrupt_value(self, p: _Pending, c: CallContext, rid: str, error: str | None) -> dict[str, Any]:
        """The interrupt payload: LangChain's per-call ``ToolApprovalRequest`` shape plus the fiveplane request."""
        ob = p.decision.obligations_of(ObligationKind.APPROVAL)
        params = ob[0].params if ob else {}
        user = p.action.user
        value: dict[str, Any] = {
            "type": "tool_approval",
            "tool_call_id": c.tool_call_id,
            "name": p.name,
            "args": json_value(p.args),
            "description": p.decision.explanation,
            "fiveplane": {
                "approval_id": rid,
                "digest": self.governor.normalize(p.action)[0].digest(),
                "action_id": p.action.action_id,
                "session_id": p.action.session_id,
                "tool": p.action.tool,
                "requester": user.id if user else None,
                "role": params.get("role"),
                "separation_of_duties": params.get("separation_of_duties", True),
                "expires_at": params.get("expires_at"),
                "rule_ids": list(p.decision.rule_ids),
                "answer": {
                    "approve": {"type": "approve", "approver": {"id": "...", "roles": ["..."]}},
                    "deny": {"type": "deny", "approver": {"id": "...", "roles": ["..."]}, "reason": "..."},
                    "edit": {"type": "edit", "approver": {"id": "...", "roles": ["..."]}, "args": {}},
                    "check": {"type": "check"},
                },
            },
        }
        if error:
            value["fiveplane"]["error"] = f"the previous answer was refused: {error}"
        return value

    def _apply(self, p: _Pending, c: CallContext, store: ApprovalStore, rid: str, answer: Any) -> Flow[None]:
        kind, payload = _parse_answer(answer)
        if kind == "check":
            return  # decided meanwhile through the CLI or the Python API? the next decision tells
        bound = payload.get("approval_id")
        if bound and bound != rid:
            raise ApprovalError(f"the answer is for request {bound}, which is no longer current: this call is now request {rid}")
        req: ApprovalRequest = yield Blocking(store.get, (rid,))
        if req.status is not ApprovalStatus.PENDING:
            return  # decided elsewhere: the store is authoritative
        who = self.resolve_approver(payload)
        reason = payload.get("reason") or payload.get("message")
        if kind == "approve":
            yield Blocking(store.approve, (rid, who, reason))
        elif kind == "deny":
            yield Blocking(store.deny, (rid, who, reason))
        else:
            _check_can_decide(req, who, store.clock())
            name, args = _edited(payload, p.name)
            if name == p.name and json_value(args) == json_value(p.args):
                raise ApprovalError("the edit changes nothing: approve or deny instead")
            if name != p.name and (c.retarget is None or not c.retarget(name)):
                raise ApprovalError(f"the call cannot be edited into the tool {name!r} (not available here)")
            action = self.call_action(c.run, name, args)
            p.replaced.append((rid, who, f"replaced by an edit by {who.id}" + (f": {reason}" if reason else "")))
            p.action, p.name, p.args, p.edited_by = action, name, args, who.id

    def _settle(self, p: _Pending) -> Flow[None]:
        """An edited call reached its outcome: the requests it replaced are denied (never run later)."""
        store = self.governor.approvals
        while p.replaced and store is not None:
            rid, who, why = p.replaced.pop()
            try:
                yield Blocking(store.deny, (rid, who, why))
            except ApprovalError:
                pass  # expired or decided meanwhile: nothing left to close


def sealed_execute(governor: Governor, e: Execute) -> tuple[contextvars.Token[_Sealed | None], contextvars.Token[Any]]:
    """Mark the call as decided (for a governed tool underneath) and expose its capability; reset after."""
    return (
        _SEALED.set(_Sealed(governor, e.name, json_value(e.args))),
        _CAPABILITY.set(e.capability),
    )


def unseal(tokens: tuple[contextvars.Token[_Sealed | None], contextvars.Token[Any]]) -> None:
    _SEALED.reset(tokens[0])
    _CAPABILITY.reset(tokens[1])


def set_capability(capability: Any) -> contextvars.Token[Any]:
    return _CAPABILITY.set(capability)


def reset_capability(token: contextvars.Token[Any]) -> None:
    _CAPABILITY.reset(token)
