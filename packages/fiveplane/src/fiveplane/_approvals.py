"""Approvals bound to the exact action, with separation of duties, expiry and single use.

When a decision is ``require_approval``, the Governor files an :class:`ApprovalRequest` holding the
action (as it would be stored: redacted), its digest, the requester, the approver role the rule names,
and an expiry. A person approves or denies it (CLI, Python API, an adapter's resume payload). The
next time the *same* action (same digest: tool, arguments, principal chain, session, intent) is
decided, an approved request is consumed atomically and the action proceeds — once. Anything else:

- an edited action has another digest: it is a new action, decided again, never auto-approved;
- a denied action is blocked for the rest of its session, by any route (re-proposal, a jump back to
  the tools node, another middleware) because every route goes through ``decide``;
- an expired request neither approves nor blocks: the action asks again;
- the approver must hold the role and, when the rule says so, must not be the requester.

State lives in the database (SQLite or PostgreSQL), so several processes share it; every change is
handed to a recorder (the evidence ledger).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Column, Engine, Index, MetaData, String, Table, Text, and_, func, insert, select, update

from ._actions import Action, Principal, PrincipalKind
from ._clock import utcnow
from ._db import UTCDateTime, create_tables, make_engine

__all__ = ["ApprovalError", "ApprovalRequest", "ApprovalStatus", "ApprovalStore", "approver"]

Recorder = Callable[[str, dict[str, Any]], None]
log = logging.getLogger("fiveplane.approvals")
CHANNEL = "fiveplane_approvals"
"""The PostgreSQL LISTEN/NOTIFY channel on which a decided request's id is announced."""


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    CONSUMED = "consumed"
    """Approved and used by the one execution it allowed."""


class ApprovalError(Exception):
    """An approval could not be given or refused (wrong role, separation of duties, expired, not pending)."""


class ApprovalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    digest: str
    session_id: str
    action_id: str
    tool: str | None
    action: dict[str, Any]
    """The action as stored (after redaction)."""
    requester: str
    """The human user of the chain (or the acting agent when there is none)."""
    role: str
    separation_of_duties: bool
    rule_id: str | None
    explanation: str
    status: ApprovalStatus
    created_at: datetime
    expires_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) >= self.expires_at


_meta = MetaData()
_table = Table(
    "fiveplane_approvals",
    _meta,
    Column("id", String(64), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("session_id", String(255), nullable=False),
    Column("action_id", String(64), nullable=False),
    Column("tool", String(255), nullable=True),
    Column("action", Text, nullable=False),
    Column("requester", String(255), nullable=False),
    Column("role", String(255), nullable=False),
    Column("separation_of_duties", String(5), nullable=False),
    Column("rule_id", String(255), nullable=True),
    Column("explanation", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("decided_by", String(255), nullable=True),
    Column("decided_at", UTCDateTime(), nullable=True),
    Column("reason", Text, nullable=True),
    Index("ix_fiveplane_approvals_digest", "digest", "session_id"),
)


def _row(r: Any) -> ApprovalRequest:
    return ApprovalRequest(
        id=r.id,
        digest=r.digest,
        session_id=r.session_id,
        action_id=r.action_id,
        tool=r.tool,
        action=json.loads(r.action),
        requester=r.requester,
        role=r.role,
        separation_of_duties=r.separation_of_duties == "true",
        rule_id=r.rule_id,
        explanation=r.explanation,
        status=ApprovalStatus(r.status),
        created_at=r.created_at,
        expires_at=r.expires_at,
        decided_by=r.decided_by,
        decided_at=r.decided_at,
        reason=r.reason,
    )


class ApprovalStore:
    """Approval requests in the database. ``record(kind, payload)`` receives every change."""

    def __init__(
        self,
        url: str | Engine | None = None,
        *,
        record: Recorder | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = make_engine(url)
        self.record = record
        self.clock = clock
        self._on_filed: list[Callable[[ApprovalRequest], None]] = []
        self.redact_reason: Callable[[str, ApprovalRequest], str] | None = None
        """Redacts an approver's reason before it is stored or recorded (a Governor wires its data plane)."""
        create_tables(_meta, self.engine)

    def _emit(self, kind: str, req: ApprovalRequest) -> None:
        if self.record is not None:
            self.record(
                kind,
                {
                    "approval_id": req.id,
                    "action_id": req.action_id,
                    "digest": req.digest,
                    "session_id": req.session_id,
                    "tool": req.tool,
                    "requester": req.requester,
                    "role": req.role,
                    "status": req.status.value,
                    "decided_by": req.decided_by,
                    "reason": req.reason,
                    "expires_at": req.expires_at.isoformat(),
                },
            )

    # ---- queries ------------------------------------------------------------------------------

    def get(self, request_id: str) -> ApprovalRequest:
        with self.engine.connect() as conn:
            r = conn.execute(select(_table).where(_table.c.id == request_id)).first()
        if r is None:
            raise ApprovalError(f"no approval request {request_id!r}")
        return _row(r)

    def requests(
        self, *, status: ApprovalStatus | None = None, session_id: str | None = None, include_expired: bool = False
    ) -> list[ApprovalRequest]:
        q = select(_table).order_by(_table.c.created_at)
        if status is not None:
            q = q.where(_table.c.status == status.value)
        if session_id is not None:
            q = q.where(_table.c.session_id == session_id)
        with self.engine.connect() as conn:
            rows = [_row(r) for r in conn.execute(q)]
        now = self.clock()
        return [r for r in rows if include_expired or r.status is not ApprovalStatus.PENDING or not r.expired(now)]

    def _by_digest(self, digest: str, session_id: str) -> list[ApprovalRequest]:
        with self.engine.connect() as conn:
            q = (
                select(_table)
                .where(and_(_table.c.digest == digest, _table.c.session_id == session_id))
                .order_by(_table.c.created_at)
            )
            return [_row(r) for r in conn.execute(q)]

    # ---- the engine's side ----------------------------------------------------------------------

    def denied(self, action: Action) -> ApprovalRequest | None:
        """A denial of this exact action in its session, if any (denials never expire)."""
        for req in self._by_digest(action.digest(), action.session_id):
            if req.status is ApprovalStatus.DENIED:
                return req
        return None

    def approved(self, action: Action) -> ApprovalRequest | None:
        """An approved, unexpired request for this exact action, if any (read only: see :meth:`consume`)."""
        now = self.clock()
        for req in self._by_digest(action.digest(), action.session_id):
            if req.status is ApprovalStatus.APPROVED and not req.expired(now):
                return req
        return None

    def consume(self, req: ApprovalRequest) -> ApprovalRequest | None:
        """Atomically use an approved request (single use): ``None`` when it was used or changed meanwhile."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(_table)
                .where(and_(_table.c.id == req.id, _table.c.status == ApprovalStatus.APPROVED.value))
                .values(status=ApprovalStatus.CONSUMED.value)
            ).rowcount
        if done != 1:
            return None
        used = req.model_copy(update={"status": ApprovalStatus.CONSUMED})
        self._emit("approval.consumed", used)
        return used

    def unconsume(self, req: ApprovalRequest) -> None:
        """Give back a consumption whose action did not run after all (its decision was vetoed)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(_table)
                .where(and_(_table.c.id == req.id, _table.c.status == ApprovalStatus.CONSUMED.value))
                .values(status=ApprovalStatus.APPROVED.value)
            )
        self._emit("approval.unconsumed", req)

    def prepare(
        self,
        action: Action,
        stored_action: Action,
        *,
        role: str,
        separation_of_duties: bool,
        expires_in: int,
        rule_id: str | None,
        explanation: str,
    ) -> tuple[ApprovalRequest, bool]:
        """The request for this exact action: the pending, unexpired one (``False``: already filed),
        or a new one with its id (``True``: to :meth:`file` once the decision stands)."""
        now = self.clock()
        for req in self._by_digest(action.digest(), action.session_id):
            if req.status is ApprovalStatus.PENDING and not req.expired(now) and req.role == role:
                return req, False
        user = action.user
        agent = action.agent
        requester = user.id if user else (agent.id if agent else "unknown")
        req = ApprovalRequest(
            id="apr-" + uuid.uuid4().hex[:20],
            digest=action.digest(),
            session_id=action.session_id,
            action_id=action.action_id,
            tool=action.tool,
            action=stored_action.to_json(),
            requester=requester,
            role=role,
            separation_of_duties=separation_of_duties,
            rule_id=rule_id,
            explanation=explanation,
            status=ApprovalStatus.PENDING,
            created_at=now,
            expires_at=now + timedelta(seconds=expires_in),
        )
        return req, True

    def file(self, req: ApprovalRequest) -> ApprovalRequest:
        """Store a request :meth:`prepare` made (recorded first: a request the ledger cannot hold must not exist)."""
        self._emit("approval.requested", req)
        with self.engine.begin() as conn:
            conn.execute(
                insert(_table).values(
                    **{k: v for k, v in req.model_dump().items() if k not in ("action", "separation_of_duties", "status")},
                    action=json.dumps(req.action, sort_keys=True),
                    separation_of_duties="true" if req.separation_of_duties else "false",
                    status=req.status.value,
                )
            )
        for hook in self._on_filed:
            try:
                hook(req)
            except Exception:
                log.warning("approval notification hook failed for %s", req.id, exc_info=True)
        return req

    def request(
        self,
        action: Action,
        stored_action: Action,
        *,
        role: str,
        separation_of_duties: bool,
        expires_in: int,
        rule_id: str | None,
        explanation: str,
    ) -> ApprovalRequest:
        """File (or reuse the pending, unexpired) request for this exact action."""
        req, new = self.prepare(
            action,
            stored_action,
            role=role,
            separation_of_duties=separation_of_duties,
            expires_in=expires_in,
            rule_id=rule_id,
            explanation=explanation,
        )
        return self.file(req) if new else req

    def on_filed(self, hook: Callable[[ApprovalRequest], None]) -> None:
        """Call ``hook(request)`` after every new request is filed (notifications; errors are logged)."""
        self._on_filed.append(hook)

    # ---- the approver's side --------------------------------------------------------------------

    def _decide(self, request_id: str, approver: Principal, status: ApprovalStatus, reason: str | None) -> ApprovalRequest:
        req = self.get(request_id)
        now = self.clock()
        if req.status is not ApprovalStatus.PENDING:
            raise ApprovalError(f"request {request_id} is {req.status.value}, not pending")
        if req.expired(now):
            raise ApprovalError(f"request {request_id} expired at {req.expires_at.isoformat()}")
        if req.role not in approver.roles:
            raise ApprovalError(f"{approver.id} does not hold the role {req.role!r} this approval needs")
        if req.separation_of_duties and same_identity(approver.id, req.requester):
            raise ApprovalError(f"{approver.id} requested this action and cannot also approve or deny it (separation of duties)")
        if reason and self.redact_reason is not None:
            reason = self.redact_reason(reason, req)  # a person's free text is evidence like any other
        decided = req.model_copy(update={"status": status, "decided_by": approver.id, "decided_at": now, "reason": reason})
        self._emit(f"approval.{status.value}", decided)
        with self.engine.begin() as conn:
            done = conn.execute(
                update(_table)
                .where(and_(_table.c.id == request_id, _table.c.status == ApprovalStatus.PENDING.value))
                .values(status=status.value, decided_by=approver.id, decided_at=now, reason=reason)
            ).rowcount
            if done == 1 and self.engine.dialect.name == "postgresql":  # wakes waiters (sent at commit)
                conn.execute(select(func.pg_notify(CHANNEL, request_id)))
        if done != 1:
            raise ApprovalError(f"request {request_id} was decided by someone else meanwhile")
        return decided

    def approve(self, request_id: str, approver: Principal, reason: str | None = None) -> ApprovalRequest:
        return self._decide(request_id, approver, ApprovalStatus.APPROVED, reason)

    def deny(self, request_id: str, approver: Principal, reason: str | None = None) -> ApprovalRequest:
        return self._decide(request_id, approver, ApprovalStatus.DENIED, reason)

    def deny_expired(self, *, by: str = "fiveplane:expiry") -> list[ApprovalRequest]:
        """Deny every pending request nobody answered before its expiry (fail closed: the same action
        stays blocked in its session). Each is recorded (``approval.expired``) before it changes."""
        now = self.clock()
        done: list[ApprovalRequest] = []
        for req in self.requests(status=ApprovalStatus.PENDING, include_expired=True):
            if not req.expired(now):
                continue
            reason = f"nobody answered before it expired at {req.expires_at.isoformat()}"
            denied = req.model_copy(
                update={"status": ApprovalStatus.DENIED, "decided_by": by, "decided_at": now, "reason": reason}
            )
            self._emit("approval.expired", denied)
            with self.engine.begin() as conn:
                changed = conn.execute(
                    update(_table)
                    .where(and_(_table.c.id == req.id, _table.c.status == ApprovalStatus.PENDING.value))
                    .values(status=ApprovalStatus.DENIED.value, decided_by=by, decided_at=now, reason=reason)
                ).rowcount
                if changed == 1 and self.engine.dialect.name == "postgresql":
                    conn.execute(select(func.pg_notify(CHANNEL, req.id)))  # wakes a waiting call at once
            if changed == 1:
                done.append(denied)
        return done

    # ---- waiting ------------------------------------------------------------------------------

    def wait(self, request_id: str, timeout: float, poll: float = 0.2) -> ApprovalRequest:
        """Block until the request is decided (by any process) or ``timeout`` seconds pass; returns its latest state.

        On PostgreSQL the wait listens on the ``fiveplane_approvals`` channel (LISTEN/NOTIFY: woken as
        soon as another process decides); elsewhere it polls every ``poll`` seconds.
        """
        deadline = time.monotonic() + timeout
        if self.engine.dialect.name == "postgresql":
            return self._listen(request_id, deadline)
        while True:
            req = self.get(request_id)
            if req.status is not ApprovalStatus.PENDING or time.monotonic() >= deadline or req.expired(self.clock()):
                return req
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def _listen(self, request_id: str, deadline: float) -> ApprovalRequest:
        raw = self.engine.raw_connection()
        try:
            pg: Any = raw.driver_connection
            pg.autocommit = True
            pg.execute(f"LISTEN {CHANNEL}")
            try:
                while True:
                    req = self.get(request_id)  # after LISTEN: a decision made before it is seen here
                    left = deadline - time.monotonic()
                    if req.status is not ApprovalStatus.PENDING or left <= 0 or req.expired(self.clock()):
                        return req
                    left = min(left, max(0.05, (req.expires_at - self.clock()).total_seconds()))
                    for note in pg.notifies(timeout=left, stop_after=1):
                        if note.payload == request_id:
                            break
            finally:
                pg.execute(f"UNLISTEN {CHANNEL}")
        finally:
            raw.close()

    async def await_decision(self, request_id: str, timeout: float, poll: float = 0.2) -> ApprovalRequest:  # noqa: ASYNC109
        """Async twin of :meth:`wait`: waits off the event loop, in slices of at most a second so a
        cancelled coroutine leaves no thread waiting behind it."""
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            req = await asyncio.to_thread(self.wait, request_id, min(1.0, left), poll)
            if req.status is not ApprovalStatus.PENDING or left <= 1.0 or req.expired(self.clock()):
                return req


def identity_key(user_id: str) -> str:
    """How two user ids are compared for separation of duties: NFKC, case-folded, without
    surrounding white space or invisible characters (``REP-1``, ``rep-1 ``, ``ｒｅｐ-1`` are one person)."""
    text = unicodedata.normalize("NFKC", user_id)
    text = "".join(c for c in text if unicodedata.category(c) not in ("Cf", "Cc"))
    return unicodedata.normalize("NFKC", text.casefold()).strip()


def same_identity(a: str, b: str) -> bool:
    """Whether two user ids name the same person (see :func:`identity_key`)."""
    return identity_key(a) == identity_key(b)


def approver(user_id: str, roles: Sequence[str]) -> Principal:
    """The principal of a person approving or denying (a user with roles)."""
    return Principal(kind=PrincipalKind.USER, id=user_id, roles=tuple(roles))
