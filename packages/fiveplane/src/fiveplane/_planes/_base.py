"""The plane protocol: every plane is an evaluator with a sync and an async twin.

A plane looks at an :class:`~fiveplane.Action` (and the session state) and returns a
:class:`PlaneResult`: findings (each may argue for a verdict), obligations for the enforcement
planes, and optionally rewritten arguments or content. Planes never import each other: what they
share travels in the Action, the session state and the Decision. To add a plane, subclass
:class:`BasePlane`, give it a ``name`` (and a pydantic ``config_model`` if the policy pack
configures it under ``planes: {name: ...}``) and pass it to the Governor.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from .._actions import Action
from .._decisions import Decision, Finding, Obligation, Severity, Verdict

if TYPE_CHECKING:
    from .._policy._load import Policy
    from .._session import SessionState

__all__ = ["BasePlane", "PlaneContext", "PlaneResult"]


@dataclass
class PlaneContext:
    """What a plane may read while judging one action."""

    policy: Policy
    session: SessionState
    now: datetime
    config: BaseModel | None = None
    """This plane's validated section of the policy (``planes: {name: ...}``)."""
    staged: dict[str, Any] = field(default_factory=dict)
    """Session changes staged during this decision (shared by its planes; committed once it stands)."""

    def session_value(self, key: str, default: Any = None) -> Any:
        """A per-session value of a plane (``key`` namespaced by the plane), staged changes first."""
        if key in self.staged:
            return self.staged[key]
        return self.session.extra.get(key, default)

    def stage(self, key: str, value: Any) -> None:
        """Set a per-session value (JSON) for the session to keep once the decision stands.

        Planes never change ``session`` directly: the engine commits staged values together with the
        step, only after every veto (another plane's ``on_decision``, the evidence write), and in the
        database when the session store is shared, so every worker sees them.
        """
        self.staged[key] = value


@dataclass
class PlaneResult:
    plane: str
    findings: list[Finding] = field(default_factory=list)
    obligations: list[Obligation] = field(default_factory=list)
    modified_arguments: dict[str, Any] | None = None
    modified_content: Any = None
    content_modified: bool = False
    labels: set[str] = field(default_factory=set)
    untrusted: bool = False
    """The action brings untrusted content into the session."""

    def add(
        self,
        code: str,
        message: str,
        *,
        verdict: Verdict | None = None,
        severity: Severity = Severity.INFO,
        rule_id: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> Finding:
        finding = Finding(
            plane=self.plane,
            code=code,
            message=message,
            severity=severity,
            verdict=verdict,
            rule_id=rule_id,
            fields=fields or {},
        )
        self.findings.append(finding)
        return finding

    @classmethod
    def error(cls, plane: str, exc: BaseException) -> PlaneResult:
        """A plane failure, as a finding that fails the decision closed."""
        result = cls(plane=plane)
        result.add(
            "plane_error",
            f"{plane} plane failed: {type(exc).__name__}: {exc}",
            verdict=Verdict.BLOCK,
            severity=Severity.ERROR,
        )
        return result


class BasePlane:
    """Base class of planes. Override :meth:`evaluate`; override :meth:`aevaluate` for I/O or heavy CPU."""

    name: ClassVar[str] = "plane"
    config_model: ClassVar[type[BaseModel] | None] = None

    def check_policy(self, policy: Policy) -> list[str]:
        """Cross-checks of this plane's configuration against the catalog (unknown tools, agents…).

        Called once when a Governor is built; every message becomes a load error at the plane's
        ``planes:`` section.
        """
        return []

    def bind(self, policy: Policy, config: BaseModel | None) -> None:
        """Called once when a Governor is built, with the policy and this plane's validated config."""

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate()")

    async def aevaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        """Async twin. The default runs :meth:`evaluate` in a worker thread so a plane never blocks the loop."""
        return await asyncio.to_thread(self.evaluate, action, ctx)

    def on_decision(self, action: Action, decision: Decision, ctx: PlaneContext) -> list[Obligation]:
        """Called once the decision is made (e.g. to mint a token). Raise to fail the decision closed."""
        return []

    async def aon_decision(self, action: Action, decision: Decision, ctx: PlaneContext) -> list[Obligation]:
        return self.on_decision(action, decision, ctx)

    def redact_evidence(self, action: Action) -> Action:
        """The action as the evidence may store it (the data plane redacts what it detected)."""
        return action

    def redact_evidence_text(self, text: str, action: Action) -> str:
        """Free text about ``action`` as the evidence may store it: the declared intent, claims, an
        error message, an approver's reason (the data plane redacts what it detects). Must not raise
        for content: return a digest (``[unscanned sha256:…]``) when the text cannot be scanned."""
        return text

    def on_abort(self, action_id: str) -> None:
        """The decision turned into a block after :meth:`on_decision` ran (e.g. revoke a fresh token)."""

    def take_capability(self, action_id: str) -> Any:
        """A capability this plane holds for the governed tool of ``action_id`` (handed out once)."""
        return None

    def on_session_end(self, session_id: str) -> Any:
        """The session (task) ended: revoke what was issued for it."""
        return None

    async def aon_session_end(self, session_id: str) -> Any:
        return await asyncio.to_thread(self.on_session_end, session_id)
