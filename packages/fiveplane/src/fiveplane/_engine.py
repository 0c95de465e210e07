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
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

from ._actions import Action, ActionClass, MediationPoint, Principal
from ._approvals import ApprovalError, ApprovalRequest, ApprovalStore
from ._call import (
    ApprovalMode,
    CallContext,
    CallProtocol,
    Execute,
    Refusal,
    adrive,
    arun_effects,
    capability_scope,
    drive,
    run_effects,
)
from ._clock import utcnow
from ._decisions import Decision, Finding, Mode, ObligationKind, Severity, Verdict
from ._evidence import EvidenceSink, Outcome, digest_value
from ._flow import FlowContent, split_trust
from ._planes._base import BasePlane, PlaneContext, PlaneResult
from ._planes._plan import Plan, plan_for
from ._planes._reasoning import Contribution, ReasoningPlane, describe, quiet
from ._planes._registry import planes_for
from ._policy._load import Policy, load_policy
from ._policy._yaml import PolicyError
from ._session import _NO_LABELS, SessionCommit, SessionState, SessionStore, SessionTx
from ._sessions_sql import sessions_for

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

_TOOL_CALL, _INPUT = MediationPoint.TOOL_CALL, MediationPoint.INPUT  # hot-path enum members as module constants
_NOTHING: list[Any] = []  # no planes: no contexts, no results (shared; never appended to)


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
        sessions: where session state lives: an :class:`InMemorySessionStore` (one process) or a
            :class:`SqlSessionStore` (SQLite on one machine, PostgreSQL for many workers). Default:
            ``$FIVEPLANE_SESSIONS_URL``, else the pack's ``sessions:`` section, else this process.
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
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.policy = policy if isinstance(policy, Policy) else load_policy(policy)  # type: ignore[arg-type]
        self.planes = planes_for(self.policy, planes or ())
        names = [p.name for p in self.planes]
        if len(set(names)) != len(names) or "reasoning" in names:
            raise ValueError(f"plane names must be unique and not 'reasoning': {names}")
        self.reasoning = ReasoningPlane()
        self.sessions: SessionStore = sessions if sessions is not None else sessions_for(self.policy)
        if getattr(self.sessions, "record", False) is None and callable(getattr(evidence, "record", None)):
            self.sessions.record = evidence.record  # type: ignore[attr-defined, union-attr]  # evictions become evidence
        self.evidence = evidence
        self.redact = redact
        self.durable_classes = durable_classes
        self.approvals = approvals
        if approvals is not None and approvals.redact_reason is None:
            approvals.redact_reason = self._redact_reason
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

    def reload_lists(self, *names: str) -> dict[str, int]:
        """Read the pack's file and SQL lists again (all, or ``names``); returns each list's size.
        Raises ``ListError`` naming the lists that failed: those are unavailable (conditions reading
        them block) until a reload succeeds. Lists with a ``ttl`` are also reloaded on their own."""
        return self.policy.reload_lists(*names)

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
        plan, action = self._planned(action)
        return action, list(plan.notes)

    def _planned(self, action: Action) -> tuple[Plan, Action]:
        """The decision plan of the action, and the action as the catalog corrects it."""
        plan = plan_for(self.policy, action.point, action.tool, action.connector, action.action_class)
        return plan, plan.normalize(action)

    # The path of one decision is written once, as a generator of effects (evaluate the planes, their
    # on_decision, the evidence write, blocking I/O); ``decide`` and ``adecide`` drive it, so sync and
    # async take the same decisions in the same order and the async driver keeps I/O off the loop.
    # Evaluation has no side effects; the one commit (approval consumed or filed, session step, flow
    # index, plane state) happens only after every veto.

    def decide(self, action: Action, *, with_next: bool = False) -> Decision:
        """Judge one action (sync). Never raises for a bad action or a failing plane: it blocks.

        ``with_next``: the step has no effect of its own but the governed steps that follow it (a
        model's proposal made only of tool calls, each decided before it runs). If the decision lets
        it proceed unchanged, a ledger commits its records with the next step's (one commit instead
        of two; see ``Ledger.record_decision``); any other decision is recorded as usual."""
        t0 = time.perf_counter_ns()
        plan, action = self._planned(action)
        try:
            tx = self.sessions.begin(action.session_id)
        except Exception as exc:  # noqa: BLE001 - no session state, no decision but block
            return self._notify(action, self._unjudged(action, exc, t0))
        try:
            if not self.planes and self.approvals is None and self.evidence is None and not tx.blocking:
                decision = self._in_place(action, plan, tx, t0)
            else:
                decision = run_effects(self._decision_flow(action, plan, tx, t0, with_next), self._perform)
        finally:
            tx.close()
        return self._notify(action, decision)

    async def adecide(self, action: Action, *, with_next: bool = False) -> Decision:
        """Async twin of :meth:`decide`; planes run concurrently, heavy ones and I/O off the event loop."""
        t0 = time.perf_counter_ns()
        plan, action = self._planned(action)
        try:
            tx = await self.sessions.abegin(action.session_id)
        except Exception as exc:  # noqa: BLE001
            return self._notify(action, await asyncio.to_thread(self._unjudged, action, exc, t0))
        try:
            decision = await self._adrive(self._decision_flow(action, plan, tx, t0, with_next))
        finally:
            if tx.blocking:
                await asyncio.to_thread(tx.close)
            else:
                tx.close()
        return self._notify(action, decision)

    def _decision_flow(
        self, action: Action, plan_: Plan, tx: SessionTx, t0: int, with_next: bool = False
    ) -> Generator[_Effect, Any, Decision]:
        state = tx.state
        now = self.clock()
        if state.expired is not None:
            decision = self._expired(action, state, now, t0)
            return (yield from self._record_or_fail(action, decision))
        if self.planes:
            contexts = [PlaneContext(self.policy, state, now, self._configs.get(p.name), tx.staged) for p in self.planes]
            results: list[PlaneResult] = yield _Evaluate(action, contexts)
        else:
            contexts, results = _NOTHING, _NOTHING
        decision, ctx = self._judge(action, plan_, state, now, results, tx, t0)
        if self.approvals is None:
            plan = _NO_APPROVAL
        else:
            if ctx is None:
                ctx = PlaneContext(self.policy, state, now, None, tx.staged)
            plan = _ApprovalPlan()
            try:
                decision = yield from self._plan_approval(action, decision, ctx, plan)
            except Exception as exc:  # noqa: BLE001 - an approval store that fails never lets anything through
                decision, plan = _fail(decision, "approvals", exc), _ApprovalPlan()
        if self.planes:
            decision = yield _OnDecision(action, decision, contexts)
        if self.evidence is not None:
            decision = yield from self._record_or_fail(action, decision, with_next)
        if plan is _NO_APPROVAL and not tx.blocking:
            # nothing to consume or file, and the session commits in memory: no effect to perform
            failed = self._keep(action, decision, results, tx, plan_)
            return decision if failed is None else (yield from self._vetoed(action, decision, "sessions", failed, None))
        return (yield from self._commit(action, decision, results, plan, tx, plan_.count_keys))

    def _in_place(self, action: Action, plan_: Plan, tx: SessionTx, t0: int) -> Decision:
        """:meth:`_decision_flow` where it has no effect to perform — no planes, approvals or
        evidence, a session committed in memory — run as a plain call (no generator to drive)."""
        state = tx.state
        now = self.clock()
        if state.expired is not None:
            return self._expired(action, state, now, t0)
        decision, _ = self._judge(action, plan_, state, now, _NOTHING, tx, t0)
        failed = self._keep(action, decision, _NOTHING, tx, plan_)
        if failed is None:
            return decision
        return run_effects(self._vetoed(action, decision, "sessions", failed, None), self._perform)

    def _judge(
        self, action: Action, plan_: Plan, state: SessionState, now: datetime, results: list[PlaneResult], tx: SessionTx, t0: int
    ) -> tuple[Decision, PlaneContext | None]:
        """The decision before approvals and vetoes: the compiled plan's when one reason settles
        it, else the reasoning plane's full judgement combined with the planes' results (and the
        context it judged in)."""
        settled = self._settle(action, state, now, plan_, results, t0)
        if settled is not None:
            return settled, None
        ctx = PlaneContext(self.policy, state, now, None, tx.staged)
        try:
            reasoning, contributions = self.reasoning.evaluate(action, ctx, plan_)
        except Exception as exc:  # noqa: BLE001 - fail closed
            reasoning = PlaneResult.error("reasoning", exc)
            contributions = [Contribution(Verdict.BLOCK, "engine.error", Mode.ENFORCE, str(exc))]
        if plan_.notes:
            reasoning.findings[:0] = plan_.notes
        decision = self.reasoning.combine(
            action, self.policy, contributions, [reasoning, *results], now, (time.perf_counter_ns() - t0) / 1000, plan_
        )
        return decision, ctx

    def _keep(
        self, action: Action, decision: Decision, results: list[PlaneResult], tx: SessionTx, plan_: Plan
    ) -> Exception | None:
        """Commit the step to a session kept in memory; the failure, if it could not be kept."""
        try:
            tx.commit(self._session_change(action, decision, results, tx, plan_.count_keys))
        except Exception as exc:  # noqa: BLE001 - a step that cannot be kept does not run (the caller vetoes it)
            return exc
        return None

    def _settle(
        self, action: Action, state: SessionState, now: datetime, plan: Plan, results: list[PlaneResult], t0: int
    ) -> Decision | None:
        """The decision, when no plane found anything and one reason settles it (the compiled
        plan's prebuilt decision); ``None`` sends the action to the full judgement."""
        if results and not quiet(results):
            return None
        try:
            return self.reasoning.settle(action, self.policy, state, now, plan, t0)
        except Exception:  # noqa: BLE001 - the full judgement meets the same failure and blocks
            return None

    def _record_or_fail(self, action: Action, decision: Decision, with_next: bool = False) -> Generator[_Effect, Any, Decision]:
        if self.evidence is None:
            return decision
        durable = self._durable(action)
        held = (
            self._holds(with_next)
            and decision.verdict.proceeds
            and decision.modified_content is None
            and decision.modified_arguments is None
        )
        try:
            yield _Evidence(self._evidence_action(action, decision), self._evidence_decision(decision, action), durable, held)
        except Exception as exc:  # noqa: BLE001 - no evidence, no action
            if self.policy.evidence == "best_effort" and not durable and decision.verdict.proceeds:
                note = Finding(
                    plane="evidence",
                    code="not_recorded",
                    message=f"evidence could not be recorded ({type(exc).__name__}); the pack's evidence is best_effort",
                    severity=Severity.WARNING,
                )
                return decision.model_copy(update={"findings": (*decision.findings, note)})
            self._abort(action.action_id)
            return _fail(decision, "evidence", exc)
        return decision

    def _plan_approval(
        self, action: Action, decision: Decision, ctx: PlaneContext, plan: _ApprovalPlan
    ) -> Generator[_Effect, Any, Decision]:
        """Denied → block for good; approved → proceed once (consumed at commit); else prepare the request."""
        store = self.approvals
        assert store is not None
        denied: dict[str, str] = ctx.session_value(_DENIED) or {}
        digest = action.digest()
        if digest in denied and decision.verdict is not Verdict.BLOCK:
            return _override(action, decision, Verdict.BLOCK, "approval.denied", denied[digest])
        if decision.verdict is not Verdict.REQUIRE_APPROVAL:
            return decision
        denial: ApprovalRequest | None = yield _IO(store.denied, (action,))
        if denial is not None:
            why = f"{denial.decided_by} denied this exact action ({denial.id}){': ' + denial.reason if denial.reason else ''}"
            ctx.stage(_DENIED, {**denied, digest: why})
            return _override(action, decision, Verdict.BLOCK, "approval.denied", why)
        granted: ApprovalRequest | None = yield _IO(store.approved, (action,))
        if granted is not None:
            plan.grant = granted
            verdict = Verdict.MODIFY if decision.modified_arguments is not None else Verdict.ALLOW
            why = f"approved by {granted.decided_by} ({granted.role}, {granted.id}) for this exact action, once"
            return _override(action, decision, verdict, "approval.granted", why, keep_rules=True)
        specs = decision.obligations_of(ObligationKind.APPROVAL)
        if not specs:  # nobody could approve it: block, saying so (never a request nobody can answer)
            why = "the decision asks for approval but names no approver (set `defaults.approval` in the pack)"
            return _override(action, decision, Verdict.BLOCK, "approval.no_approver", why, keep_rules=True)
        spec = specs[0]
        req, new = yield _IO(
            functools.partial(
                store.prepare,
                action,
                self._evidence_action(action, decision),
                role=str(spec.params["role"]),
                separation_of_duties=bool(spec.params.get("separation_of_duties", True)),
                expires_in=int(spec.params.get("expires_in", 3600)),
                rule_id=spec.rule_id,
                explanation=self._evidence_decision(decision, action).explanation,
            ),
            (),
        )
        if new:
            plan.request = req
        filed = spec.model_copy(
            update={"params": {**spec.params, "approval_id": req.id, "expires_at": req.expires_at.isoformat()}}
        )
        obligations = tuple(filed if o is spec else o for o in decision.obligations)
        return decision.model_copy(
            update={"obligations": obligations, "explanation": decision.explanation[:-1] + f" (request {req.id})."}
        )

    def _commit(
        self,
        action: Action,
        decision: Decision,
        results: list[PlaneResult],
        plan: _ApprovalPlan,
        tx: SessionTx,
        count_keys: tuple[str, ...] | None = None,
    ) -> Generator[_Effect, Any, Decision]:
        """The decision's one change, after every veto: approval consumed or filed, then the session step."""
        store = self.approvals
        proceeds = decision.verdict.proceeds
        consumed: ApprovalRequest | None = None
        stage = "approvals"
        try:
            if plan.grant is not None and proceeds and store is not None:
                consumed = yield _IO(store.consume, (plan.grant,))
                if consumed is None:
                    raise ApprovalError(f"approval {plan.grant.id} was used by another call meanwhile (single use)")
            if plan.request is not None and decision.verdict is Verdict.REQUIRE_APPROVAL and store is not None:
                yield _IO(store.file, (plan.request,))
            stage = "sessions"
            change = self._session_change(action, decision, results, tx, count_keys)
            if tx.blocking:
                yield _IO(tx.commit, (change,))
            else:
                tx.commit(change)
        except Exception as exc:  # noqa: BLE001 - a step that cannot be kept does not run
            return (yield from self._vetoed(action, decision, stage, exc, consumed))
        return decision

    def _session_change(
        self,
        action: Action,
        decision: Decision,
        results: list[PlaneResult],
        tx: SessionTx,
        count_keys: tuple[str, ...] | None,
    ) -> SessionCommit:
        untrusted = self._untrusted(action, results)
        return SessionCommit.of(
            action,
            decision,
            untrusted=untrusted,
            labels=frozenset().union(*(r.labels for r in results)) if results else _NO_LABELS,
            flow=(
                self._flow_content(action, untrusted, tx.state, results)
                if decision.verdict.proceeds and self.policy.indexes_flow
                else None
            ),
            extra=tx.staged,
            count_keys=count_keys,
        )

    def _vetoed(
        self, action: Action, decision: Decision, stage: str, exc: Exception, consumed: ApprovalRequest | None
    ) -> Generator[_Effect, Any, Decision]:
        """The commit failed at ``stage``: the action does not run (and the evidence says so)."""
        store = self.approvals
        if not decision.verdict.proceeds and decision.verdict is not Verdict.REQUIRE_APPROVAL:
            return decision  # nothing runs either way
        self._abort(action.action_id)
        if consumed is not None and store is not None:
            try:
                yield _IO(store.unconsume, (consumed,))
            except Exception:  # noqa: BLE001 - the approval stays used; the action still does not run
                pass
        vetoed = _fail(decision, stage, exc)
        if self.evidence is not None:  # the decision recorded above no longer stands: say so
            try:
                yield _Evidence(
                    self._evidence_action(action, vetoed), self._evidence_decision(vetoed, action), self._durable(action)
                )
            except Exception:  # noqa: BLE001 - blocked anyway; the first record names the action
                pass
        return vetoed

    def _perform(self, effect: _Effect) -> Any:
        if isinstance(effect, _Evaluate):
            return [self._evaluate(p, effect.action, c) for p, c in zip(self.planes, effect.contexts, strict=True)]
        if isinstance(effect, _OnDecision):
            return self._after_decision(effect.action, effect.decision, effect.contexts)
        if isinstance(effect, _Evidence):
            assert self.evidence is not None
            return self.evidence.record_decision(
                effect.action, effect.decision, durable=effect.durable, **_next_kw(effect.with_next)
            )
        return effect.fn(*effect.args)

    async def _adrive(self, flow: Generator[_Effect, Any, Decision]) -> Decision:
        async def perform(effect: _Effect) -> Any:
            if isinstance(effect, _Evaluate):
                return list(
                    await asyncio.gather(
                        *(self._aevaluate(p, effect.action, c) for p, c in zip(self.planes, effect.contexts, strict=True))
                    )
                )
            if isinstance(effect, _OnDecision):
                return await self._aafter_decision(effect.action, effect.decision, effect.contexts)
            if isinstance(effect, _Evidence):
                assert self.evidence is not None
                return await self.evidence.arecord_decision(
                    effect.action, effect.decision, durable=effect.durable, **_next_kw(effect.with_next)
                )
            return await asyncio.to_thread(effect.fn, *effect.args)

        return await arun_effects(flow, perform)

    @staticmethod
    def _evaluate(plane: BasePlane, action: Action, ctx: PlaneContext) -> PlaneResult:
        try:
            return _checked_result(plane, plane.evaluate(action, ctx))
        except Exception as exc:  # noqa: BLE001 - fail closed
            return PlaneResult.error(plane.name, exc)

    @staticmethod
    async def _aevaluate(plane: BasePlane, action: Action, ctx: PlaneContext) -> PlaneResult:
        try:
            return _checked_result(plane, await plane.aevaluate(action, ctx))
        except Exception as exc:  # noqa: BLE001
            return PlaneResult.error(plane.name, exc)

    def _after_decision(self, action: Action, decision: Decision, contexts: list[PlaneContext]) -> Decision:
        extra = []
        for plane, ctx in zip(self.planes, contexts, strict=True):
            try:
                extra.extend(plane.on_decision(action, decision, ctx))
            except Exception as exc:  # noqa: BLE001 - enforcement failure → block
                self._abort(action.action_id)
                return _fail(decision, plane.name, exc)
        return decision.model_copy(update={"obligations": decision.obligations + tuple(extra)}) if extra else decision

    async def _aafter_decision(self, action: Action, decision: Decision, contexts: list[PlaneContext]) -> Decision:
        extra = []
        for plane, ctx in zip(self.planes, contexts, strict=True):
            try:
                extra.extend(await plane.aon_decision(action, decision, ctx))
            except Exception as exc:  # noqa: BLE001
                self._abort(action.action_id)
                return _fail(decision, plane.name, exc)
        return decision.model_copy(update={"obligations": decision.obligations + tuple(extra)}) if extra else decision

    def _untrusted(self, action: Action, results: list[PlaneResult]) -> bool:
        """Does this step bring untrusted content into the session (in whole or in some fields)?"""
        for r in results:
            if r.untrusted:
                return True
        point = action.point
        if point is _TOOL_CALL or point is _INPUT:
            return False
        if point is MediationPoint.RETRIEVAL and not action.tool:
            return True
        if point is not MediationPoint.TOOL_RESULT and point is not MediationPoint.RETRIEVAL:
            return False
        trust = self.policy.trust_of(action.tool)
        if not trust.trusted:
            return True
        return bool(trust.paths) and split_trust(action.content, trusted=True, paths=trust.paths)[0] is not None

    def _flow_content(
        self, action: Action, untrusted: bool, state: SessionState, results: list[PlaneResult]
    ) -> FlowContent | None:
        """What the step indexes for information flow: untrusted results (their trusted fields
        vouched for), trusted results, and the user's own words."""
        if not self.policy.indexes_flow or action.content is None:
            return None
        of = functools.partial(
            FlowContent.of, action_id=action.action_id, tool=action.tool, session_bytes=state.flow.indexed_bytes
        )
        if action.point is MediationPoint.INPUT:
            return of(action.content, trusted=not untrusted, user=not untrusted)
        if action.point not in (MediationPoint.TOOL_RESULT, MediationPoint.RETRIEVAL):
            return of(action.content, trusted=False) if untrusted else None
        trust = self.policy.trust_of(action.tool) if action.tool else None
        if trust is not None and trust.paths and not any(r.untrusted for r in results):
            bad, good = split_trust(action.content, trusted=trust.trusted, paths=trust.paths)
            if bad is None:
                return of(good, trusted=True)
            return of(bad, trusted=False, vouched=good)
        return of(action.content, trusted=not untrusted)

    def _base_decision(self, action: Action, rule_id: str, finding: Finding, explanation: str, t0: int) -> Decision:
        return Decision(
            action_id=action.action_id,
            verdict=Verdict.BLOCK,
            policy_verdict=Verdict.BLOCK,
            rule_ids=(rule_id,),
            findings=(finding,),
            explanation=explanation,
            policy_hash=self.policy.hash,
            policy_version=f"{self.policy.name}@{self.policy.version}",
            evaluated_at=self.clock(),
            duration_us=(time.perf_counter_ns() - t0) / 1000,
            errors=(finding.message,) if finding.severity is Severity.ERROR else (),
        )

    def _expired(self, action: Action, state: SessionState, now: datetime, t0: int) -> Decision:
        why = f"session {action.session_id!r} has expired ({state.expired}); start a new session"
        finding = Finding(plane="reasoning", code="session_expired", message=why, severity=Severity.HIGH, verdict=Verdict.BLOCK)
        return self._base_decision(
            action, "session.expired", finding, f"Blocked {describe(action)}: {why} [session.expired].", t0
        )

    def _unjudged(self, action: Action, exc: BaseException, t0: int) -> Decision:
        """The session store failed before anything was judged: block, and record that (best effort)."""
        message = f"sessions failed: {type(exc).__name__}: {exc}"
        finding = Finding(plane="sessions", code="plane_error", message=message, severity=Severity.ERROR, verdict=Verdict.BLOCK)
        decision = self._base_decision(
            action, "sessions.error", finding, f"Blocked: sessions failed ({type(exc).__name__}), so the action fails closed.", t0
        )
        if self.evidence is not None:
            try:
                self.evidence.record_decision(self._evidence_action(action, decision), decision, durable=self._durable(action))
            except Exception:  # noqa: BLE001 - blocked anyway
                pass
        return decision

    def _evidence_action(self, action: Action, decision: Decision) -> Action:
        """The action as it is recorded: with the arguments / content the next step received, then
        redacted by the ``redact`` hook, or else by every plane's ``redact_evidence``; the declared
        intent and the principals' claims through every plane's ``redact_evidence_text``."""
        stored = action
        if decision.modified_arguments is not None:
            stored = stored.model_copy(update={"arguments": decision.modified_arguments})
        if decision.modified_content is not None:
            stored = stored.model_copy(update={"content": decision.modified_content})
        if self.redact is not None:
            stored = self.redact(stored)
        else:
            for plane in self.planes:
                stored = plane.redact_evidence(stored)
        update: dict[str, Any] = {}
        if stored.intent:
            intent = self.redact_text(stored.intent, action)
            if intent != stored.intent:
                update["intent"] = intent
        if any(p.claims for p in stored.principal):
            update["principal"] = tuple(
                p.model_copy(update={"claims": self._redact_json(p.claims, action)}) if p.claims else p for p in stored.principal
            )
        return stored.model_copy(update=update) if update else stored

    def redact_text(self, text: str, action: Action) -> str:
        """Free text about ``action`` (intent, an error, a reason) as evidence may keep it: through every
        plane's ``redact_evidence_text`` (the data plane's redacts what it detects)."""
        for plane in self.planes:
            text = plane.redact_evidence_text(text, action)
        return text

    def _redact_reason(self, text: str, req: ApprovalRequest) -> str:
        try:
            action = Action.model_validate(req.action)
        except Exception:  # noqa: BLE001 - without its action the reason is kept only as a digest
            return "[unscanned " + digest_value(text) + "]"
        return self.redact_text(text, action)

    def _redact_json(self, value: Any, action: Action) -> Any:
        if isinstance(value, str):
            return self.redact_text(value, action)
        if isinstance(value, dict):
            return {k: self._redact_json(v, action) for k, v in value.items()}
        if isinstance(value, list):
            return [self._redact_json(v, action) for v in value]
        return value

    def _evidence_decision(self, decision: Decision, action: Action) -> Decision:
        """The decision as it is recorded: error texts (a plane's exception, a condition's failure)
        can quote the data that caused them, so they go through the redaction path too."""
        if not decision.errors:
            return decision
        findings = tuple(
            f.model_copy(update={"message": self.redact_text(f.message, action)}) if f.severity is Severity.ERROR else f
            for f in decision.findings
        )
        return decision.model_copy(
            update={
                "findings": findings,
                "errors": tuple(self.redact_text(e, action) for e in decision.errors),
                "explanation": self.redact_text(decision.explanation, action),
            }
        )

    def _evidence_outcome(self, action: Action, outcome: Outcome) -> Outcome:
        if not outcome.error:
            return outcome
        return outcome.model_copy(update={"error": self.redact_text(outcome.error, action)})

    def _durable(self, action: Action) -> bool:
        """Must this action's records be on disk before it goes on? Always under ``evidence: required``
        (the default: a ledger that cannot write blocks every class), else for ``durable_classes``."""
        return self.policy.evidence == "required" or action.action_class in self.durable_classes

    def record_outcome(self, action: Action, outcome: Outcome, *, durable: bool | None = None, with_next: bool = False) -> None:
        """Record what happened (an error message redacted); durable by default for ``durable_classes``.

        ``with_next``: the caller decides the tool's result right after (:meth:`decide` of its
        ``tool_result``, as durable as this outcome). A sink that can (the ledger) then commits the
        outcome together with that decision's records: the result is released only once both are
        on disk, for one commit instead of two."""
        if self.evidence is not None:
            outcome = self._evidence_outcome(action, outcome)
            durable = self._durable(action) if durable is None else durable
            self.evidence.record_outcome(action, outcome, durable=durable, **_next_kw(self._holds(with_next)))

    async def arecord_outcome(
        self, action: Action, outcome: Outcome, *, durable: bool | None = None, with_next: bool = False
    ) -> None:
        """Async twin of :meth:`record_outcome`."""
        if self.evidence is not None:
            if outcome.error:
                outcome = await asyncio.to_thread(self._evidence_outcome, action, outcome)
            durable = self._durable(action) if durable is None else durable
            await self.evidence.arecord_outcome(action, outcome, durable=durable, **_next_kw(self._holds(with_next)))

    def _holds(self, with_next: bool) -> bool:
        """Whether to pass ``with_next`` to the sink: asked for, and the sink takes it."""
        return with_next and getattr(self.evidence, "holds_records", False)

    # ---- governed callables ---------------------------------------------------------------------

    def govern(
        self,
        fn: Callable[..., Any],
        *,
        tool: str,
        run: Run | None = None,
        approval_mode: ApprovalMode = "defer",
        approval_timeout: float = 0.0,
    ) -> GovernedTool:
        """Wrap ``fn`` as the governed tool ``tool`` (must be in the policy's catalog).

        ``approval_mode="wait"`` with ``approval_timeout`` seconds makes a call that needs approval
        wait for a person's decision (from any process); the default ``defer`` raises
        :class:`ApprovalRequired` at once (the same call runs once it is approved).
        """
        if tool not in self.policy.tools:
            raise KeyError(f"tool {tool!r} is not in the policy's catalog ({', '.join(sorted(self.policy.tools)) or 'empty'})")
        return GovernedTool(self, fn, tool, run, approval_mode=approval_mode, approval_timeout=approval_timeout)


_DENIED = "approvals.denied"
"""Session state: digest → why, for the exact actions a person denied (blocked for the session)."""


@dataclass
class _ApprovalPlan:
    """What the commit does to approvals: consume the grant that let the action run, or file its request."""

    grant: ApprovalRequest | None = None
    request: ApprovalRequest | None = None


def _next_kw(held: bool) -> dict[str, bool]:
    """The ``with_next`` keyword for a sink that holds records (``holds_records``), only when used:
    a sink without the capability is called exactly as the ``EvidenceSink`` protocol says."""
    return _WITH_NEXT if held else _NO_KW


_WITH_NEXT = {"with_next": True}
_NO_KW: dict[str, bool] = {}


_NO_APPROVAL = _ApprovalPlan()
"""The plan of a Governor without an approval store (never changed: nothing sets its fields)."""


@dataclass(frozen=True, slots=True)
class _Evaluate:
    action: Action
    contexts: list[PlaneContext]


@dataclass(frozen=True, slots=True)
class _OnDecision:
    action: Action
    decision: Decision
    contexts: list[PlaneContext]


@dataclass(frozen=True, slots=True)
class _Evidence:
    action: Action
    decision: Decision
    durable: bool
    with_next: bool = False


@dataclass(frozen=True, slots=True)
class _IO:
    """Blocking I/O (a database): run in a worker thread on async paths."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]


_Effect = _Evaluate | _OnDecision | _Evidence | _IO


def _checked_result(plane: BasePlane, result: Any) -> PlaneResult:
    """A plane must return a PlaneResult; anything else fails closed with a finding saying so."""
    if not isinstance(result, PlaneResult):
        raise TypeError(f"plane {plane.name!r} returned {type(result).__name__}, not a PlaneResult")
    return result


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
    """A callable that is decided, enforced and recorded on every call (the core driver of :class:`CallProtocol`).

    Call it like the wrapped function with keyword arguments. Inside ``Governor.run(...)`` the run
    is taken from the context; otherwise pass ``run=`` when wrapping. A call that does not run raises
    :class:`ActionBlocked`, :class:`ApprovalRequired` or :class:`ActionDeferred` (with the decision);
    a withheld result raises the same way. A function that declares a ``capability`` parameter
    receives the capability token minted for the call (also available as ``current_capability()``).
    """

    def __init__(
        self,
        governor: Governor,
        fn: Callable[..., Any],
        tool: str,
        run: Run | None,
        *,
        approval_mode: ApprovalMode = "defer",
        approval_timeout: float = 0.0,
    ) -> None:
        self.governor = governor
        self.fn = fn
        self.tool = tool
        self._run = run
        self.is_async = inspect.iscoroutinefunction(fn)
        try:
            self.wants_capability = "capability" in inspect.signature(fn).parameters
        except (TypeError, ValueError):  # builtins without a signature
            self.wants_capability = False
        self.protocol = CallProtocol(
            governor, approval_mode=approval_mode, approval_timeout=approval_timeout, catalog=lambda _name: tool
        )
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def _the_run(self) -> Run:
        run = current_run() or self._run
        if run is None:
            raise RuntimeError(f"governed tool {self.tool!r} called outside Governor.run(...) and without run=")
        return run

    def _args(self, e: Execute) -> dict[str, Any]:
        return {**e.args, "capability": e.capability} if self.wants_capability else dict(e.args)

    @staticmethod
    def _final(result: Any) -> Any:
        if isinstance(result, Refusal):
            raise result.exception()
        return result

    def __call__(self, **kwargs: Any) -> Any:
        if self.is_async:
            return self.acall(**kwargs)

        def execute(e: Execute) -> Any:
            with capability_scope(e.capability):
                return self.fn(**self._args(e))

        c = CallContext(run=self._the_run(), name=self.tool, args=kwargs)
        return self._final(drive(self.protocol.call(c), self.governor, execute))

    async def acall(self, **kwargs: Any) -> Any:
        async def execute(e: Execute) -> Any:
            with capability_scope(e.capability):
                if self.is_async:
                    return await cast(Callable[..., Awaitable[Any]], self.fn)(**self._args(e))
                return await asyncio.to_thread(self.fn, **self._args(e))  # to_thread copies the context

        c = CallContext(run=self._the_run(), name=self.tool, args=kwargs)
        return self._final(await adrive(self.protocol.call(c), self.governor, execute))
