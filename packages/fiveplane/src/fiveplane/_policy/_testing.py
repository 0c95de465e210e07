"""YAML test cases shipped beside policy packs, and the runner behind ``fiveplane policy test``.

A test file (``<pack>.tests.yaml``) names its pack and lists cases; each case is a sequence of steps
judged in order in one session, each with the verdict (and optionally rule ids) it must get::

    policy: sales-support.yaml
    cases:
      - name: a rep reads the CRM
        user: {id: rep-1, roles: [sales-rep]}
        agent: sales-assistant
        purpose: sales-support
        steps:
          - tool: crm.search_accounts
            arguments: {query: Globex}
            expect: {verdict: allow, rule_ids: [crm.read]}
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._actions import Action, ActionClass, MediationPoint, Principal, PrincipalKind
from .._decisions import Decision, Verdict
from ._load import Policy, _validation_errors, load_policy
from ._yaml import PolicyError, load_yaml

__all__ = ["CaseResult", "TestFile", "discover_tests", "run_test_file"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UserSpec(_Strict):
    id: str
    roles: tuple[str, ...] = ()
    claims: dict[str, Any] = Field(default_factory=dict)


class Expect(_Strict):
    verdict: Verdict
    rule_ids: tuple[str, ...] | None = None
    """If given: exactly these rule ids (in any order) produced the verdict."""
    explanation_contains: str | None = None
    findings: tuple[str, ...] = ()
    """Finding codes that must be present (``plane.code`` or ``code``)."""


class StepSpec(_Strict):
    point: MediationPoint = MediationPoint.TOOL_CALL
    tool: str | None = None
    connector: str | None = None
    action_class: ActionClass | None = Field(default=None, alias="class")
    arguments: dict[str, Any] = Field(default_factory=dict)
    content: Any = None
    intent: str | None = None
    purpose: str | None = None
    labels: tuple[str, ...] = ()
    principal: tuple[Principal, ...] | None = None
    to_agent: str | None = None
    """For ``delegation`` steps: the agent receiving the work."""
    expect: Expect

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CaseSpec(_Strict):
    name: str
    description: str = ""
    user: UserSpec | None = None
    agent: str | None = None
    principal: tuple[Principal, ...] | None = None
    intent: str | None = None
    purpose: str | None = None
    steps: tuple[StepSpec, ...] = Field(min_length=1)


class TestFile(_Strict):
    policy: str | list[str]
    description: str = ""
    cases: tuple[CaseSpec, ...] = Field(min_length=1)

    __test__ = False  # not a pytest class


@dataclass
class StepResult:
    index: int
    step: StepSpec
    decision: Decision | None
    failures: list[str]


@dataclass
class CaseResult:
    file: Path
    name: str
    where: str
    steps: list[StepResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(not s.failures for s in self.steps)


def _chain(case: CaseSpec, step: StepSpec) -> tuple[Principal, ...]:
    if step.principal:
        return step.principal
    if case.principal:
        return case.principal
    chain: list[Principal] = []
    if case.user:
        chain.append(Principal(kind=PrincipalKind.USER, id=case.user.id, roles=case.user.roles, claims=case.user.claims))
    if case.agent:
        chain.append(Principal(kind=PrincipalKind.AGENT, id=case.agent))
    return tuple(chain)


def _check(expect: Expect, decision: Decision) -> list[str]:
    failures = []
    if decision.verdict is not expect.verdict:
        failures.append(f"verdict {decision.verdict.value}, expected {expect.verdict.value} ({decision.explanation})")
    if expect.rule_ids is not None and set(decision.rule_ids) != set(expect.rule_ids):
        failures.append(f"rule ids {sorted(decision.rule_ids)}, expected {sorted(expect.rule_ids)}")
    if expect.explanation_contains and expect.explanation_contains not in decision.explanation:
        failures.append(f"explanation {decision.explanation!r} lacks {expect.explanation_contains!r}")
    codes = {f.code for f in decision.findings} | {f"{f.plane}.{f.code}" for f in decision.findings}
    for code in expect.findings:
        if code not in codes:
            failures.append(f"finding {code!r} missing (have {sorted(codes)})")
    return failures


GovernorFactory = Callable[[Policy], Any]


def _default_factory(policy: Policy) -> Any:
    """A Governor with the planes the pack configures, on throw-away state (fresh for every case)."""
    from .._engine import Governor
    from .._planes._registry import planes_for

    return Governor(policy, planes=planes_for(policy, **dry_run_options()))


def dry_run_options() -> dict[str, dict[str, Any]]:
    """Plane options for dry runs (``policy test``, ``policy explain``): nothing shared is read or
    consumed — rate-limit counters, grants and revocations live in a private in-memory database and
    capability tokens are signed with an ephemeral key."""
    from biscuit_auth import KeyPair

    return {"endpoint": {"database_url": "sqlite://"}, "identity": {"database": "sqlite://", "root_key": KeyPair()}}


def run_test_file(path: Path | str, governor_factory: GovernorFactory | None = None) -> list[CaseResult]:
    """Run every case of one test file, each in a fresh session of a fresh Governor."""
    path = Path(path)
    located = load_yaml(path)
    if not isinstance(located.data, dict):
        raise PolicyError([f"{path}:1: a test file must be a mapping"])
    try:
        spec = TestFile.model_validate(located.data)
    except ValidationError as exc:
        raise PolicyError(_validation_errors(exc, located)) from None
    packs = [spec.policy] if isinstance(spec.policy, str) else spec.policy
    policy = load_policy([path.parent / p for p in packs])
    factory = governor_factory or _default_factory
    results = []
    for ci, case in enumerate(spec.cases):
        governor = factory(policy)
        session = f"test-{uuid.uuid4().hex[:12]}"
        result = CaseResult(file=path, name=case.name, where=located.where(("cases", ci)))
        for si, step in enumerate(case.steps):
            try:
                action = Action(
                    point=step.point,
                    tool=step.tool,
                    connector=step.connector,
                    action_class=step.action_class,
                    arguments=({"to_agent": step.to_agent, **step.arguments} if step.to_agent else step.arguments),
                    content=step.content,
                    principal=_chain(case, step),
                    session_id=session,
                    intent=step.intent or case.intent,
                    purpose=step.purpose or case.purpose,
                    labels=step.labels,
                )
            except ValidationError as exc:
                where = located.where(("cases", ci, "steps", si))
                result.steps.append(StepResult(si, step, None, [f"{where}: invalid action: {exc.errors()[0]['msg']}"]))
                break
            decision = governor.decide(action)
            result.steps.append(StepResult(si, step, decision, _check(step.expect, decision)))
        results.append(result)
    return results


def discover_tests(paths: Sequence[Path | str]) -> list[Path]:
    """Test files for the given paths: test files themselves, ``*.tests.yaml`` under directories,
    and the ``<stem>.tests.yaml`` beside a pack file."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(p.rglob("*.tests.yaml")))
        elif p.name.endswith(".tests.yaml"):
            found.append(p)
        else:
            sibling = p.with_name(p.name.removesuffix(".yaml").removesuffix(".yml") + ".tests.yaml")
            if sibling.exists():
                found.append(sibling)
    return list(dict.fromkeys(found))
