"""The compiled decision plan: what the reasoning plane knows about an action before it sees it.

Everything that depends only on the action's static part — mediation point, tool, and the
connector and class the caller gave — is worked out once per key and cached on the policy: the
catalog's corrections (and their notes), the candidate rules with their prebuilt contributions and
obligations, the default that applies when none matches, the words that describe the step, and the
``session.counts`` keys a step that proceeds adds to. A decision then only does what depends on
the action's principal, arguments and session.

The reasons a decision weighs (:class:`Contribution`) and the sentence that explains it
(:func:`explain`) live here too: a plan builds and caches both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .._actions import _AGENT, _USER, Action, ActionClass, MediationPoint
from .._decisions import Decision, Finding, Mode, Obligation, ObligationKind, Severity, Verdict
from .._policy._cel import Condition
from .._policy._load import CompiledRule, Glob, Policy
from .._policy._models import ApprovalSpec, ToolSpec

__all__ = [
    "TOOL_POINTS",
    "Contribution",
    "Plan",
    "PlannedRule",
    "actors",
    "approval_obligation",
    "describe",
    "explain",
    "plan_for",
    "step_words",
    "trusted_copy",
]

PLANE = "reasoning"
TOOL_POINTS = frozenset({MediationPoint.TOOL_CALL, MediationPoint.TOOL_RESULT})
"""The points that name a tool (an uncatalogued one is a finding)."""
_MAX_PLANS = 100_000
_MAX_CACHED = 256


@dataclass(frozen=True)
class Contribution:
    """One reason for a verdict: a matched rule, a default, or a plane's finding."""

    verdict: Verdict
    rule_id: str
    mode: Mode
    reason: str
    obligations: tuple[Obligation, ...] = ()
    enforce_only: bool = False
    """Counts for the enforced verdict only (the default standing in for warn/shadow-only matches)."""
    overrides: Glob | None = None
    """Plane findings this (matched) rule overrides."""


@dataclass(frozen=True, slots=True)
class PlannedRule:
    """A candidate rule with what its match contributes, built once."""

    rule: CompiledRule
    contribution: Contribution
    condition: Condition | None = None
    """The rule's ``when:`` (the rule's own, at hand)."""
    sequenced: bool = False
    """The rule has an ``after:`` (a sequence rule: the session's history decides)."""


@dataclass(frozen=True, slots=True)
class Plan:
    point: MediationPoint
    tool: str | None
    connector: str | None
    action_class: ActionClass | None
    """The connector and class after the catalog's corrections."""
    tool_spec: ToolSpec | None
    updates: dict[str, Any]
    """The catalog's corrections of the action (empty: the action is used as given)."""
    notes: tuple[Finding, ...]
    """Warnings about the corrections (a caller's mislabelled class or connector)."""
    rules: tuple[PlannedRule, ...]
    default: Contribution
    enforce_default: Contribution
    """The default standing in for warn/shadow-only matches (counts for enforcement only)."""
    what: str
    """``tool (class)``: the first words of the explanation."""
    count_keys: tuple[str, ...]
    """The ``session.counts`` keys a step that proceeds adds one to."""
    own: frozenset[int] = frozenset()
    """``id()`` of the contributions this plan holds (alive as long as it is: stable keys)."""
    settles: bool = False
    """Whether ``ReasoningPlane.settle`` may decide this step: nothing about it is a finding in
    advance (a catalogued tool, no correction notes, no delegation or information-flow check)."""
    _serves: dict[str, bool] = field(default_factory=dict)
    _admitting: dict[tuple[tuple[str, ...], str | None], tuple[PlannedRule, ...]] = field(default_factory=dict)
    _explained: dict[tuple[int, str | None, str | None], str] = field(default_factory=dict)
    _settled: dict[tuple[int, str | None, str | None], dict[str, Any]] = field(default_factory=dict)

    def normalize(self, action: Action) -> Action:
        return trusted_copy(action, self.updates) if self.updates else action

    def admitting(self, roles: tuple[str, ...], agent: str | None) -> tuple[PlannedRule, ...]:
        """The candidate rules whose ``roles:`` and ``agents:`` admit a principal with these roles
        acting through this agent (in rule order)."""
        key = (roles, agent)
        found = self._admitting.get(key)
        if found is None:
            found = tuple(
                p
                for p in self.rules
                if not (p.rule.roles and p.rule.roles.isdisjoint(roles))
                and not (p.rule.agents and not (agent is not None and p.rule.agents.matches(agent)))
            )
            if len(self._admitting) >= _MAX_CACHED:
                self._admitting.clear()
            self._admitting[key] = found
        return found

    def serves(self, agent: str, tools: Glob) -> bool:
        """Whether the tool is among the agent's declared tools (no globs: all)."""
        ok = self._serves.get(agent)
        if ok is None:
            ok = self._serves[agent] = (not tools) or tools.matches(self.tool)
        return ok

    def explain(self, action: Action, winners: list[Contribution]) -> str:
        """The explanation of an enforced decision whose reasons are ``winners`` (cached when the
        one reason is a rule or default of this plan: the sentence then depends only on who acts)."""
        verdict = winners[0].verdict
        if len(winners) != 1 or id(winners[0]) not in self.own:
            return explain(action, verdict, verdict, Mode.ENFORCE, winners, self.what)
        key = (id(winners[0]), *actors(action))
        text = self._explained.get(key)
        if text is None:
            text = explain(action, verdict, verdict, Mode.ENFORCE, winners, self.what)
            if len(self._explained) >= _MAX_CACHED:
                self._explained.clear()
            self._explained[key] = text
        return text

    def settled(
        self,
        winner: Contribution,
        user: str | None,
        agent: str | None,
        action: Action,
        policy: Policy,
        evaluated_at: datetime,
        duration_us: float,
    ) -> Decision | None:
        """The enforced decision whose one reason is ``winner`` (``user`` and ``agent``: the ids
        :func:`actors` gives): its fields but the action's id, time and duration are built once per
        winner and principal, when the winner is a rule or default of this plan; ``None`` for any
        other reason."""
        if id(winner) not in self.own:
            return None
        key = (id(winner), user, agent)
        fields = self._settled.get(key)
        if fields is None:
            verdict = winner.verdict
            fields = Decision.settled_fields(
                verdict=verdict,
                policy_verdict=verdict,
                mode=Mode.ENFORCE,
                rule_ids=(winner.rule_id,),
                findings=(),
                obligations=winner.obligations,
                explanation=self.explain(action, [winner]),
                policy_hash=policy.hash,
                policy_version=policy.label,
                errors=(),
                modified_arguments=None,
                modified_content=None,
            )
            if len(self._settled) >= _MAX_CACHED:
                self._settled.clear()
            self._settled[key] = fields
        return Decision.settled(fields, action.action_id, evaluated_at, duration_us)


def actors(action: Action) -> tuple[str | None, str | None]:
    """The ids of the human user at the head of the chain and of the innermost agent."""
    user = agent = None
    for link in action.principal:
        if link.kind is _USER:
            if user is None:
                user = link.id
        elif link.kind is _AGENT:
            agent = link.id
    return user, agent


def step_words(point: MediationPoint, tool: str | None, cls: ActionClass | None) -> str:
    """How an explanation names the step: ``email.send (invoke)``, or the point (``model output``)."""
    if tool and cls:
        return f"{tool} ({cls.value})"
    return tool or point.value.replace("_", " ")


def plan_for(policy: Policy, point: MediationPoint, tool: str | None, connector: str | None, cls: ActionClass | None) -> Plan:
    """The plan of an action's static part (cached on the policy)."""
    key = (point, tool, connector, cls)
    plan: Plan | None = policy.plans.get(key)
    if plan is None:
        plan = _build(policy, point, tool, connector, cls)
        if len(policy.plans) < _MAX_PLANS:
            policy.plans[key] = plan
    return plan


def _build(policy: Policy, point: MediationPoint, tool: str | None, connector: str | None, cls: ActionClass | None) -> Plan:
    spec = policy.tools.get(tool) if tool else None
    updates: dict[str, Any] = {}
    notes: list[Finding] = []
    if spec is not None:
        if cls is not spec.action_class:
            if cls is not None:
                notes.append(_note("class_from_catalog", f"{tool} is {spec.action_class.value} per the catalog, not {cls.value}"))
            updates["action_class"] = cls = spec.action_class
        if spec.connector and connector != spec.connector:
            if connector is not None:
                notes.append(
                    _note("connector_from_catalog", f"{tool} talks to {spec.connector} per the catalog, not {connector}")
                )
            updates["connector"] = connector = spec.connector
    rules = tuple(
        PlannedRule(
            rule=r,
            contribution=Contribution(
                r.verdict,
                r.id,
                r.mode,
                r.spec.reason or r.spec.description or f"rule {r.id} matched",
                rule_obligations(r),
                overrides=r.overrides or None,
            ),
            condition=r.condition,
            sequenced=r.spec.match.after is not None,
        )
        for r in policy.candidates(point, tool, connector, cls)
    )
    default = _default(point, tool, cls, policy)
    enforce_default = Contribution(default.verdict, default.rule_id, default.mode, default.reason, enforce_only=True)
    what = step_words(point, tool, cls)
    count_keys = tuple(
        k
        for k in (
            f"tool:{tool}" if tool else "",
            f"connector:{connector}" if connector else "",
            f"class:{cls.value}" if cls else "",
        )
        if k
    )
    return Plan(
        point=point,
        tool=tool,
        connector=connector,
        action_class=cls,
        tool_spec=spec,
        updates=updates,
        notes=tuple(notes),
        rules=rules,
        default=default,
        enforce_default=enforce_default,
        what=what,
        count_keys=count_keys,
        own=frozenset(id(c) for c in (default, enforce_default, *(r.contribution for r in rules))),
        settles=(
            (spec is not None or point not in TOOL_POINTS)
            and not notes
            and point is not MediationPoint.DELEGATION
            and not (policy.flow is not None and point is MediationPoint.TOOL_CALL)
        ),
    )


def _note(code: str, message: str) -> Finding:
    return Finding(plane=PLANE, code=code, message=message, severity=Severity.WARNING)


def _default(point: MediationPoint, tool: str | None, cls: ActionClass | None, policy: Policy) -> Contribution:
    d = policy.defaults
    if point is MediationPoint.TOOL_CALL:
        if cls is ActionClass.MODIFY:
            return Contribution(
                Verdict(d.modify_without_rule),
                "defaults.modify_without_rule",
                policy.mode,
                f"no rule allows the modify action {tool}",
            )
        return Contribution(Verdict(d.no_match), "defaults.no_match", policy.mode, f"no rule matches {tool}")
    return Contribution(Verdict(d.other_points), "defaults.other_points", policy.mode, f"no rule matches this {point.value} step")


def approval_obligation(a: ApprovalSpec, rule_id: str) -> Obligation:
    return Obligation(
        kind=ObligationKind.APPROVAL,
        plane=PLANE,
        params={"role": a.role, "separation_of_duties": a.separation_of_duties, "expires_in": a.expires_in},
        rule_id=rule_id,
    )


def rule_obligations(rule: CompiledRule) -> tuple[Obligation, ...]:
    out = [Obligation(kind=o.kind, plane=o.plane, params=o.params, rule_id=rule.id) for o in rule.spec.obligations]
    if rule.spec.approval is not None:
        out.append(approval_obligation(rule.spec.approval, rule.id))
    return tuple(out)


def trusted_copy(model: Any, updates: dict[str, Any]) -> Any:
    """A copy of a frozen pydantic model with ``updates`` applied, without validation: for values
    the engine derived from the model's own validated fields (the catalog's connector and class)."""
    cls = type(model)
    new = object.__new__(cls)
    object.__setattr__(new, "__dict__", {**model.__dict__, **updates})
    object.__setattr__(new, "__pydantic_fields_set__", model.__pydantic_fields_set__ | updates.keys())
    object.__setattr__(new, "__pydantic_extra__", model.__pydantic_extra__)
    object.__setattr__(new, "__pydantic_private__", model.__pydantic_private__)
    return new


_VERBS = {
    Verdict.ALLOW: "Allowed",
    Verdict.MODIFY: "Allowed with rewritten data",
    Verdict.NARROW: "Allowed with narrowed authority",
    Verdict.DEFER: "Deferred",
    Verdict.REQUIRE_APPROVAL: "Paused for approval",
    Verdict.BLOCK: "Blocked",
}


def describe(action: Action, what: str | None = None) -> str:
    """What and for whom, e.g. ``email.send (invoke) for rep-1 via sales-assistant`` (``what``:
    the first part, when the decision plan has it ready)."""
    if what is None:
        what = step_words(action.point, action.tool, action.action_class)
    user, agent = actors(action)
    if user is not None:
        return f"{what} for {user} via {agent}" if agent is not None else f"{what} for {user}"
    return f"{what} for via {agent}" if agent is not None else what


def explain(
    action: Action,
    verdict: Verdict,
    policy_verdict: Verdict,
    mode: Mode,
    winners: list[Contribution],
    what: str | None = None,
) -> str:
    """One sentence: what happened to which step, for whom, and why."""
    subject = describe(action, what)
    reason = winners[0].reason.rstrip(".") if winners else "no reason recorded"
    rule = winners[0].rule_id if winners else "-"
    more = f" (and {len(winners) - 1} more)" if len(winners) > 1 else ""
    if verdict is policy_verdict:
        return f"{_VERBS[verdict]} {subject}: {reason} [{rule}]{more}."
    return f"{_VERBS[verdict]} {subject}, though the policy says {policy_verdict.value} ({mode.value} mode): {reason} [{rule}]{more}."
