"""Per-session state: the history of actions and decisions, counters, labels and provenance.

One model serves the reasoning plane's sequence rules and the information-flow rules: each step is
a :class:`Step`; content a step brought in can be marked untrusted (``taint``), and labels travel
with the session.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ._actions import Action, ActionClass, MediationPoint
from ._decisions import Decision, Verdict
from ._flow import FlowIndex

__all__ = ["InMemorySessionStore", "SessionState", "SessionStore", "Step"]


@dataclass(frozen=True)
class Step:
    action_id: str
    point: MediationPoint
    tool: str | None
    connector: str | None
    action_class: ActionClass | None
    verdict: Verdict
    timestamp: datetime
    untrusted: bool = False
    """The step brought untrusted content into the session (a tool result, a retrieval)."""


@dataclass
class SessionState:
    session_id: str
    intent: str | None = None
    purpose: str | None = None
    steps: list[Step] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    """Counts of steps that proceeded, keyed ``tool:NAME``, ``connector:NAME``, ``class:NAME``."""
    flow: FlowIndex = field(default_factory=FlowIndex)
    """Values of untrusted and trusted content seen in this session (information flow)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Room for planes to keep their own per-session state."""

    def cel_view(self) -> dict[str, Any]:
        """The ``session`` variable of CEL conditions."""
        return {
            "id": self.session_id,
            "intent": self.intent or "",
            "purpose": self.purpose or "",
            "steps": len(self.steps),
            "labels": sorted(self.labels),
            "counts": dict(self.counts),
            "tainted": not self.flow.empty,
        }

    def record(self, action: Action, decision: Decision, *, untrusted: bool = False) -> None:
        step = Step(
            action_id=action.action_id,
            point=action.point,
            tool=action.tool,
            connector=action.connector,
            action_class=action.action_class,
            verdict=decision.verdict,
            timestamp=decision.evaluated_at,
            untrusted=untrusted,
        )
        self.steps.append(step)
        if action.point is MediationPoint.INPUT:
            self.intent = action.intent or self.intent
            self.purpose = action.purpose or self.purpose
        if decision.verdict.proceeds:
            if action.tool:
                self.counts[f"tool:{action.tool}"] += 1
            if action.connector:
                self.counts[f"connector:{action.connector}"] += 1
            if action.action_class:
                self.counts[f"class:{action.action_class.value}"] += 1
            self.labels.update(action.labels)  # only data that actually flowed labels the session


class SessionStore(Protocol):
    """Where session states live. ``lock(session_id)`` serializes decisions of one session."""

    def get(self, session_id: str) -> SessionState: ...

    def lock(self, session_id: str) -> threading.Lock: ...

    def end(self, session_id: str) -> None: ...


class InMemorySessionStore:
    """Process-local session state (the default)."""

    def __init__(self) -> None:
        self._states: dict[str, SessionState] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, session_id: str) -> SessionState:
        with self._guard:
            state = self._states.get(session_id)
            if state is None:
                state = self._states[session_id] = SessionState(session_id)
            return state

    def lock(self, session_id: str) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(session_id)
            if lock is None:
                lock = self._locks[session_id] = threading.Lock()
            return lock

    def end(self, session_id: str) -> None:
        with self._guard:
            self._states.pop(session_id, None)
            self._locks.pop(session_id, None)
