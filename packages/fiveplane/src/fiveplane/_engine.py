"""The mediator: one place where an agent's step becomes an Action, is judged, enforced and recorded.

Path of one action: ``Governor.decide(action)`` → normalize against the catalog → every registered
plane evaluates it (findings, obligations, rewrites) → the reasoning plane matches rules and session
state and combines everything into one Decision → planes see the decision (e.g. to mint a token) →
the session records the step → the evidence sink records intent and decision (durably before a
modify runs). ``Governor.govern(fn)`` wraps a callable so that this happens before every call, the
call runs only if the decision lets it, and the result is mediated and recorded too.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

from ._actions import Action, ActionClass, MediationPoint, Principal
from ._approvals import ApprovalStore
from ._decisions import Decision, Finding, Mode, ObligationKind, Severity, Verdict
from ._evidence import EvidenceSink, Outcome, OutcomeStatus, digest_value, jsonable
from ._planes._base import BasePlane, PlaneContext, PlaneResult
from ._planes._reasoning import Contribution, ReasoningPlane, describe
from ._planes._registry import planes_for
from ._policy._load import Policy, load_policy
from ._policy._yaml import PolicyError
from ._session import InMemorySessionStore, SessionState, SessionStore

__all__ = [
    "ActionBlocked",
    "ActionDeferred",
    "ApprovalRequired",
    "GovernanceError",
    "GovernedTool",
    "Governor",
    "Run",
    "current_run",
]

T = TypeVar("T")


class GovernanceError(Exception):
    """Base of the exceptions the mediator raises to stop an action. Carries the decision."""

    def __init__(self, decision: Decision, action: Action | None = None) -> None:
        self.decision = decision
        self.action = action
        super().__init__(decision.explanation)


class ActionBlocked(GovernanceError):
    """The decision was ``block``: the action did not run."""


class ApprovalRequired(GovernanceError):
    """The decision was ``require_approval``: the action did not run and waits for a human."""


class ActionDeferred(GovernanceError):
    """The decision was ``defer``: the action is parked."""


_EXC = {Verdict.BLOCK: ActionBlocked, Verdict.REQUIRE_APPROVAL: ApprovalRequired, Verdict.DEFER: ActionDeferred}


@dataclass
class Run:
    """Who is acting and why: the principal chain, session and declared intent of an agent run."""

    principal: tuple[Principal, ...]
    session_id: str
    intent: str | None = None
    purpose: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def action(self, point: MediationPoint, **fields: Any) -> Action:
        """Build an Action of this run."""
        fields.setdefault("intent", self.intent)
        fields.setdefault("purpose", self.purpose)
        return Action(point=point, principal=self.principal, session_id=self.session_id, **fields)


_current_run: contextvars.ContextVar[Run | None] = contextvars.ContextVar("fiveplane_run", default=None)


def current_run() -> Run | None:
    """The run set by :meth:`Governor.run` in this context, if any."""
    return _current_run.get()


class Governor:
    """The governance engine: decide, enforce and record every step of an agent.

    Args:
        policy: a compiled :class:`Policy`, or pack path(s) to load.
        planes: the enforcement planes (identity, endpoint, network, data, ...), in evaluation order;
            the built-in planes the policy configures under ``planes:`` are added automatically
            (pass an instance to configure one yourself, e.g. ``NetworkPlane(resolver=...)``).
        sessions: where session state lives (default: in this process).
        evidence: where decisions and outcomes are recorded (the ledger); ``None`` records nothing.
        redact: a hook that rewrites an action before it is recorded as evidence; by default every
            plane's ``redact_evidence`` applies (the data plane's redacts what it detects).
        durable_classes: action classes whose intent and decision must be durable before they run.
        approvals: where approval requests live; without it a ``require_approval`` action can never
            run (it is filed nowhere and stays paused).
    """

    def __init__(
        self,
        policy: Policy | str | Path | Sequence[str | Path],
        *,
        planes: Sequence[BasePlane] = (),
        sessions: SessionStore | None = None,
        evidence: EvidenceSink | None = None,
        redact: Callable[[Action], Action] | None = None,
        durable_classes: frozenset[ActionClass] = frozenset({ActionClass.MODIFY}),
        approvals: ApprovalStore | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.policy = policy if isinstance(policy, Policy) else load_policy(policy)  # type: ignore[arg-type]
        self.planes = planes_for(self.policy, planes or ())
        names = [p.name for p in self.planes]
        if len(set(names)) != len(names) or "reasoning" in names:
            raise ValueError(f"plane names must be unique and not 'reasoning': {names}")
        self.reasoning = ReasoningPlane()
        self.sessions: SessionStore = sessions or InMemorySessionStore()
        self.evidence = evidence
        self.redact = redact
        self.durable_classes = durable_classes
        self.approvals = approvals
        self.clock = clock
        self._configs = self._validate_plane_configs()
        self._listeners: list[Callable[[Action, Decision], None]] = []

    def add_listener(self, listener: Callable[[Action, Decision], None]) -> None:
        """Call ``listener(action, decision)`` after every decision (observers only: errors propagate)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[Action, Decision], None]) -> None:
        """Stop calling ``listener`` (no error if it was not registered)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, action: Action, decision: Decision) -> Decision:
        for listener in self._listeners:
            listener(action, decision)
        return decision

    def _validate_plane_configs(self) -> dict[str, BaseModel | None]:
        errors: list[str] = []
        configs: dict[str, BaseModel | None] = {}
        by_name = {p.name: p for p in self.planes}
        for name, raw in self.policy.planes.items():
            src = self.policy.plane_sources.get(name)
            plane = by_name.get(name)
            if plane is None:
                errors.append(f"{src}: the policy configures plane {name!r}, which is not installed in this Governor")
                continue
            if plane.config_model is None:
                errors.append(f"{src}: plane {name!r} takes no configuration")
                continue
            try:
                configs[name] = plane.config_model.model_validate(raw)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = ".".join(str(p) for p in err["loc"])
                    errors.append(f"{src}: planes.{name}.{loc}: {err['msg']}")
        for plane in self.planes:
            if plane.name not in configs and plane.config_model is not None:
                try:
                    configs[plane.name] = plane.config_model()
                except ValidationError:
                    errors.append(
                        f"{self.policy.files[-1]}:1: plane {plane.name!r} needs a `planes: {{{plane.name}: ...}}` section"
                    )
        if errors:
            raise PolicyError(errors)
        for plane in self.planes:
            where = self.policy.plane_sources.get(plane.name) or f"{self.policy.files[-1]}:1"
            errors.extend(f"{where}: {problem}" for problem in plane.check_policy(self.policy))
        if errors:
            raise PolicyError(errors)
        for plane in self.planes:
            plane.bind(self.policy, configs.get(plane.name))
        return configs

    # ---- runs -----------------------------------------------------------------------------------

    @contextmanager
    def run(
        self,
        principal: Sequence[Principal | dict[str, Any]],
        *,
        session_id: str,
        intent: str | None = None,
        purpose: str | None = None,
    ) -> Iterator[Run]:
        """Set the current run (principal chain, session, intent) for governed calls in this context."""
        chain = tuple(p if isinstance(p, Principal) else Principal.model_validate(p) for p in principal)
        run = Run(principal=chain, session_id=session_id, intent=intent, purpose=purpose)
        token = _current_run.set(run)
        try:
            yield run
        finally:
            _current_run.reset(token)

    def end_session(self, session_id: str) -> None:
        """End a session (task): every plane revokes what it issued for it, then the state goes."""
        errors = []
        for plane in self.planes:
            try:
                plane.on_session_end(session_id)
            except Exception as exc:  # noqa: BLE001 - collect, end the session, then report
                errors.append(f"{plane.name}: {type(exc).__name__}: {exc}")
        self.sessions.end(session_id)
        if errors:
            raise RuntimeError(f"ending session {session_id!r} failed in: {'; '.join(errors)}")

    async def aend_session(self, session_id: str) -> None:
        """Async twin of :meth:`end_session`."""
        errors = []
        for plane in self.planes:
            try:
                await plane.aon_session_end(session_id)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{plane.name}: {type(exc).__name__}: {exc}")
        self.sessions.end(session_id)
        if errors:
            raise RuntimeError(f"ending session {session_id!r} failed in: {'; '.join(errors)}")

    def take_capability(self, action_id: str) -> Any:
        """The capability token minted for ``action_id`` (once), or ``None``."""
        for plane in self.planes:
            cap = plane.take_capability(action_id)
            if cap is not None:
                return cap
        return None

    def _abort(self, action_id: str) -> None:
        """A decision became a block after the planes saw it: let them undo (best effort)."""
        for plane in self.planes:
            try:
                plane.on_abort(action_id)
            except Exception:  # noqa: BLE001 - undoing is best effort; the action is blocked anyway
                pass

    # ---- deciding -------------------------------------------------------------------------------

    def normalize(self, action: Action) -> tuple[Action, list[Finding]]:
        """Fill connector and class from the catalog (which is authoritative)."""
        spec = self.policy.tools.get(action.tool) if action.tool else None
        if spec is None:
            return action, []
        notes: list[Finding] = []
        updates: dict[str, Any] = {}
        if action.action_class is not spec.action_class:
            if action.action_class is not None:
                notes.append(
                    Finding(
                        plane="reasoning",
                        code="class_from_catalog",
                        message=f"{action.tool} is {spec.action_class.value} per the catalog, not {action.action_class.value}",
                        severity=Severity.WARNING,
                    )
                )
            updates["action_class"] = spec.action_class
        if spec.connector and action.connector != spec.connector:
            if action.connector is not None:
                notes.append(
                    Finding(
                        plane="reasoning",
                        code="connector_from_catalog",
                        message=f"{action.tool} talks to {spec.connector} per the catalog, not {action.connector}",
                        severity=Severity.WARNING,
                    )
                )
            updates["connector"] = spec.connector
        return (action.model_copy(update=updates) if updates else action), notes

    def _context(self, action: Action, plane: str | None = None) -> PlaneContext:
        return PlaneContext(
            policy=self.policy,
            session=self.sessions.get(action.session_id),
            now=self.clock(),
            config=self._configs.get(plane) if plane else None,
        )

    def _finish(self, action: Action, results: list[PlaneResult], notes: list[Finding], t0: int) -> Decision:
        """Reasoning + combination + session update, under the session's lock."""
        with self.sessions.lock(action.session_id):
            ctx = self._context(action)
            try:
                reasoning, contributions = self.reasoning.evaluate(action, ctx)
            except Exception as exc:  # noqa: BLE001 - fail closed
                reasoning = PlaneResult.error("reasoning", exc)
                contributions = [Contribution(Verdict.BLOCK, "engine.error", Mode.ENFORCE, str(exc))]
            reasoning.findings[:0] = notes
            decision = self.reasoning.combine(
                action, self.policy, contributions, [reasoning, *results], ctx.now, (time.perf_counter_ns() - t0) / 1000
            )
            if self.approvals is not None:
                try:
                    decision = self._apply_approvals(action, decision, ctx.session)
                except Exception as exc:  # noqa: BLE001 - an approval store that fails never lets anything through
                    decision = _fail(decision, "approvals", exc)
            untrusted = self._untrusted(action, results)
            if decision.verdict.proceeds and results:
                ctx.session.labels.update(set().union(*(r.labels for r in results)))
            ctx.session.record(action, decision, untrusted=untrusted)
            if decision.verdict.proceeds and self.policy.flow is not None:
                self._index_flow(action, untrusted, ctx.session)
        return decision

    def _apply_approvals(self, action: Action, decision: Decision, session: SessionState) -> Decision:
        """Denied → block for good; approved → proceed once; otherwise file the request."""
        assert self.approvals is not None
        denied: dict[str, str] = session.extra.setdefault("denied_digests", {})
        digest = action.digest()
        if digest in denied and decision.verdict is not Verdict.BLOCK:
            return _override(action, decision, Verdict.BLOCK, "approval.denied", denied[digest])
        if decision.verdict is not Verdict.REQUIRE_APPROVAL:
            return decision
        denial = self.approvals.denied(action)
        if denial is not None:
            why = f"{denial.decided_by} denied this exact action ({denial.id}){': ' + denial.reason if denial.reason else ''}"
            denied[digest] = why
            return _override(action, decision, Verdict.BLOCK, "approval.denied", why)
        granted = self.approvals.consume(action)
        if granted is not None:
            verdict = Verdict.MODIFY if decision.modified_arguments is not None else Verdict.ALLOW
            why = f"approved by {granted.decided_by} ({granted.role}, {granted.id}) for this exact action, once"
            return _override(action, decision, verdict, "approval.granted", why, keep_rules=True)
        specs = decision.obligations_of(ObligationKind.APPROVAL)
        if not specs:
            return decision  # nobody can approve: it stays paused (fail closed)
        spec = specs[0]
        req = self.approvals.request(
            action,
            self._evidence_action(action, decision),
            role=str(spec.params["role"]),
            separation_of_duties=bool(spec.params.get("separation_of_duties", True)),
            expires_in=int(spec.params.get("expires_in", 3600)),
            rule_id=spec.rule_id,
            explanation=decision.explanation,
        )
        filed = spec.model_copy(
            update={"params": {**spec.params, "approval_id": req.id, "expires_at": req.expires_at.isoformat()}}
        )
        obligations = tuple(filed if o is spec else o for o in decision.obligations)
        return decision.model_copy(
            update={"obligations": obligations, "explanation": decision.explanation[:-1] + f" (request {req.id})."}
        )

    def _untrusted(self, action: Action, results: list[PlaneResult]) -> bool:
        """Does this step bring untrusted content into the session?"""
        if any(r.untrusted for r in results):
            return True
        if action.point is MediationPoint.RETRIEVAL:
            return not (action.tool and self.policy.tool_trusted(action.tool))
        return action.point is MediationPoint.TOOL_RESULT and not self.policy.tool_trusted(action.tool)

    @staticmethod
    def _index_flow(action: Action, untrusted: bool, session: SessionState) -> None:
        """Index the content the model will see: untrusted results, and the user's own words as trusted."""
        if action.content is None:
            return
        if untrusted:
            session.flow.add(action.content, trusted=False, action_id=action.action_id, tool=action.tool)
        elif action.point in (MediationPoint.INPUT, MediationPoint.TOOL_RESULT, MediationPoint.RETRIEVAL):
            session.flow.add(action.content, trusted=True, action_id=action.action_id, tool=action.tool)

    def _after_decision(self, action: Action, decision: Decision) -> Decision:
        extra = []
        for plane in self.planes:
            try:
                extra.extend(plane.on_decision(action, decision, self._context(action, plane.name)))
            except Exception as exc:  # noqa: BLE001 - enforcement failure → block
                self._abort(action.action_id)
                return _fail(decision, plane.name, exc)
        return decision.model_copy(update={"obligations": decision.obligations + tuple(extra)}) if extra else decision

    async def _aafter_decision(self, action: Action, decision: Decision) -> Decision:
        extra = []
        for plane in self.planes:
            try:
                extra.extend(await plane.aon_decision(action, decision, self._context(action, plane.name)))
            except Exception as exc:  # noqa: BLE001
                self._abort(action.action_id)
                return _fail(decision, plane.name, exc)
        return decision.model_copy(update={"obligations": decision.obligations + tuple(extra)}) if extra else decision

    def _evidence_action(self, action: Action, decision: Decision) -> Action:
        """The action as it is recorded: with the arguments / content the next step received, then
        redacted by the ``redact`` hook, or else by every plane's ``redact_evidence``."""
        stored = action
        if decision.modified_arguments is not None:
            stored = stored.model_copy(update={"arguments": decision.modified_arguments})
        if decision.modified_content is not None:
            stored = stored.model_copy(update={"content": decision.modified_content})
        if self.redact is not None:
            return self.redact(stored)
        for plane in self.planes:
            stored = plane.redact_evidence(stored)
        return stored

    def _durable(self, action: Action) -> bool:
        return action.action_class in self.durable_classes

    def decide(self, action: Action) -> Decision:
        """Judge one action (sync). Never raises for a bad action or a failing plane: it blocks."""
        t0 = time.perf_counter_ns()
        action, notes = self.normalize(action)
        results = []
        for plane in self.planes:
            try:
                results.append(plane.evaluate(action, self._context(action, plane.name)))
            except Exception as exc:  # noqa: BLE001 - fail closed
                results.append(PlaneResult.error(plane.name, exc))
        decision = self._finish(action, results, notes, t0)
        decision = self._after_decision(action, decision)
        if self.evidence is not None:
            try:
                self.evidence.record_decision(self._evidence_action(action, decision), decision, durable=self._durable(action))
            except Exception as exc:  # noqa: BLE001 - no evidence, no action
                self._abort(action.action_id)
                decision = _fail(decision, "evidence", exc)
        return self._notify(action, decision)

    async def adecide(self, action: Action) -> Decision:
        """Async twin of :meth:`decide`; planes run concurrently, heavy ones off the event loop."""
        t0 = time.perf_counter_ns()
        action, notes = self.normalize(action)

        async def one(plane: BasePlane) -> PlaneResult:
            try:
                return await plane.aevaluate(action, self._context(action, plane.name))
            except Exception as exc:  # noqa: BLE001
                return PlaneResult.error(plane.name, exc)

        results = list(await asyncio.gather(*(one(p) for p in self.planes)))
        if self.approvals is not None:  # approvals read and write the database: not on the loop
            decision = await asyncio.to_thread(self._finish, action, results, notes, t0)
        else:
            decision = self._finish(action, results, notes, t0)
        decision = await self._aafter_decision(action, decision)
        if self.evidence is not None:
            try:
                await self.evidence.arecord_decision(
                    self._evidence_action(action, decision), decision, durable=self._durable(action)
                )
            except Exception as exc:  # noqa: BLE001
                self._abort(action.action_id)
                decision = _fail(decision, "evidence", exc)
        return self._notify(action, decision)

    def record_outcome(self, action: Action, outcome: Outcome, *, durable: bool | None = None) -> None:
        """Record what happened; durable by default for the classes in ``durable_classes``."""
        if self.evidence is not None:
            self.evidence.record_outcome(action, outcome, durable=self._durable(action) if durable is None else durable)

    async def arecord_outcome(self, action: Action, outcome: Outcome, *, durable: bool | None = None) -> None:
        if self.evidence is not None:
            await self.evidence.arecord_outcome(action, outcome, durable=self._durable(action) if durable is None else durable)

    # ---- governed callables ---------------------------------------------------------------------

    def govern(self, fn: Callable[..., Any], *, tool: str, run: Run | None = None) -> GovernedTool:
        """Wrap ``fn`` as the governed tool ``tool`` (must be in the policy's catalog)."""
        if tool not in self.policy.tools:
            raise KeyError(f"tool {tool!r} is not in the policy's catalog ({', '.join(sorted(self.policy.tools)) or 'empty'})")
        return GovernedTool(self, fn, tool, run)


def _override(
    action: Action, decision: Decision, verdict: Verdict, rule_id: str, why: str, *, keep_rules: bool = False
) -> Decision:
    """The decision after an approval outcome (granted, denied)."""
    verb = "Allowed" if verdict.proceeds else "Blocked"
    subject = describe(action)
    finding = Finding(plane="reasoning", code=rule_id.replace(".", "_"), message=why, severity=Severity.INFO, verdict=verdict)
    return decision.model_copy(
        update={
            "verdict": verdict,
            "policy_verdict": verdict,
            "mode": Mode.ENFORCE,
            "rule_ids": ((*decision.rule_ids, rule_id) if keep_rules else (rule_id,)),
            "findings": (*decision.findings, finding),
            "explanation": f"{verb} {subject}: {why} [{rule_id}].",
            "modified_arguments": decision.modified_arguments if verdict.proceeds else None,
            "modified_content": decision.modified_content if verdict.proceeds else None,
        }
    )


def _fail(decision: Decision, plane: str, exc: BaseException) -> Decision:
    finding = Finding(
        plane=plane,
        code="plane_error",
        message=f"{plane} failed: {type(exc).__name__}: {exc}",
        severity=Severity.ERROR,
        verdict=Verdict.BLOCK,
    )
    return decision.model_copy(
        update={
            "verdict": Verdict.BLOCK,
            "policy_verdict": Verdict.BLOCK,
            "mode": Mode.ENFORCE,
            "rule_ids": (f"{plane}.error",),
            "findings": decision.findings + (finding,),
            "errors": decision.errors + (finding.message,),
            "explanation": f"Blocked: {plane} failed ({type(exc).__name__}), so the action fails closed.",
            "modified_arguments": None,
            "modified_content": None,
        }
    )


class GovernedTool:
    """A callable that is decided, enforced and recorded on every call.

    Call it like the wrapped function with keyword arguments. Inside ``Governor.run(...)`` the
    run is taken from the context; otherwise pass ``run=`` when wrapping. A non-proceeding decision
    raises :class:`ActionBlocked`, :class:`ApprovalRequired` or :class:`ActionDeferred`, and the
    function does not run.
    """

    def __init__(self, governor: Governor, fn: Callable[..., Any], tool: str, run: Run | None) -> None:
        self.governor = governor
        self.fn = fn
        self.tool = tool
        self._run = run
        self.is_async = inspect.iscoroutinefunction(fn)
        try:
            self.wants_capability = "capability" in inspect.signature(fn).parameters
        except (TypeError, ValueError):  # builtins without a signature
            self.wants_capability = False
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def _the_run(self) -> Run:
        run = current_run() or self._run
        if run is None:
            raise RuntimeError(f"governed tool {self.tool!r} called outside Governor.run(...) and without run=")
        return run

    def _call_action(self, kwargs: dict[str, Any]) -> Action:
        if self.wants_capability and "capability" in kwargs:
            raise TypeError(f"{self.tool}: `capability` is supplied by the governor, never by the caller")
        action = self._the_run().action(MediationPoint.TOOL_CALL, tool=self.tool, arguments=kwargs)
        return self.governor.normalize(action)[0]  # class and connector from the catalog, for the outcome too

    def _tool_args(self, call: Action, decision: Decision, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments the tool runs with: rewritten if the decision says so, plus its capability."""
        args = dict(decision.modified_arguments) if decision.modified_arguments is not None else dict(kwargs)
        if self.wants_capability:
            args["capability"] = self.governor.take_capability(call.action_id)
        return args

    def _result_action(self, call: Action, result: Any) -> Action:
        action = self._the_run().action(
            MediationPoint.TOOL_RESULT, tool=self.tool, content=jsonable(result), parent_action_id=call.action_id
        )
        return self.governor.normalize(action)[0]

    def _stop(self, action: Action, decision: Decision) -> None:
        exc = _EXC.get(decision.verdict)
        if exc is not None:
            status = {
                Verdict.BLOCK: OutcomeStatus.BLOCKED,
                Verdict.REQUIRE_APPROVAL: OutcomeStatus.APPROVAL_PENDING,
                Verdict.DEFER: OutcomeStatus.DEFERRED,
            }[decision.verdict]
            try:  # nothing ran, so nothing waits for this record to be on disk
                self.governor.record_outcome(action, Outcome(action_id=action.action_id, status=status), durable=False)
            except Exception as record_error:
                raise exc(decision, action) from record_error
            raise exc(decision, action)

    def __call__(self, **kwargs: Any) -> Any:
        if self.is_async:
            return self.acall(**kwargs)
        gov = self.governor
        call = self._call_action(kwargs)
        decision = gov.decide(call)
        self._stop(call, decision)
        args = self._tool_args(call, decision, kwargs)
        t = time.perf_counter()
        try:
            result = self.fn(**args)
        except Exception as exc:
            gov.record_outcome(
                call,
                Outcome(
                    action_id=call.action_id,
                    status=OutcomeStatus.ERROR,
                    error=f"{type(exc).__name__}: {exc}",
                    duration_ms=(time.perf_counter() - t) * 1000,
                ),
            )
            raise
        return self._mediate_result(call, result, (time.perf_counter() - t) * 1000)

    def _mediate_result(self, call: Action, result: Any, ms: float) -> Any:
        gov = self.governor
        gov.record_outcome(
            call,
            Outcome(
                action_id=call.action_id,
                status=OutcomeStatus.SUCCESS,
                result_digest=digest_value(jsonable(result)),
                duration_ms=ms,
            ),
        )
        res_action = self._result_action(call, result)
        res_decision = gov.decide(res_action)
        self._stop(res_action, res_decision)
        return res_decision.modified_content if res_decision.modified_content is not None else result

    async def acall(self, **kwargs: Any) -> Any:
        gov = self.governor
        call = self._call_action(kwargs)
        decision = await gov.adecide(call)
        self._stop(call, decision)
        args = self._tool_args(call, decision, kwargs)
        t = time.perf_counter()
        try:
            if self.is_async:
                result = await cast(Callable[..., Awaitable[Any]], self.fn)(**args)
            else:
                result = await asyncio.to_thread(self.fn, **args)
        except Exception as exc:
            await gov.arecord_outcome(
                call,
                Outcome(
                    action_id=call.action_id,
                    status=OutcomeStatus.ERROR,
                    error=f"{type(exc).__name__}: {exc}",
                    duration_ms=(time.perf_counter() - t) * 1000,
                ),
            )
            raise
        ms = (time.perf_counter() - t) * 1000
        await gov.arecord_outcome(
            call,
            Outcome(
                action_id=call.action_id,
                status=OutcomeStatus.SUCCESS,
                result_digest=digest_value(jsonable(result)),
                duration_ms=ms,
            ),
        )
        res_action = self._result_action(call, result)
        res_decision = await gov.adecide(res_action)
        self._stop(res_action, res_decision)
        return res_decision.modified_content if res_decision.modified_content is not None else result
