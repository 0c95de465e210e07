"""Per-session state — history, counters, labels, information flow, plane state — and where it lives.

One model serves the reasoning plane's sequence rules, the information-flow rules and the planes'
own per-session state (the identity plane's delegations, the approvals a person denied). A decision
uses it in three moves, whatever the store:

1. ``tx = store.begin(session_id)`` takes the session's lock (across processes for the SQL store)
   and gives a snapshot of the state (``tx.state``), read without side effects while the decision
   is evaluated; planes put the changes they want in ``tx.staged``;
2. ``tx.commit(SessionCommit(...))`` applies the one change the decision makes — its step, the
   counts and labels of a step that proceeded, the content it indexes for information flow, the
   staged plane state — only after every veto (planes' ``on_decision``, the evidence write);
3. ``tx.close()`` releases the lock.

:class:`InMemorySessionStore` keeps sessions in this process (the default);
:class:`~fiveplane.SqlSessionStore` keeps them in SQLite (one machine) or PostgreSQL (many) so the
next step of a session is judged the same whichever worker sees it. Both evict idle sessions and cap
each session's flow index; an evicted session is *expired*: its next step is blocked (it never
silently starts again with an empty history), unless the store is built with ``on_expired="restart"``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol

from ._actions import Action, ActionClass, MediationPoint
from ._clock import utcnow
from ._decisions import Decision, Verdict
from ._flow import FlowContent, FlowIndex

__all__ = [
    "InMemorySessionStore",
    "SessionCommit",
    "SessionExpired",
    "SessionState",
    "SessionStore",
    "SessionTx",
    "Step",
]

log = logging.getLogger("fiveplane.sessions")

Recorder = Callable[[str, dict[str, Any]], Any]
OnExpired = Literal["block", "restart"]

DEFAULT_IDLE_TTL = 24 * 3600.0
"""Seconds without a step after which a session is evicted (expired)."""
DEFAULT_MAX_FLOW_ENTRIES = 1_000_000
"""Values + 6-word shingles one session's flow index may hold before its oldest content is dropped."""


class SessionExpired(Exception):
    """The session was evicted (idle, over the store's size) or ended; its steps are refused."""


class Step(NamedTuple):
    """One judged step of a session (immutable; a named tuple, the cheapest record Python builds)."""

    action_id: str
    point: MediationPoint
    tool: str | None
    connector: str | None
    action_class: ActionClass | None
    verdict: Verdict
    timestamp: datetime
    untrusted: bool = False
    """The step brought untrusted content into the session (a tool result, a retrieval)."""


_NO_LABELS: frozenset[str] = frozenset()
_INPUT = MediationPoint.INPUT
_new_tuple = tuple.__new__


@dataclass(slots=True)
class SessionCommit:
    """The one change a decision makes to its session, applied after every veto."""

    step: Step
    intent: str | None = None
    """Set on ``input`` steps: the declared intent (and ``purpose``) of the session from now on."""
    purpose: str | None = None
    labels: frozenset[str] = frozenset()
    """Labels the step's data brought (applied only when the step proceeded)."""
    flow: FlowContent | None = None
    """Content indexed for information flow (only when the step proceeded)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Plane state staged during the decision (JSON values), keyed by the plane's own names."""
    keys: tuple[str, ...] | None = None
    """The ``session.counts`` keys of the step's tool, connector and class, when known in advance
    (the decision plan has them); else they are derived from the step."""

    @classmethod
    def of(
        cls,
        action: Action,
        decision: Decision,
        *,
        untrusted: bool = False,
        labels: frozenset[str] = frozenset(),
        flow: FlowContent | None = None,
        extra: Mapping[str, Any] | None = None,
        count_keys: tuple[str, ...] | None = None,
    ) -> SessionCommit:
        step: Step = _new_tuple(  # Step(...) without the named tuple's Python-level __new__ (one per decision)
            Step,
            (
                action.action_id,
                action.point,
                action.tool,
                action.connector,
                action.action_class,
                decision.verdict,
                decision.evaluated_at,
                untrusted,
            ),
        )
        is_input = action.point is _INPUT
        proceeds = decision.verdict.proceeds
        return cls(
            step,
            action.intent if is_input else None,
            action.purpose if is_input else None,
            ((labels | frozenset(action.labels)) if action.labels else labels) if proceeds else _NO_LABELS,
            flow if proceeds else None,
            dict(extra) if extra else {},
            count_keys,
        )

    def count_keys(self) -> Sequence[str]:
        """The ``session.counts`` keys this step adds one to (steps that proceeded only)."""
        s = self.step
        if not s.verdict.proceeds:
            return ()
        if self.keys is not None:
            return self.keys
        keys = []
        if s.tool:
            keys.append(f"tool:{s.tool}")
        if s.connector:
            keys.append(f"connector:{s.connector}")
        if s.action_class:
            keys.append(f"class:{s.action_class.value}")
        return keys


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
    """Per-plane session state (JSON values; planes change it through ``PlaneContext.stage``)."""
    version: int = 0
    """Commits applied so far (the SQL store's optimistic check and cache key)."""
    last_seen: datetime | None = None
    expired: str | None = None
    """Why the session was evicted or ended, when it was (its steps are then refused)."""
    _kinds: set[tuple[MediationPoint, str | None, str | None, ActionClass | None]] = field(
        default_factory=set, init=False, repr=False, compare=False
    )
    _kinds_of: int = field(default=0, init=False, repr=False, compare=False)

    def step_kinds(self) -> set[tuple[MediationPoint, str | None, str | None, ActionClass | None]]:
        """The distinct (point, tool, connector, class) of the steps that proceeded, brought up to
        date with the steps appended since the last call (steps are only ever appended): what a
        sequence rule without a window needs, at the cost of the kinds, not of the history."""
        steps, n = self.steps, self._kinds_of
        if n < len(steps):
            add = self._kinds.add
            for s in steps[n:]:
                if s.verdict.proceeds:
                    add((s.point, s.tool, s.connector, s.action_class))
            self._kinds_of = len(steps)
        return self._kinds

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

    def apply(self, change: SessionCommit, *, max_flow_entries: int | None = None) -> int:
        """Apply one decision's change; returns how many flow content items the cap evicted."""
        self.steps.append(change.step)
        if change.intent:
            self.intent = change.intent
        if change.purpose:
            self.purpose = change.purpose
        for key in change.count_keys():
            self.counts[key] += 1
        if change.labels:
            self.labels.update(change.labels)
        if change.extra:
            self.extra.update(change.extra)
        self.version += 1
        self.last_seen = change.step.timestamp
        if change.flow is not None:
            self.flow.apply(change.flow)
            if max_flow_entries is not None:
                return self.flow.evict(max_flow_entries)
        return 0

    def record(self, action: Action, decision: Decision, *, untrusted: bool = False) -> None:
        """Apply a step directly (tests and tools that build states by hand; the engine commits)."""
        self.apply(SessionCommit.of(action, decision, untrusted=untrusted))


class SessionTx:
    """One decision's hold on a session: read ``state``, stage plane changes, commit once, close."""

    blocking = False
    """True when ``commit`` / ``close`` do I/O (the async engine then runs them in a worker thread)."""

    def __init__(self, state: SessionState) -> None:
        self.state = state
        self.staged: dict[str, Any] = {}
        self.committed = False

    def commit(self, change: SessionCommit) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SessionStore(Protocol):
    """Where session states live; ``begin(session_id)`` serializes the decisions of one session."""

    blocking: bool
    """``begin`` / ``commit`` do I/O (the async engine runs them in worker threads)."""

    def begin(self, session_id: str) -> SessionTx: ...

    async def abegin(self, session_id: str) -> SessionTx: ...

    def get(self, session_id: str) -> SessionState: ...

    def end(self, session_id: str) -> None: ...

    def evict_idle(self) -> list[str]: ...


async def acquire_lock(lock: threading.Lock) -> None:
    """Take a thread lock from a coroutine without blocking the loop (safe under cancellation)."""
    if lock.acquire(blocking=False):
        return
    fut = asyncio.get_running_loop().run_in_executor(None, lock.acquire)
    try:
        await asyncio.shield(fut)
    except asyncio.CancelledError:
        fut.add_done_callback(lambda f: lock.release() if not f.cancelled() and f.exception() is None and f.result() else None)
        raise


def emit(record: Recorder | None, kind: str, payload: dict[str, Any]) -> None:
    """Hand a store event to the evidence recorder; a recorder failure is logged, never fatal here."""
    if record is None:
        return
    try:
        record(kind, payload)
    except Exception:
        log.warning("could not record %s for session %s", kind, payload.get("session_id"), exc_info=True)


class _MemoryTx(SessionTx):
    def __init__(self, store: InMemorySessionStore, state: SessionState, lock: threading.Lock) -> None:
        self.state, self.staged, self.committed = state, {}, False  # (SessionTx's, set here: one call fewer)
        self._store = store
        self._lock: threading.Lock | None = lock

    def commit(self, change: SessionCommit) -> None:
        if self.committed:
            raise RuntimeError("a session transaction commits once")
        evicted = self.state.apply(change, max_flow_entries=self._store.max_flow_entries)
        self.committed = True
        if evicted:
            self._store._flow_truncated(self.state, evicted)

    def close(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()


class InMemorySessionStore:
    """Process-local session state (the default): one process, or tests.

    Args:
        idle_ttl: seconds without a step after which a session is evicted (``None``: never).
        max_sessions: sessions held at once; past it the least recently used one is evicted.
        max_flow_entries: cap of one session's flow index (see :class:`~fiveplane.FlowIndex`).
        on_expired: ``block`` (default) refuses the steps of an evicted session; ``restart`` starts
            it again with an empty history.
        record: receives ``session.evicted`` / ``session.flow_truncated`` events (the ledger's
            ``record``; a Governor wires its evidence sink's when none is given).
    """

    blocking = False

    def __init__(
        self,
        *,
        idle_ttl: float | None = DEFAULT_IDLE_TTL,
        max_sessions: int = 100_000,
        max_flow_entries: int = DEFAULT_MAX_FLOW_ENTRIES,
        on_expired: OnExpired = "block",
        record: Recorder | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if max_sessions < 1 or max_flow_entries < 1 or (idle_ttl is not None and idle_ttl <= 0):
            raise ValueError("max_sessions and max_flow_entries must be >= 1 and idle_ttl > 0 (or None)")
        if on_expired not in ("block", "restart"):
            raise ValueError(f"on_expired must be 'block' or 'restart', not {on_expired!r}")
        self.idle_ttl = idle_ttl  # (a property: also sets the timedeltas the hot path compares)
        self.max_sessions = max_sessions
        self.max_flow_entries = max_flow_entries
        self.on_expired = on_expired
        self.record = record
        self.clock = clock
        self._states: OrderedDict[str, SessionState] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._expired: OrderedDict[str, str] = OrderedDict()
        self._guard = threading.Lock()
        self._last_sweep = clock()

    @property
    def idle_ttl(self) -> float | None:
        return self._idle_ttl

    @idle_ttl.setter
    def idle_ttl(self, value: float | None) -> None:
        self._idle_ttl = value
        self._ttl = timedelta(seconds=value) if value is not None else None
        self._sweep_every = timedelta(seconds=min(60.0, value)) if value is not None else None

    # ---- the engine's side ----------------------------------------------------------------------

    def _enter(self, session_id: str) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(session_id)
            if lock is None:
                lock = self._locks[session_id] = threading.Lock()
            return lock

    def _state_locked(self, session_id: str) -> SessionState:
        state = self._states.get(session_id)
        if state is None:
            state = SessionState(session_id)
            reason = self._expired.get(session_id)
            if reason is not None and self.on_expired == "block":
                state.expired = reason
            self._states[session_id] = state
            self._evict_over(session_id)
        else:
            self._states.move_to_end(session_id)
        return state

    def _checked(self, state: SessionState) -> SessionState:
        """Evict the state first if it idled past the TTL (the lock is held)."""
        ttl = self._ttl
        if ttl is None:
            return state
        now = self.clock()
        if state.last_seen is not None and state.expired is None and now - state.last_seen > ttl:
            reason = f"idle for more than {self.idle_ttl:g} s (last step at {state.last_seen.isoformat()})"
            with self._guard:
                self._evict_locked(state.session_id, reason, keep_lock=True)
                state = self._state_locked(state.session_id)
        if self._sweep_every is not None and now - self._last_sweep > self._sweep_every:
            self._last_sweep = now
            self.evict_idle()
        return state

    def begin(self, session_id: str) -> SessionTx:
        # a dict read is atomic: the guard is only needed to create the lock
        lock = self._locks.get(session_id) or self._enter(session_id)
        lock.acquire()
        return self._opened(session_id, lock)

    async def abegin(self, session_id: str) -> SessionTx:
        lock = self._enter(session_id)
        await acquire_lock(lock)
        return self._opened(session_id, lock)

    def _opened(self, session_id: str, lock: threading.Lock) -> SessionTx:
        """The transaction of a session whose lock is held (released again if this fails)."""
        try:
            with self._guard:
                state = self._state_locked(session_id)
            return _MemoryTx(self, self._checked(state), lock)
        except BaseException:
            lock.release()
            raise

    # ---- reading and housekeeping -----------------------------------------------------------------

    def get(self, session_id: str) -> SessionState:
        """The live state of a session (created empty if unknown)."""
        with self._guard:
            return self._state_locked(session_id)

    def sessions(self) -> list[str]:
        with self._guard:
            return list(self._states)

    def end(self, session_id: str) -> None:
        """Forget a session (the task ended); a later step with its id starts a new session."""
        with self._guard:
            self._states.pop(session_id, None)
            self._expired.pop(session_id, None)
            lock = self._locks.get(session_id)
            if lock is not None and not lock.locked():
                del self._locks[session_id]

    def evict_idle(self) -> list[str]:
        """Evict every session idle past the TTL; returns their ids."""
        if self.idle_ttl is None:
            return []
        limit = self.clock() - timedelta(seconds=self.idle_ttl)
        gone = []
        with self._guard:
            for sid, state in list(self._states.items()):
                lock = self._locks.get(sid)
                if state.last_seen is not None and state.last_seen < limit and not (lock is not None and lock.locked()):
                    self._evict_locked(sid, f"idle for more than {self.idle_ttl:g} s")
                    gone.append(sid)
        return gone

    def _evict_over(self, keep: str) -> None:
        while len(self._states) > self.max_sessions:
            victim = next((sid for sid in self._states if sid != keep and not self._is_locked(sid)), None)
            if victim is None:
                return
            self._evict_locked(victim, f"the store holds at most {self.max_sessions} sessions (least recently used)")

    def _is_locked(self, session_id: str) -> bool:
        lock = self._locks.get(session_id)
        return lock is not None and lock.locked()

    def _evict_locked(self, session_id: str, reason: str, *, keep_lock: bool = False) -> None:
        state = self._states.pop(session_id, None)
        if not keep_lock:
            self._locks.pop(session_id, None)
        self._expired[session_id] = reason
        while len(self._expired) > self.max_sessions:
            self._expired.popitem(last=False)
        steps = len(state.steps) if state else 0
        flow = state.flow.entries if state else 0
        emit(self.record, "session.evicted", {"session_id": session_id, "reason": reason, "steps": steps, "flow_entries": flow})

    def _flow_truncated(self, state: SessionState, evicted: int) -> None:
        flow_truncated(self.record, state, evicted, self.max_flow_entries)


def flow_truncated(record: Recorder | None, state: SessionState, evicted: int, cap: int) -> None:
    """Record that a session's flow index hit its cap and dropped its oldest content."""
    emit(
        record,
        "session.flow_truncated",
        {
            "session_id": state.session_id,
            "evicted_contents": evicted,
            "flow_entries": state.flow.entries,
            "max_flow_entries": cap,
        },
    )
