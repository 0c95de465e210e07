"""The one path of a governed call: decide → approve → capability → execute → record → mediate the result.

Every adapter drives this path: the core :class:`~fiveplane.GovernedTool`, the LangChain middleware,
tools and retriever, the LlamaIndex tools and retrievers. It is written once, as a generator of
*effects* (decide, record an outcome, a blocking call, wait for an approval, ask a person, execute
the tool); :func:`drive` performs them synchronously and :func:`adrive` on an event loop (blocking
calls in worker threads), so sync and async calls take the same decisions in the same order.

Path of one call (:meth:`CallProtocol.call`): build the ``tool_call`` Action (catalog name, the run's
principal, session and intent) → decide → ``require_approval``: ask a person through the framework's
pause (LangGraph ``interrupt()``, a LlamaIndex workflow event), wait for the approval store, or refuse
as pending → ``block`` / ``defer`` / still pending: the tool does not run and the caller is told why →
``modify``: it runs with the rewritten arguments → ``narrow``: it runs with the attenuated capability
(or not at all when no plane provided one) → the outcome is recorded → the result is decided as a
``tool_result`` step (data plane, information flow) and redacted or withheld before anyone sees it.
Anything that fails on the way blocks the call (fail closed); an error of the tool itself is recorded
and re-raised; a framework's control-flow exception (a pause) passes through untouched.

:meth:`CallProtocol.retrieve` is the same for retrievals: the query decided as a ``tool_call`` of the
source, then every document / node decided as a ``retrieval`` step and dropped or rewritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import ValidationError

from ._actions import Action, MediationPoint, Principal, PrincipalKind
from ._approvals import ApprovalError, ApprovalRequest, ApprovalStatus, ApprovalStore
from ._decisions import Decision, ObligationKind, Verdict
from ._evidence import Outcome, OutcomeStatus, digest_value, jsonable

if TYPE_CHECKING:
    from ._engine import GovernanceError, Governor, Run

__all__ = [
    "ApprovalMode",
    "ApproverResolver",
    "Ask",
    "CallContext",
    "CallProtocol",
    "CapabilityProvider",
    "Execute",
    "ItemAdapter",
    "Refusal",
    "ResultAdapter",
    "RetrievalContext",
    "adrive",
    "approval_id",
    "approver_from_payload",
    "capability_scope",
    "current_capability",
    "default_capability",
    "drive",
    "exception_for",
    "refusal_text",
    "sealed_call",
    "sealed_tool",
    "take_sealed",
]

log = logging.getLogger("fiveplane.calls")
T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - an item (document, node)

ApprovalMode = Literal["auto", "interrupt", "wait", "defer"]
"""How a ``require_approval`` decision pauses the call.

- ``interrupt``: ask a person through the framework's pause (LangGraph ``interrupt()``, a LlamaIndex
  workflow event); the call resumes with the answer. Needs a driver that can pause.
- ``wait``: block this call until the request is decided in the approval store (console, CLI, Python
  API, another process) or ``approval_timeout`` passes.
- ``defer``: do not wait: the call does not run and the caller is told it awaits approval; once
  approved, the same call proposed again runs (once).
- ``auto`` (default): ``interrupt`` where the driver can pause, otherwise ``wait`` when
  ``approval_timeout > 0``, otherwise ``defer``.
"""

CapabilityProvider = Callable[["Governor", Action, Decision], Any]
"""Returns the capability (e.g. the identity plane's attenuated token) a proceeding call runs with, or ``None``."""

ApproverResolver = Callable[[Mapping[str, Any]], Principal]
"""Turns an answer into the approving principal (e.g. verifying a signed token); raise to refuse."""


# ---- helpers every adapter shares -------------------------------------------------------------------


def approval_id(decision: Decision) -> str | None:
    """The approval request a ``require_approval`` decision filed, if any."""
    for ob in decision.obligations_of(ObligationKind.APPROVAL):
        rid = ob.params.get("approval_id")
        if rid:
            return str(rid)
    return None


def exception_for(decision: Decision, action: Action | None = None) -> GovernanceError:
    """The exception that stops a call with this decision: the one verdict → exception map."""
    from ._engine import ActionBlocked, ActionDeferred, ApprovalRequired

    kind = {Verdict.REQUIRE_APPROVAL: ApprovalRequired, Verdict.DEFER: ActionDeferred}.get(decision.verdict, ActionBlocked)
    return kind(decision, action)


def refusal_text(decision: Decision) -> str:
    """What the model (or the caller) reads when its call did not run."""
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


def stop_status(decision: Decision) -> OutcomeStatus:
    """The outcome of a call that did not run because of ``decision``."""
    if decision.verdict is Verdict.REQUIRE_APPROVAL:
        return OutcomeStatus.APPROVAL_PENDING
    if decision.verdict is Verdict.DEFER:
        return OutcomeStatus.DEFERRED
    if "approval.denied" in decision.rule_ids:
        return OutcomeStatus.APPROVAL_DENIED
    return OutcomeStatus.BLOCKED


# ---- the capability a call runs with ----------------------------------------------------------------

_CAPABILITY: contextvars.ContextVar[Any] = contextvars.ContextVar("fiveplane_capability", default=None)


def current_capability() -> Any:
    """The capability token the current governed call runs with (``None`` when no plane minted one).

    A tool that talks to a connector reads it here (or declares a ``capability`` parameter) and
    presents it instead of a standing credential::

        def update_status(contract_id: str, status: str) -> str:
            return contracts_api(current_capability()).update(contract_id, status)
    """
    return _CAPABILITY.get()


@contextlib.contextmanager
def capability_scope(capability: Any) -> Iterator[None]:
    """Expose ``capability`` as :func:`current_capability` while the tool runs."""
    token = _CAPABILITY.set(capability)
    try:
        yield
    finally:
        _CAPABILITY.reset(token)


def default_capability(governor: Governor, action: Action, decision: Decision) -> Any:
    """The token a plane minted for this action (the identity plane's), handed out once."""
    return governor.take_capability(action.action_id)


# ---- sealed calls: a governed tool does not decide again what an outer driver just decided ----------


@dataclass
class _Sealed:
    governor: Any
    name: str
    args: Any
    tool: str | None = None
    """The catalog tool of the call (``name`` is the framework's)."""
    used: bool = False


_SEALED: contextvars.ContextVar[_Sealed | None] = contextvars.ContextVar("fiveplane_sealed_call", default=None)


@contextlib.contextmanager
def sealed_call(
    governor: Governor, name: str, args: Mapping[str, Any], capability: Any, *, tool: str | None = None
) -> Iterator[None]:
    """While the tool runs: mark the call as decided (for a governed tool underneath) and expose its capability.

    ``name`` is the framework's tool name, ``tool`` the catalog's (default: the same).
    """
    sealed = _SEALED.set(_Sealed(governor, name, jsonable(dict(args)), tool or name))
    try:
        with capability_scope(capability):
            yield
    finally:
        _SEALED.reset(sealed)


def sealed_tool(governor: Governor) -> str | None:
    """The catalog tool whose decided call of ``governor`` is executing right now, if any.

    A governed retriever running inside the governed tool call of its own source (a retriever
    offered to an agent as a tool) does not decide the query a second time.
    """
    sealed = _SEALED.get()
    return sealed.tool if sealed is not None and sealed.governor is governor else None


def take_sealed(governor: Governor, name: str, args: Mapping[str, Any]) -> bool:
    """True (once) when an outer driver of the same governor decided exactly this call just now."""
    sealed = _SEALED.get()
    if sealed is None or sealed.used or sealed.governor is not governor or sealed.name != name:
        return False
    if sealed.args != jsonable(dict(args)):
        return False
    sealed.used = True
    return True


# ---- effects and drivers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decide:
    action: Action


@dataclass(frozen=True, slots=True)
class Record:
    action: Action
    outcome: Outcome
    durable: bool | None = None
    with_next: bool = False
    """The tool's result is decided right after: the outcome may be committed with that decision."""


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
class Ask:
    """Pause and ask a person about an approval request; the driver returns the answer (a mapping).

    A driver whose framework replays the call on resume (LlamaIndex workflows) keeps ``decision``
    and hands it back as :attr:`CallContext.resumed`, so the replay does not decide (and record) again.
    """

    payload: dict[str, Any]
    request: ApprovalRequest
    decision: Decision
    action: Action


@dataclass(frozen=True, slots=True)
class Execute:
    """Run the tool (or the retriever) with these arguments and this capability."""

    name: str
    args: dict[str, Any]
    capability: Any


Effect = Decide | Record | Blocking | WaitFor | Ask | Execute
Flow = Generator[Effect, Any, T]


def run_effects(flow: Generator[Any, Any, T], perform: Callable[[Any], Any]) -> T:
    """Drive a generator of effects: ``perform`` each; its value is sent back, its exception thrown in."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value, error = None, None
        try:
            value = perform(effect)
        except BaseException as exc:  # noqa: BLE001 - handed to the flow, which decides (and re-raises)
            error = exc


async def arun_effects(flow: Generator[Any, Any, T], perform: Callable[[Any], Awaitable[Any]]) -> T:
    """Async twin of :func:`run_effects` (``perform`` is awaited)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value, error = None, None
        try:
            value = await perform(effect)
        except BaseException as exc:  # noqa: BLE001
            error = exc


def _no_ask(effect: Ask) -> Any:
    raise ApprovalError("this driver cannot pause to ask a person")


def drive(flow: Flow[T], governor: Governor, execute: Callable[[Execute], Any], ask: Callable[[Ask], Any] = _no_ask) -> T:
    """Run a flow synchronously."""

    def perform(effect: Effect) -> Any:
        if isinstance(effect, Decide):
            return governor.decide(effect.action)
        if isinstance(effect, Record):
            return governor.record_outcome(effect.action, effect.outcome, durable=effect.durable, with_next=effect.with_next)
        if isinstance(effect, Blocking):
            return effect.fn(*effect.args)
        if isinstance(effect, WaitFor):
            return effect.store.wait(effect.request_id, effect.timeout)
        if isinstance(effect, Ask):
            return ask(effect)
        return execute(effect)

    return run_effects(flow, perform)


async def _ano_ask(effect: Ask) -> Any:
    raise ApprovalError("this driver cannot pause to ask a person")


async def adrive(
    flow: Flow[T],
    governor: Governor,
    execute: Callable[[Execute], Awaitable[Any]],
    ask: Callable[[Ask], Awaitable[Any]] = _ano_ask,
) -> T:
    """Run a flow on the event loop; blocking effects run in worker threads."""

    async def perform(effect: Effect) -> Any:
        if isinstance(effect, Decide):
            return await governor.adecide(effect.action)
        if isinstance(effect, Record):
            return await governor.arecord_outcome(
                effect.action, effect.outcome, durable=effect.durable, with_next=effect.with_next
            )
        if isinstance(effect, Blocking):
            return await asyncio.to_thread(effect.fn, *effect.args)
        if isinstance(effect, WaitFor):
            return await effect.store.await_decision(effect.request_id, effect.timeout)
        if isinstance(effect, Ask):
            return await ask(effect)
        return await execute(effect)

    return await arun_effects(flow, perform)


# ---- the call and its outcome -------------------------------------------------------------------------


class ResultAdapter:
    """How a framework result carries content (a raw value by default; a ToolMessage, a ToolOutput...)."""

    NOTHING: Any = object()

    def content(self, result: Any) -> Any:
        """The content the model will see, or ``NOTHING`` when there is none to mediate."""
        return jsonable(result)

    def failed(self, result: Any) -> str | None:
        """The error the tool reported through its result (e.g. ``status="error"``), if any."""
        return None

    def replace(self, result: Any, content: Any) -> Any:
        """The result with ``content`` instead (redacted by the data plane)."""
        return content

    def withhold(self, result: Any, decision: Decision, text: str) -> Any:
        """The policy withheld the result: what the caller gets instead (raise to stop the caller)."""
        raise exception_for(decision)

    def annotate(self, result: Any, note: str) -> Any:
        """The result with ``note`` put before its content (an approver's edit)."""
        return result


def _never(exc: BaseException) -> bool:
    return False


@dataclass
class CallContext:
    """One tool call as the framework proposed it."""

    run: Run
    name: str
    """The framework's tool name (may differ from the catalog name)."""
    args: dict[str, Any]
    """The arguments the model gave (without framework-injected values)."""
    tool_call_id: str | None = None
    adapter: ResultAdapter = field(default_factory=ResultAdapter)
    can_pause: bool = False
    """The driver can pause and resume this call (``Ask``): a LangGraph run with a checkpointer, a workflow."""
    retarget: Callable[[str], bool] | None = None
    """Can an approver's edit turn this call into a call of the tool ``name``? (``None``: never.)"""
    control_flow: Callable[[BaseException], bool] = _never
    """The framework's own pause / control-flow exceptions: passed through, never an outcome."""
    resumed: Decision | None = None
    """The ``require_approval`` decision of the pass that paused (a replaying driver): not decided again."""


@dataclass
class Refusal:
    """The call did not run: what the model (or the caller) is told, with the decision behind it."""

    decision: Decision | None
    text: str
    status: OutcomeStatus
    action: Action | None = None
    error: Exception | None = None
    """Why the call could not even be judged (``decision`` is then ``None``)."""
    note: str | None = None
    """Why asking for approval ended without an answer that decides (a refused answer, a timeout)."""
    cause: Exception | None = None
    """Recording the refusal's outcome failed too (the ledger is down): raised ``from`` it."""

    def exception(self) -> Exception:
        """The exception a raising driver throws for this refusal (its ``__cause__`` set to :attr:`cause`)."""
        if self.decision is not None:
            exc = exception_for(self.decision, self.action)
            exc.__cause__ = self.cause
            return exc
        return self.error if self.error is not None else ValueError(self.text)


@dataclass
class _Pending:
    action: Action
    decision: Decision
    name: str
    args: dict[str, Any]
    edited_by: str | None = None
    replaced: list[tuple[str, Principal, str]] = field(default_factory=list)
    """Approval requests an edit replaced: denied once the edited call is settled."""
    refused: str | None = None
    """Why asking ended without a deciding answer (a sentence), when the call gives up asking."""
    resumed: bool = False


def _noted(action: Action, status: OutcomeStatus, **detail: Any) -> Flow[Exception | None]:
    """Record the outcome of something that did not run. Its decision already stops it, so a record
    that fails (the ledger is down: the decision says so) does not replace the refusal: the failure
    comes back, to be the refusal's ``cause``."""
    try:
        yield Record(action, Outcome(action_id=action.action_id, status=status, detail=detail), False)
    except Exception as exc:
        log.warning("could not record the %s outcome of action %s", status.value, action.action_id, exc_info=True)
        return exc
    return None


# ---- the approval answer ------------------------------------------------------------------------------


def approver_from_payload(answer: Mapping[str, Any]) -> Principal:
    """The default resolver: the answer names the approver (``{"approver": {"id": ..., "roles": [...]}}``).

    Whoever can resume the run is trusted to say who approves, exactly like ``fiveplane approvals
    approve --as``; pass ``resolve_approver=`` to verify a token instead.
    """
    who = answer.get("approver")
    if isinstance(who, Principal):
        return who
    if isinstance(who, Mapping):
        return Principal.model_validate({"kind": PrincipalKind.USER.value, **who})
    if isinstance(who, str) and answer.get("roles"):
        return Principal(kind=PrincipalKind.USER, id=who, roles=tuple(answer["roles"]))
    raise ApprovalError("the answer names no approver; it must name the approver: {'approver': {'id': ..., 'roles': [...]}}")


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


# ---- retrievals -----------------------------------------------------------------------------------------


class ItemAdapter(Generic[I]):
    """How a framework's retrieved item (a LangChain Document, a LlamaIndex node) becomes a step and back."""

    @staticmethod
    def labels(value: Any) -> tuple[str, ...]:
        """Classification labels from item metadata: a list, a set, one label, or a comma-separated string."""
        if value is None:
            return ()
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        if isinstance(value, (set, frozenset)):
            return tuple(sorted(str(v) for v in value))
        if isinstance(value, (list, tuple)):
            return tuple(str(v) for v in value)
        return (str(value),)

    def action(self, run: Run, item: I, source: str | None, query: str | None, parent: Action | None) -> Action:
        raise NotImplementedError

    def apply(self, item: I, decision: Decision) -> I | None:
        """The item the model may see after ``decision`` (a rewritten copy), or ``None`` (dropped)."""
        raise NotImplementedError

    def text(self, item: I) -> str:
        """The item's text (for the outcome's digest)."""
        raise NotImplementedError


@dataclass
class RetrievalContext(Generic[I]):
    """One retrieval: the query (decided first when there is a source) and how items are judged."""

    run: Run
    adapter: ItemAdapter[I]
    source: str | None = None
    """The catalog tool naming the retrieval source (its connector says whether it is trusted)."""
    query: str | None = None
    """The query; with a ``source`` it is decided as a ``tool_call`` before anything is retrieved."""
    items: Sequence[I] | None = None
    """Items retrieved already (a node postprocessor): no query step, nothing executed."""
    control_flow: Callable[[BaseException], bool] = _never


# ---- the protocol ---------------------------------------------------------------------------------------


class CallProtocol:
    """Decides and enforces governed calls for one Governor (every adapter drives it).

    Args:
        governor: the engine.
        approval_mode: how ``require_approval`` pauses (see :data:`ApprovalMode`).
        approval_timeout: seconds to wait for an approval in ``wait`` mode (and in ``auto`` when the
            driver cannot pause and this is > 0).
        resolve_approver: turns an answer into the approving principal (default: its ``approver``).
        capability: returns the capability a proceeding call runs with (default: the identity
            plane's token); the tool reads it with :func:`current_capability`.
        max_approval_rounds: answers one paused call takes before it gives up (as pending) when the
            approval store refuses them (wrong approver, malformed).
        catalog: framework tool name → catalog tool name.
    """

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

    # -- building actions ----------------------------------------------------------------------------

    def call_action(self, run: Run, name: str, args: Mapping[str, Any]) -> Action:
        if "capability" in args:
            raise TypeError(f"{name}: `capability` is supplied by the governor, never by the caller")
        action = run.action(MediationPoint.TOOL_CALL, tool=self.catalog(name), arguments=jsonable(dict(args), strict=True))
        return self.governor.normalize(action)[0]  # class and connector from the catalog, for the outcome too

    def _mode(self, c: CallContext) -> ApprovalMode:
        if self.approval_mode != "auto":
            return self.approval_mode
        if c.can_pause:
            return "interrupt"
        return "wait" if self.approval_timeout > 0 else "defer"

    # -- the flow ------------------------------------------------------------------------------------

    def call(self, c: CallContext) -> Flow[Any]:
        """Decide, pause, enforce, execute and mediate one call. Returns the result or a :class:`Refusal`."""
        try:
            action = self.call_action(c.run, c.name, c.args)
        except Exception as exc:
            if c.control_flow(exc):
                raise
            return Refusal(
                None,
                f"fiveplane blocked this tool call; it did not run: it could not be judged ({exc}).",
                OutcomeStatus.BLOCKED,
                error=exc,
            )
        resumed = c.resumed is not None and c.resumed.verdict is Verdict.REQUIRE_APPROVAL
        decision: Decision = c.resumed if resumed else (yield Decide(action))  # type: ignore[assignment]
        p = _Pending(action, decision, c.name, dict(c.args), resumed=resumed)
        if decision.verdict is Verdict.REQUIRE_APPROVAL:
            p = yield from self._approve(p, c)
        action, decision = p.action, p.decision
        if not decision.verdict.proceeds:
            cause = yield from _noted(action, stop_status(decision))
            if decision.verdict is Verdict.BLOCK:
                yield from self._settle(p)
            text = refusal_text(decision)
            if p.refused:
                text = f"{text} {p.refused}"
            return Refusal(decision, text, stop_status(decision), action, note=p.refused, cause=cause)
        args = dict(decision.modified_arguments) if decision.modified_arguments is not None else p.args
        capability = yield Blocking(self.capability, (self.governor, action, decision))
        if decision.verdict is Verdict.NARROW and capability is None:
            yield from _noted(action, OutcomeStatus.BLOCKED, reason="no capability")
            return Refusal(
                decision,
                "fiveplane blocked this tool call; it did not run: the decision narrows its authority but no identity "
                f"plane provided the attenuated capability to run it with. {decision.explanation}",
                OutcomeStatus.BLOCKED,
                action,
            )
        t0 = time.perf_counter()
        try:
            result = yield Execute(p.name, args, capability)
        except BaseException as exc:
            if c.control_flow(exc):
                raise  # the tool itself paused the run (its own interrupt): not an outcome yet
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
                    result_digest=None if content is ResultAdapter.NOTHING else digest_value(content),
                    duration_ms=ms,
                ),
                with_next=content is not ResultAdapter.NOTHING,
            )
        if content is not ResultAdapter.NOTHING:
            result = yield from self._mediate_result(c, action, result, content)
        if p.edited_by is not None:
            result = c.adapter.annotate(
                result,
                f"Note: the approver {p.edited_by} replaced your tool call before it ran; executed instead: "
                f"{p.name} with arguments {jsonable(args)}. Do not re-issue your original call.",
            )
        return result

    def _mediate_result(self, c: CallContext, call: Action, result: Any, content: Any) -> Flow[Any]:
        try:
            res_action = self.governor.normalize(
                c.run.action(MediationPoint.TOOL_RESULT, tool=call.tool, content=content, parent_action_id=call.action_id)
            )[0]
        except Exception as exc:
            if c.control_flow(exc):
                raise
            return c.adapter.withhold(
                result,
                _unjudged(self.governor, call, exc),
                f"fiveplane withheld this tool result: it could not be judged ({exc}).",
            )
        rd: Decision = yield Decide(res_action)
        if rd.verdict.proceeds:
            if rd.modified_content is not None:
                return c.adapter.replace(result, rd.modified_content)
            return result
        yield from _noted(res_action, stop_status(rd))
        return c.adapter.withhold(result, rd, f"fiveplane withheld this tool result ({rd.verdict.value}). {rd.explanation}")

    # -- approvals -----------------------------------------------------------------------------------

    def _approve(self, p: _Pending, c: CallContext) -> Flow[_Pending]:
        store = self.governor.approvals
        mode = self._mode(c)
        if mode == "interrupt" and not c.can_pause:
            # a pause nobody can resume would hang the run forever: refuse now, as pending
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
            req: ApprovalRequest = yield Blocking(store.get, (rid,))
            if not (p.resumed and rounds == 1):  # the paused pass already recorded its pending outcome
                yield from _noted(p.action, OutcomeStatus.APPROVAL_PENDING)
            try:
                answer = yield Ask(self.approval_payload(p, c, req, error), req, p.decision, p.action)
            except BaseException as exc:
                if c.control_flow(exc) or not isinstance(exc, Exception):
                    raise
                if isinstance(exc, TimeoutError):
                    p.refused = f"No answer to approval request {rid} came before the wait timed out."
                else:
                    p.refused = f"Could not wait for an answer to approval request {rid} ({type(exc).__name__}: {exc})."
                return p
            error = None
            try:
                yield from self._apply(p, c, store, rid, answer)
            except (ApprovalError, ValidationError, ValueError, TypeError, KeyError) as exc:
                error = str(exc)
            p.decision = yield Decide(p.action)
        if error and p.refused is None:
            p.refused = f"The answer to approval request {approval_id(p.decision) or ''} was not accepted: {error}."
        return p

    def approval_payload(self, p: _Pending, c: CallContext, req: ApprovalRequest, error: str | None) -> dict[str, Any]:
        """What a person is asked: LangChain's per-call ``ToolApprovalRequest`` shape plus the fiveplane request."""
        ob = p.decision.obligations_of(ObligationKind.APPROVAL)
        params = ob[0].params if ob else {}
        value: dict[str, Any] = {
            "type": "tool_approval",
            "tool_call_id": c.tool_call_id,
            "name": p.name,
            "args": jsonable(p.args),
            "description": p.decision.explanation,
            "fiveplane": {
                "approval_id": req.id,
                "digest": p.action.digest(),
                "action_id": p.action.action_id,
                "session_id": p.action.session_id,
                "tool": p.action.tool,
                "requester": req.requester,
                "role": params.get("role", req.role),
                "separation_of_duties": params.get("separation_of_duties", req.separation_of_duties),
                "expires_at": params.get("expires_at", req.expires_at.isoformat()),
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
            return  # decided meanwhile through the console, the CLI or the Python API? the next decision tells
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
            if name == p.name and jsonable(args) == jsonable(p.args):
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

    # -- retrievals ----------------------------------------------------------------------------------

    def retrieve(self, c: RetrievalContext[I]) -> Flow[list[I] | Refusal]:
        """Decide the query, retrieve, then decide every item: kept, rewritten or dropped (fail closed)."""
        call: Action | None = None
        if c.source is not None and c.query is not None and c.items is None and sealed_tool(self.governor) != c.source:
            try:
                call = self.governor.normalize(
                    c.run.action(MediationPoint.TOOL_CALL, tool=c.source, arguments={"query": c.query})
                )[0]
            except Exception as exc:  # noqa: BLE001
                return Refusal(
                    None, f"fiveplane refused this retrieval: it could not be judged ({exc}).", OutcomeStatus.BLOCKED, error=exc
                )
            decision: Decision = yield Decide(call)
            if not decision.verdict.proceeds:
                yield from _noted(call, stop_status(decision))
                return Refusal(decision, f"fiveplane refused this retrieval. {decision.explanation}", stop_status(decision), call)
        t0 = time.perf_counter()
        items: Sequence[I]
        if c.items is not None:
            items = c.items
        else:
            try:
                items = yield Execute(c.source or "retriever", {"query": c.query}, None)
            except BaseException as exc:
                if call is not None and not c.control_flow(exc):
                    yield Record(
                        call,
                        Outcome(
                            action_id=call.action_id,
                            status=OutcomeStatus.ERROR,
                            error=f"{type(exc).__name__}: {exc}",
                            duration_ms=(time.perf_counter() - t0) * 1000,
                        ),
                    )
                raise
        kept: list[I] = []
        for item in items:
            try:
                step = c.adapter.action(c.run, item, c.source, c.query, call)
            except Exception as exc:
                if c.control_flow(exc):
                    raise
                continue
            try:
                out = c.adapter.apply(item, (yield Decide(step)))
            except Exception as exc:
                if c.control_flow(exc):
                    raise
                log.warning("dropping a retrieved item: deciding it failed", exc_info=True)
                continue
            if out is not None:
                kept.append(out)
        if call is not None:
            yield Record(
                call,
                Outcome(
                    action_id=call.action_id,
                    status=OutcomeStatus.SUCCESS,
                    result_digest=digest_value([c.adapter.text(k) for k in kept]),
                    duration_ms=(time.perf_counter() - t0) * 1000,
                    detail={"documents": len(items), "kept": len(kept), "dropped": len(items) - len(kept)},
                ),
            )
        return kept


def _unjudged(governor: Governor, call: Action, exc: BaseException) -> Decision:
    """A block decision for a result that could not even be turned into an action."""
    return governor._base_decision(
        call,
        "engine.unjudged",
        _finding(f"the result could not be judged: {type(exc).__name__}: {exc}"),
        f"Blocked the result of {call.tool}: it could not be judged ({type(exc).__name__}).",
        time.perf_counter_ns(),
    )


def _finding(message: str) -> Any:
    from ._decisions import Finding, Severity

    return Finding(plane="reasoning", code="unjudged", message=message, severity=Severity.ERROR, verdict=Verdict.BLOCK)
