"""The compiled decision plan: what the reasoning plane knows about an action before it sees it.

Everything that depends only on the action's static part — mediation point, tool, and the
connector and class the caller gave — is worked out once per key and cached on the policy: the
catalog's corrections (and their notes), the candidate rules with their prebuilt contributions and
obligations, the default that applies when none matches, the words that describe the step, and the
``session.counts`` keys a step that proceeds adds to. A decision then only does what depends on
the action's principal, arguments and session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._actions import Action, ActionClass, MediationPoint, PrincipalKind
from .._decisions import Finding, Mode, Obligation, ObligationKind, Severity, Verdict
from .._policy._cel import Condition
from .._policy._load import CompiledRule, Glob, Policy
from .._policy._models import ApprovalSpec, ToolSpec

if TYPE_CHECKING:
    from ._reasoning import Contribution

__all__ = ["Plan", "PlannedRule", "approval_obligation", "plan_for", "trusted_copy"]

PLANE = "reasoning"
_MAX_PLANS = 100_000
_MAX_CACHED = 256


@dataclass(frozen=True, slots=True)
class PlannedRule:
    """A candidate rule with what its match contributes, built once."""

    rule: CompiledRule
    roles: frozenset[str]
    agents: Glob | None
    after: bool
    condition: Condition | None
    contribution: Contribution


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
    _serves: dict[str, bool] = field(default_factory=dict)
    _admitting: dict[tuple[tuple[str, ...], str | None], tuple[PlannedRule, ...]] = field(default_factory=dict)
    _explained: dict[tuple[int, str | None, str | None], str] = field(default_factory=dict)

    def normalize(self, action: Action) -> Action:
        return trusted_copy(action, self.updates) if self.updates else action

    def admitting(self, roles: tuple[str, ...], agent: str | None) -> tuple[PlannedRule, ...]:
        """The candidate rules whose ``roles:`` and ``agents:`` admit a principal with these roles
        acting through this agent (in rule order)."""
        key = (roles, agent)
        found = self._admitting.get(key)
        if found is None:
            found = tuple(
                r
                for r in self.rules
                if not (r.roles and r.roles.isdisjoint(roles))
                and not (r.agents is not None and not (agent is not None and r.agents.matches(agent)))
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
        if len(winners) != 1 or id(winners[0]) not in self.own:
            from ._reasoning import explain

            return explain(action, winners[0].verdict, winners[0].verdict, Mode.ENFORCE, winners, self.what)
        user = agent = None
        for link in action.principal:
            if link.kind is PrincipalKind.USER:
                if user is None:
                    user = link.id
            elif link.kind is PrincipalKind.AGENT:
                agent = link.id
        key = (id(winners[0]), user, agent)
        text = self._explained.get(key)
        if text is None:
            from ._reasoning import explain

            text = explain(action, winners[0].verdict, winners[0].verdict, Mode.ENFORCE, winners, self.what)
            if len(self._explained) >= _MAX_CACHED:
                self._explained.clear()
            self._explained[key] = text
        return text


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
    from ._reasoning import Contribution

    spec = policy.tools.get(tool) if tool else None
    updates: dict[str, Any] = {}
    notes: list[Finding] = []
    if spec is not None:
        if cls is not spec.action_class:
            if cls is not None:
                notes.append(
                    Finding(
                        plane=PLANE,
                        code="class_from_catalog",
                        message=f"{tool} is {spec.action_class.value} per the catalog, not {cls.value}",
                        severity=Severity.WARNING,
                    )
                )
            updates["action_class"] = cls = spec.action_class
        if spec.connector and connector != spec.connector:
            if connector is not None:
                notes.append(
                    Finding(
                        plane=PLANE,
                        code="connector_from_catalog",
                        message=f"{tool} talks to {spec.connector} per the catalog, not {connector}",
                        severity=Severity.WARNING,
                    )
                )
            updates["connector"] = connector = spec.connector
    rules = tuple(
        PlannedRule(
            rule=r,
            roles=r.roles,
            agents=r.agents or None,
            after=r.spec.match.after is not None,
            condition=r.condition,
            contribution=Contribution(
                r.verdict,
                r.id,
                r.mode,
                r.spec.reason or r.spec.description or f"rule {r.id} matched",
                rule_obligations(r),
                overrides=r.overrides or None,
            ),
        )
        for r in policy.candidates(point, tool, connector, cls)
    )
    default = _default(point, tool, cls, policy)
    enforce_default = Contribution(default.verdict, default.rule_id, default.mode, default.reason, enforce_only=True)
    what = tool or point.value.replace("_", " ")
    if tool and cls:
        what = f"{tool} ({cls.value})"
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
    )


def _default(point: MediationPoint, tool: str | None, cls: ActionClass | None, policy: Policy) -> Contribution:
    from ._reasoning import Contribution

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
