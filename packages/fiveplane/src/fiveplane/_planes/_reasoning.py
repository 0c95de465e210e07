"""The reasoning plane: rules, purpose binding, session sequence rules, and the one combined Decision.

It runs after the enforcement planes have added their findings, judges the action against the
policy's rules and the session state, and combines everything deny-overrides into one
:class:`~fiveplane.Decision` with a one-sentence explanation.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from .._actions import Action, ActionClass, MediationPoint, Principal
from .._decisions import Decision, Finding, Mode, Obligation, ObligationKind, Severity, Verdict, strongest
from .._flow import FlowIndex, FlowMatch
from .._policy._cel import ConditionError
from .._policy._celfast import UNDECIDED
from .._policy._lists import ListError
from .._policy._load import CompiledFlowRule, CompiledRule, Policy
from .._policy._models import AgentSpec
from .._session import SessionState
from ._base import PlaneContext, PlaneResult
from ._plan import TOOL_POINTS, Contribution, Plan, actors, approval_obligation, describe, explain, plan_for

__all__ = ["Contribution", "ReasoningPlane", "describe", "explain", "quiet"]

PLANE = "reasoning"
_AGENT_POINTS = frozenset({MediationPoint.TOOL_CALL, MediationPoint.DELEGATION})
# enum members the hot path compares against, as module constants (a member read costs a lookup)
_INPUT, _TOOL_CALL = MediationPoint.INPUT, MediationPoint.TOOL_CALL
_ENFORCE, _REQUIRE_APPROVAL = Mode.ENFORCE, Verdict.REQUIRE_APPROVAL


class _Provenance:
    """The provenance functions of CEL over one session's flow index and the pack's lists."""

    __slots__ = ("_index", "_lists")

    def __init__(self, index: FlowIndex, policy: Policy) -> None:
        self._index = index
        self._lists = policy.lists

    def from_user(self, value: Any) -> bool:
        return self._index.from_user(value)

    def _matches(self, value: Any) -> list[FlowMatch]:
        return self._index.provenance(value, self._lists.trusted_values())

    def untrusted(self, value: Any) -> bool:
        return bool(self._matches(value))

    def source(self, value: Any) -> str:
        found = self._matches(value)
        return (found[0].source.tool or "") if found else ""


_UNBUILT = object()


class _Vars:
    """Lazy CEL variables: each is built the first time a condition reads it, then cached."""

    __slots__ = ("_action", "_cache", "_now", "_policy", "_provenance", "_session", "error", "match")

    def __init__(self, action: Action, policy: Policy, session: SessionState, now: datetime) -> None:
        self._action, self._policy, self._session, self._now = action, policy, session, now
        self._cache: dict[str, Any] = {}
        self._provenance: _Provenance | None = None
        self.error: str | None = None
        """Why a variable could not be built (the condition then fails, naming it)."""
        self.match: dict[str, Any] | None = None
        """The flow match a flow rule's ``unless:`` is asked about."""

    def __call__(self, name: str) -> Any:
        value = self._cache.get(name, _UNBUILT)
        if value is not _UNBUILT:
            return value
        if name == "match":
            return self.match
        build = _BUILDERS.get(name)
        try:
            value = build(self) if build is not None else None
        except ListError as exc:
            self.error = str(exc)
            value = None
        self._cache[name] = value
        return value

    @property
    def provenance(self) -> _Provenance:
        if self._provenance is None:
            self._provenance = _Provenance(self._session.flow, self._policy)
        return self._provenance

    def missing_hint(self, key: str) -> str | None:
        """A missing map key that is an unavailable list: say so."""
        failed = self._policy.lists.failed()
        if key in failed:
            return f"list {key!r} is unavailable ({failed[key]})"
        return None

    def _v_lists(self) -> Any:
        return self._policy.lists.cel_view()

    def _v_args(self) -> Any:
        return self._action.arguments

    def _v_content(self) -> Any:
        return self._action.content

    def _v_now(self) -> Any:
        return self._now

    def _v_session(self) -> Any:
        return self._session.cel_view()

    def _v_agent(self) -> Any:
        agent = self._action.agent
        return {"id": agent.id if agent else ""}

    def _v_user(self) -> Any:
        user = self._action.user
        return (
            {"id": user.id, "roles": list(user.roles), "claims": user.claims} if user else {"id": "", "roles": [], "claims": {}}
        )

    def _v_principal(self) -> Any:
        return [{"kind": p.kind.value, "id": p.id, "roles": list(p.roles)} for p in self._action.principal]

    def _v_tool(self) -> Any:
        a = self._action
        return {"name": a.tool or "", "connector": a.connector or "", "class": a.action_class.value if a.action_class else ""}

    def _v_action(self) -> Any:
        a, session = self._action, self._session
        return {
            "point": a.point.value,
            "tool": a.tool or "",
            "connector": a.connector or "",
            "class": a.action_class.value if a.action_class else "",
            "session_id": a.session_id,
            "intent": a.intent or session.intent or "",
            "purpose": a.purpose or session.purpose or "",
            "labels": list(a.labels),
        }


_BUILDERS: dict[str, Any] = {n[3:]: f for n, f in vars(_Vars).items() if n.startswith("_v_")}
"""How each CEL variable is built (``_v_NAME`` methods of :class:`_Vars`)."""


class ReasoningPlane:
    """Always present; not registered like the others because it produces the Decision."""

    name = PLANE

    # ---- judging ------------------------------------------------------------------------------

    def settle(
        self, action: Action, policy: Policy, session: SessionState, now: datetime, plan: Plan, t0: int
    ) -> Decision | None:
        """The decision when judging the action has nothing to weigh but one reason: the plan's own
        checks pass without a finding and the candidate rules' conditions pick a single strongest
        reason, enforced and not asking for approval; the plan then has the decision prebuilt
        (``t0``: when deciding began, ``perf_counter_ns``). ``None`` whenever anything else could be
        said (a finding, a tie, a warn/shadow rule, an approval, a condition error): :meth:`evaluate`
        and :meth:`combine` then judge the action. On the cases this takes, theirs is the same
        decision (a property test checks)."""
        if not plan.settles:
            return None
        point = action.point
        agent = action.agent
        user = action.user
        spec = policy.agents.get(agent.id) if agent is not None else None
        if spec is None:
            if point is not _INPUT and (agent is not None or point in _AGENT_POINTS):
                return None  # an unknown agent: evaluate says so
        elif point is _TOOL_CALL:
            if not plan.serves(spec.name, policy.agent_tools[spec.name]):
                return None
            if spec.purposes and (action.purpose or session.purpose) not in spec.purposes:
                return None
        best: Contribution | None = None
        tied = False
        if plan.rules:
            cel_vars: _Vars | None = None
            for planned in plan.admitting(user.roles if user is not None else (), agent.id if agent is not None else None):
                if planned.sequenced and not self._after(planned.rule, session):
                    continue
                cond = planned.condition
                if cond is not None:
                    answer = cond.on_arguments(action.arguments)
                    if answer is UNDECIDED:
                        if cel_vars is None:
                            cel_vars = _Vars(action, policy, session, now)
                        try:
                            answer = cond.evaluate(cel_vars, cel_vars.provenance if cond.uses_provenance else None)
                        except ConditionError:
                            return None
                    if not answer:
                        continue
                c = planned.contribution
                if c.mode is not _ENFORCE:
                    return None
                if best is None or c.verdict.rank > best.verdict.rank:
                    best, tied = c, False
                elif c.verdict is best.verdict:
                    tied = True
        if best is None:
            best = plan.default
            if best.mode is not _ENFORCE:
                return None
        if tied or best.verdict is _REQUIRE_APPROVAL:
            return None
        return plan.settled(
            best,
            user.id if user is not None else None,
            agent.id if agent is not None else None,
            action,
            policy,
            now,
            (time.perf_counter_ns() - t0) / 1000,
        )

    def evaluate(self, action: Action, ctx: PlaneContext, plan: Plan | None = None) -> tuple[PlaneResult, list[Contribution]]:
        policy, session = ctx.policy, ctx.session
        if plan is None:
            plan = plan_for(policy, action.point, action.tool, action.connector, action.action_class)
        result = PlaneResult(plane=PLANE)
        contributions: list[Contribution] = []
        defaults = policy.defaults
        point = action.point

        if plan.tool_spec is None and point in TOOL_POINTS:
            verdict = Verdict(defaults.unknown_tool)
            result.add(
                "unknown_tool", f"tool {action.tool!r} is not in the policy's catalog", verdict=verdict, severity=Severity.HIGH
            )
            # enforced in every mode: warn / shadow trial a pack's rules, never an uncatalogued tool
            contributions.append(
                Contribution(verdict, "defaults.unknown_tool", Mode.ENFORCE, f"{action.tool} is not a catalogued tool")
            )
            return result, contributions

        agent = action.agent
        agent_spec = policy.agents.get(agent.id) if agent else None
        if agent_spec is None and point is not MediationPoint.INPUT and (agent is not None or point in _AGENT_POINTS):
            verdict = Verdict(defaults.unknown_agent)
            if verdict is not Verdict.ALLOW:
                who = agent.id if agent else "no agent"
                result.add(
                    "unknown_agent", f"agent {who!r} is not declared in the policy", verdict=verdict, severity=Severity.HIGH
                )
                contributions.append(Contribution(verdict, "defaults.unknown_agent", policy.mode, f"agent {who} is not declared"))
        if agent_spec is not None:
            if point is MediationPoint.TOOL_CALL:
                self._purpose(action, agent_spec, plan, session, result, contributions, policy)
            if point is MediationPoint.DELEGATION:
                target = str(action.arguments.get("to_agent", ""))
                if target not in agent_spec.delegates_to:
                    result.add(
                        "delegation_not_allowed",
                        f"agent {agent_spec.name!r} may not delegate to {target!r}",
                        verdict=Verdict.BLOCK,
                    )
                    contributions.append(
                        Contribution(
                            Verdict.BLOCK,
                            "purpose.delegation",
                            policy.mode,
                            f"{agent_spec.name} may not delegate to {target or 'an unnamed agent'}",
                        )
                    )

        if policy.flow is not None and point is MediationPoint.TOOL_CALL:
            self._flow(action, ctx, result, contributions)
        enforced = self._match_rules(action, agent, ctx, plan, result, contributions) if plan.rules else None
        if enforced is None:  # no rule matched
            contributions.append(plan.default)
        elif not enforced:
            # Only warn/shadow rules matched: enforcement behaves as if they were absent.
            contributions.append(plan.enforce_default)
        return result, contributions

    @staticmethod
    def _purpose(
        action: Action,
        spec: AgentSpec,
        plan: Plan,
        session: SessionState,
        result: PlaneResult,
        contributions: list[Contribution],
        policy: Policy,
    ) -> None:
        """A tool call outside the agent's declared tools, or under a purpose it does not serve."""
        agent, purposes = spec.name, spec.purposes
        if not plan.serves(agent, policy.agent_tools[agent]):
            result.add(
                "tool_outside_purpose",
                f"{action.tool} does not serve agent {agent!r}'s declared purpose",
                verdict=Verdict.BLOCK,
                severity=Severity.HIGH,
            )
            contributions.append(
                Contribution(Verdict.BLOCK, "purpose.tools", policy.mode, f"{action.tool} is outside {agent}'s declared purpose")
            )
        if purposes:
            declared = action.purpose or session.purpose
            if declared not in purposes:
                shown = repr(declared) if declared else "no purpose"
                result.add(
                    "purpose_mismatch",
                    f"the run declared {shown}; agent {agent!r} serves {', '.join(purposes)}",
                    verdict=Verdict.BLOCK,
                    severity=Severity.HIGH,
                )
                contributions.append(
                    Contribution(
                        Verdict.BLOCK,
                        "purpose.declared",
                        policy.mode,
                        f"the run's declared purpose ({shown}) is not one {agent} serves",
                    )
                )

    def _match_rules(
        self,
        action: Action,
        agent: Principal | None,
        ctx: PlaneContext,
        plan: Plan,
        result: PlaneResult,
        contributions: list[Contribution],
    ) -> bool | None:
        """Evaluate the plan's candidate rules: ``None`` when none matched, else whether a matched
        rule is in enforce mode."""
        session = ctx.session
        user = action.user
        cel_vars: _Vars | None = None
        matched = False
        enforced = False
        # the rules whose roles and agents admit this principal (cached per roles and agent)
        for planned in plan.admitting(user.roles if user else (), agent.id if agent else None):
            rule = planned.rule
            if rule.spec.match.after is not None and not self._after(rule, session):
                continue
            cond = rule.condition
            if cond is not None:
                try:
                    answer = cond.on_arguments(action.arguments)
                    if answer is UNDECIDED:
                        if cel_vars is None:
                            cel_vars = _Vars(action, ctx.policy, session, ctx.now)
                        answer = cond.evaluate(cel_vars, cel_vars.provenance if cond.uses_provenance else None)
                    if not answer:
                        continue
                except ConditionError as exc:
                    result.add(
                        "condition_error",
                        f"rule {rule.id} ({rule.source}): {exc}",
                        verdict=Verdict.BLOCK,
                        severity=Severity.ERROR,
                        rule_id=rule.id,
                    )
                    contributions.append(
                        Contribution(Verdict.BLOCK, rule.id, Mode.ENFORCE, f"rule {rule.id} could not be evaluated ({exc})")
                    )
                    matched = enforced = True
                    continue
            matched = True
            contribution = planned.contribution
            if contribution.mode is Mode.ENFORCE:
                enforced = True
            contributions.append(contribution)
        return enforced if matched else None

    @staticmethod
    def _flow(action: Action, ctx: PlaneContext, result: PlaneResult, contributions: list[Contribution]) -> None:
        """Information flow: untrusted values in a consequential action's arguments."""
        policy, flow = ctx.policy, ctx.policy.flow
        assert flow is not None
        extra = policy.flow_globs[-1]
        if action.action_class not in flow.classes and not extra.matches(action.tool):
            return
        index = ctx.session.flow
        if index.empty:
            return
        trusted = policy.lists.trusted_values() if policy.lists else frozenset()
        cel_vars: _Vars | None = None
        for rule in policy.flow_rules:
            if rule.tools and not rule.tools.matches(action.tool):
                continue
            matches = index.check(action.arguments, rule.spec.fields, kinds=rule.kinds, trusted=trusted)
            if matches and rule.unless is not None:
                if cel_vars is None:
                    cel_vars = _Vars(action, policy, ctx.session, ctx.now)
                try:
                    matches = _not_exempt(rule, matches, cel_vars)
                except ConditionError as exc:
                    result.add(
                        "condition_error",
                        f"flow rule {rule.id} ({rule.source}) unless: {exc}",
                        verdict=Verdict.BLOCK,
                        severity=Severity.ERROR,
                        rule_id=rule.id,
                    )
                    contributions.append(
                        Contribution(Verdict.BLOCK, rule.id, Mode.ENFORCE, f"flow rule {rule.id} could not be evaluated ({exc})")
                    )
                    continue
            if not matches:
                continue
            first = matches[0]
            origin = f"{first.source.tool or 'an untrusted step'} (action {first.source.action_id[:12]})"
            # name the kind of value and a digest, never the value: decisions become evidence
            what = f"{first.field} carries {first.describe()}"
            message = f"{what} taken from untrusted content of {origin}"
            result.add(
                "untrusted_flow",
                message,
                verdict=rule.spec.verdict,
                severity=Severity.HIGH,
                rule_id=rule.id,
                fields={
                    "field": first.field,
                    "kind": first.type,
                    "source_tool": first.source.tool or "",
                    "source_action": first.source.action_id,
                    "matches": len(matches),
                },
            )
            obligations: tuple[Obligation, ...] = ()
            if rule.spec.approval is not None:
                obligations = (approval_obligation(rule.spec.approval, rule.id),)
            reason = f"{rule.spec.reason.rstrip('.')}: {message}" if rule.spec.reason else message
            contributions.append(Contribution(rule.spec.verdict, rule.id, rule.mode, reason, obligations))

    @staticmethod
    def _after(rule: CompiledRule, session: SessionState) -> bool:
        after = rule.spec.match.after
        assert after is not None
        if after.labels and set(after.labels) & session.labels:
            return True
        if not (after.tools or after.connectors or after.classes):
            return False

        # the window counts steps at the points the rule names (so per-document retrieval steps do
        # not push earlier tool calls out of it); only steps that proceeded count. Newest first: a
        # `within` window costs its size, not the session's length.
        def hit(tool: str | None, connector: str | None, cls: ActionClass | None) -> bool:
            return (
                (not rule.after_tools or rule.after_tools.matches(tool))
                and (not rule.after_connectors or rule.after_connectors.matches(connector))
                and (not after.classes or cls in after.classes)
            )

        left = after.within
        points = after.points
        if left is None:  # any step of the whole session: its distinct kinds say as much
            return any(point in points and hit(tool, conn, cls) for point, tool, conn, cls in session.step_kinds())
        for step in reversed(session.steps):
            if step.point not in points or not step.verdict.proceeds:
                continue
            if hit(step.tool, step.connector, step.action_class):
                return True
            left -= 1
            if not left:
                return False
        return False

    # ---- combining ----------------------------------------------------------------------------

    def combine(
        self,
        action: Action,
        policy: Policy,
        contributions: list[Contribution],
        results: list[PlaneResult],
        evaluated_at: datetime,
        duration_us: float = 0.0,
        plan: Plan | None = None,
    ) -> Decision:
        simple = _simple(contributions, results)
        if simple is not None:
            # the common case: no plane found anything, every reason is enforced and none asks for
            # approval: the strongest verdict and its reasons, with no further combining to do
            winners = [c for c in contributions if c.verdict is simple]
            if plan is not None and len(winners) == 1:
                settled = plan.settled(winners[0], *actors(action), action, policy, evaluated_at, duration_us)
                if settled is not None:
                    return settled
            obligations_: tuple[Obligation, ...] = ()
            for c in winners:
                if c.obligations:
                    obligations_ += c.obligations
            return Decision.trusted(
                action_id=action.action_id,
                verdict=simple,
                policy_verdict=simple,
                mode=Mode.ENFORCE,
                rule_ids=(winners[0].rule_id,) if len(winners) == 1 else tuple(dict.fromkeys(c.rule_id for c in winners)),
                findings=(),
                obligations=obligations_,
                explanation=plan.explain(action, winners) if plan else explain(action, simple, simple, Mode.ENFORCE, winners),
                policy_hash=policy.hash,
                policy_version=policy.label,
                evaluated_at=evaluated_at,
                duration_us=duration_us,
                errors=(),
                modified_arguments=None,
                modified_content=None,
            )
        findings: list[Finding] = []
        obligations: list[Obligation] = []
        errors: list[str] = []
        modified_arguments: dict[str, Any] | None = None
        modified_content: Any = None
        content_modified = False
        contribs = list(contributions)
        overriding = [c for c in contributions if c.overrides is not None and c.mode is Mode.ENFORCE and not c.enforce_only]
        for res in results:
            if overriding and res.plane != PLANE:
                res = _apply_overrides(res, overriding)
            findings.extend(res.findings)
            obligations.extend(res.obligations)
            if res.modified_arguments is not None:
                if modified_arguments is not None:
                    errors.append(f"two planes rewrote the arguments ({res.plane} and an earlier one)")
                modified_arguments = res.modified_arguments
            if res.content_modified:
                if content_modified:
                    errors.append(f"two planes rewrote the content ({res.plane} and an earlier one)")
                modified_content, content_modified = res.modified_content, True
            for f in res.findings:
                if f.severity is Severity.ERROR:
                    errors.append(f.message)
                if f.verdict is not None and res.plane != PLANE and "overridden_by" not in f.fields:
                    contribs.append(Contribution(f.verdict, f.rule_id or f"{res.plane}.{f.code}", Mode.ENFORCE, f.message))
        for e in errors:
            if not any(f.message == e for f in findings):
                findings.append(
                    Finding(plane=PLANE, code="combine_error", message=e, severity=Severity.ERROR, verdict=Verdict.BLOCK)
                )
        if errors:
            contribs.append(Contribution(Verdict.BLOCK, "engine.error", Mode.ENFORCE, errors[0]))
        if (modified_arguments is not None or content_modified) and not errors:
            contribs.append(Contribution(Verdict.MODIFY, "data.rewrite", Mode.ENFORCE, "the data was rewritten before use"))
        if not contribs:  # cannot happen (a default always contributes) but never fall open
            contribs.append(Contribution(Verdict.BLOCK, "engine.no_contribution", Mode.ENFORCE, "nothing decided this action"))

        policy_contribs = [c for c in contribs if not c.enforce_only]
        policy_verdict = strongest([c.verdict for c in policy_contribs])
        enforced = [c for c in contribs if c.mode is Mode.ENFORCE]
        # Nothing in enforce mode: the whole policy is in warn/shadow mode, so nothing is stopped.
        verdict = strongest([c.verdict for c in enforced]) if enforced else Verdict.ALLOW
        winners = [c for c in policy_contribs if c.verdict is policy_verdict]
        mode = Mode.ENFORCE
        if verdict is not policy_verdict:
            modes = {c.mode for c in winners} - {Mode.ENFORCE}
            mode = Mode.WARN if Mode.WARN in modes else Mode.SHADOW if modes else policy.mode
            if mode is Mode.WARN:
                findings.append(
                    Finding(
                        plane=PLANE,
                        code="warn_mode",
                        message=f"would be {policy_verdict.value} (warn mode): {winners[0].reason}",
                        severity=Severity.WARNING,
                        verdict=policy_verdict,
                    )
                )
        for c in contribs:
            if c.verdict is verdict or c.verdict is policy_verdict:
                obligations.extend(c.obligations)
        if verdict is Verdict.REQUIRE_APPROVAL and not any(o.kind is ObligationKind.APPROVAL for o in obligations):
            # a require_approval that names no approver (a plane's finding, a default): the pack's
            # default approver, or a block that says why — never a request nobody can approve
            asking = next((c for c in winners if c.verdict is Verdict.REQUIRE_APPROVAL), None)
            asked_by = asking.rule_id if asking else "defaults"
            if policy.defaults.approval is not None:
                obligations.append(approval_obligation(policy.defaults.approval, asked_by))
            else:
                why = (
                    f"{asked_by} asks for approval but names no approver, and the pack sets no `defaults.approval`; "
                    "blocked rather than filing a request nobody can approve"
                )
                findings.append(
                    Finding(
                        plane=PLANE,
                        code="no_approver",
                        message=why,
                        severity=Severity.HIGH,
                        verdict=Verdict.BLOCK,
                        rule_id="defaults.approval",
                        fields={"asked_by": asked_by},
                    )
                )
                blocked = Contribution(Verdict.BLOCK, "defaults.approval", Mode.ENFORCE, why)
                verdict = Verdict.BLOCK
                if policy_verdict is Verdict.REQUIRE_APPROVAL:
                    policy_verdict, mode, winners = Verdict.BLOCK, Mode.ENFORCE, [blocked, *winners]
        rule_ids = tuple(dict.fromkeys(c.rule_id for c in winners))
        explanation = explain(action, verdict, policy_verdict, mode, winners, plan.what if plan else None)
        return Decision(
            action_id=action.action_id,
            verdict=verdict,
            policy_verdict=policy_verdict,
            mode=mode,
            rule_ids=rule_ids,
            findings=tuple(findings),
            obligations=tuple(obligations),
            explanation=explanation,
            policy_hash=policy.hash,
            policy_version=policy.label,
            evaluated_at=evaluated_at,
            duration_us=duration_us,
            errors=tuple(errors),
            modified_arguments=modified_arguments if verdict.proceeds else None,
            modified_content=modified_content if verdict.proceeds else None,
        )


def quiet(results: list[PlaneResult]) -> bool:
    """No plane found anything, asked for anything or rewrote anything: nothing to combine."""
    for res in results:
        if res.findings or res.obligations or res.modified_arguments is not None or res.content_modified:
            return False
    return True


def _simple(contributions: list[Contribution], results: list[PlaneResult]) -> Verdict | None:
    """The verdict when combining has nothing to weigh but enforced reasons (no plane finding,
    obligation or rewrite, no warn/shadow reason, no approval to arrange); else ``None``."""
    if not quiet(results) or not contributions:
        return None
    # one pass: the mode check and deny-overrides (``strongest``) together, on every decision
    best, rank = Verdict.ALLOW, -1
    for c in contributions:
        if c.mode is not Mode.ENFORCE or c.enforce_only:
            return None
        if c.verdict.rank > rank:
            best, rank = c.verdict, c.verdict.rank
    return None if best is Verdict.REQUIRE_APPROVAL else best


def _match_view(m: FlowMatch) -> dict[str, Any]:
    return {
        "field": m.field,
        "kind": m.type,
        "value": m.value if m.kind != "text" else "",
        "source": m.source.tool or "",
        "action_id": m.source.action_id,
    }


def _not_exempt(rule: CompiledFlowRule, matches: list[FlowMatch], cel_vars: _Vars) -> list[FlowMatch]:
    """The matches a flow rule's ``unless:`` does not exempt (raises ConditionError when it fails)."""
    condition = rule.unless
    assert condition is not None
    if "match" not in condition.variables:
        cel_vars.match = None
        return [] if condition.evaluate(cel_vars, cel_vars.provenance) else matches
    kept = []
    try:
        for m in matches:
            cel_vars.match = _match_view(m)
            if not condition.evaluate(cel_vars, cel_vars.provenance):
                kept.append(m)
    finally:
        cel_vars.match = None
    return kept


def _apply_overrides(res: PlaneResult, overriding: list[Contribution]) -> PlaneResult:
    """The plane's findings with those a matched rule overrides marked ``overridden_by`` (they then
    argue for nothing). Errors, and findings whose verdict lets the action proceed (a rewrite), are
    never overridden."""
    changed = False
    out: list[Finding] = []
    for f in res.findings:
        by = None
        if f.verdict is not None and not f.verdict.proceeds and f.severity is not Severity.ERROR:
            key = f"{res.plane}.{f.code}"
            by = next(
                (
                    c
                    for c in overriding
                    if c.overrides is not None and (c.overrides.matches(key) or (f.rule_id and c.overrides.matches(f.rule_id)))
                ),
                None,
            )
        if by is None:
            out.append(f)
            continue
        changed = True
        out.append(
            f.model_copy(
                update={
                    "message": f"{f.message} [overridden by rule {by.rule_id}]",
                    "fields": {
                        **f.fields,
                        "overridden_by": by.rule_id,
                        "overridden_verdict": f.verdict.value if f.verdict else None,
                    },
                }
            )
        )
    if not changed:
        return res
    return replace(res, findings=out)
