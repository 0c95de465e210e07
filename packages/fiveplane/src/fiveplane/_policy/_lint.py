"""Static checks of a compiled policy: unreachable rules, shadowed rules, suspicious conditions."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .._actions import MediationPoint
from .._decisions import Verdict
from ._load import CompiledRule, Policy

__all__ = ["LintIssue", "lint_policy"]

_COMPREHENSION = re.compile(r"\.\s*(?:exists|all|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_CEL_TYPES = {"string", "int", "uint", "double", "bool", "bytes", "list", "map", "null_type", "type", "timestamp", "duration"}
_TOOL_POINTS = (MediationPoint.TOOL_CALL, MediationPoint.TOOL_RESULT)


@dataclass(frozen=True)
class LintIssue:
    where: str
    rule_id: str
    code: str
    message: str
    level: str = "warning"

    def __str__(self) -> str:
        return f"{self.where}: {self.level}: rule {self.rule_id!r}: {self.message} [{self.code}]"


def _static_cover(rule: CompiledRule, policy: Policy) -> set[tuple[MediationPoint, str | None]]:
    """The (point, tool) pairs this rule can match, over the catalog (None: a step without a tool)."""
    cover: set[tuple[MediationPoint, str | None]] = set()
    for point in rule.spec.match.points:
        if point in _TOOL_POINTS:
            for t in policy.tools.values():
                if rule.matches_static(point, t.name, t.connector, t.action_class):
                    cover.add((point, t.name))
        else:
            # Steps without a catalogued tool: a tool or connector constraint can still match a
            # named retriever or model, so only a class constraint makes the rule unreachable.
            if not rule.spec.match.classes:
                cover.add((point, None))
    return cover


def _unconditional(rule: CompiledRule) -> bool:
    m = rule.spec.match
    return rule.condition is None and m.after is None and not m.roles and not m.agents


def lint_policy(policy: Policy) -> list[LintIssue]:
    issues: list[LintIssue] = []
    covers = {r.id: _static_cover(r, policy) for r in policy.rules}
    for rule in policy.rules:
        where = str(rule.source)
        if not covers[rule.id]:
            issues.append(
                LintIssue(
                    where,
                    rule.id,
                    "unreachable",
                    "can never match: no catalogued tool fits its points, tools, connectors and classes together",
                )
            )
            continue
        if rule.verdict is not Verdict.BLOCK:
            blockers = [
                s
                for s in policy.rules
                if s is not rule and s.verdict is Verdict.BLOCK and _unconditional(s) and s.mode is rule.mode
            ]
            covered = set().union(*(covers[s.id] for s in blockers)) if blockers else set()
            if covers[rule.id] <= covered:
                names = ", ".join(s.id for s in blockers if covers[s.id] & covers[rule.id])
                issues.append(
                    LintIssue(
                        where,
                        rule.id,
                        "shadowed",
                        f"its {rule.verdict.value} can never take effect: always overridden by block rule(s) {names}",
                    )
                )
        for other in policy.rules:
            if other.order < rule.order and other.spec.model_dump(
                exclude={"id", "description", "reason"}
            ) == rule.spec.model_dump(exclude={"id", "description", "reason"}):
                issues.append(LintIssue(where, rule.id, "duplicate", f"identical to rule {other.id!r} ({other.source})"))
                break
        if rule.condition is not None:
            bound = set(_COMPREHENSION.findall(rule.condition.source))
            stray = [v for v in rule.condition.unknown_variables if v not in bound and v not in _CEL_TYPES]
            if stray:
                issues.append(
                    LintIssue(
                        where,
                        rule.id,
                        "unknown_variable",
                        f"condition reads {', '.join(stray)}, which is not a fiveplane variable; it will fail and block at run time",
                        level="error",
                    )
                )
    return issues
