"""Session state in the database: the same verdicts whichever worker sees the next step.

:class:`SqlSessionStore` keeps what decides a verdict — the steps of each session, its counts and
labels, the information-flow index and the planes' per-session state — in SQLite (one machine) or
PostgreSQL (many), with SQLAlchemy Core.

Decisions of one session are serialized across processes for the length of one decision: on
PostgreSQL by a transaction-scoped advisory lock (``pg_advisory_xact_lock``) in the transaction that
reads the state and commits the step, on SQLite by an exclusive ``flock`` on a lock file beside the
database (released by the kernel if the process dies). Within the lock the state is read — from
this process's cache when the session's ``version`` has not moved, else by loading only the steps
and flow content added since — and the decision's one change is written in one transaction, so a
killed worker loses no committed step and leaves no half-written one.

Housekeeping: sessions idle for ``idle_ttl`` seconds are evicted (their steps and flow content
deleted, the row kept as a tombstone so the next step is refused, or deleted with
``on_expired="restart"``); each session's flow index is capped at ``max_flow_entries`` (the oldest
content goes and the index is marked truncated, which then treats unknown values as untrusted).
Both are recorded as evidence (``session.evicted``, ``session.flow_truncated``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from ._policy._load import Policy

from ._actions import ActionClass, MediationPoint
from ._clock import utcnow
from ._db import UTCDateTime, create_tables, make_engine
from ._decisions import Verdict
from ._flow import FlowContent
from ._session import (
    DEFAULT_IDLE_TTL,
    DEFAULT_MAX_FLOW_ENTRIES,
    InMemorySessionStore,
    OnExpired,
    Recorder,
    SessionCommit,
    SessionState,
    SessionStore,
    SessionTx,
    Step,
    emit,
    flow_truncated,
)

__all__ = ["SESSIONS_ENV", "SqlSessionStore", "sessions_for", "sessions_from_url"]

SESSIONS_ENV = "FIVEPLANE_SESSIONS_URL"
_SHINGLE_BYTES = 8
_LOCK_BUCKETS = 1024

_meta = sa.MetaData()
_sessions = sa.Table(
    "fiveplane_sessions",
    _meta,
    sa.Column("session_id", sa.String(255), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("intent", sa.Text, nullable=True),
    sa.Column("purpose", sa.Text, nullable=True),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("counts", sa.Text, nullable=False),
    sa.Column("extra", sa.Text, nullable=False),
    sa.Column("steps", sa.Integer, nullable=False),
    sa.Column("flow_seq", sa.Integer, nullable=False),
    sa.Column("flow_entries", sa.Integer, nullable=False),
    sa.Column("flow_epoch", sa.Integer, nullable=False),
    sa.Column("flow_truncated", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen", UTCDateTime(), nullable=False),
    sa.Column("expired", sa.Text, nullable=True),
    sa.Index("ix_fiveplane_sessions_last_seen", "last_seen"),
)
_steps = sa.Table(
    "fiveplane_session_steps",
    _meta,
    sa.Column("session_id", sa.String(255), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("action_id", sa.String(64), nullable=False),
    sa.Column("point", sa.String(32), nullable=False),
    sa.Column("tool", sa.String(255), nullable=True),
    sa.Column("connector", sa.String(255), nullable=True),
    sa.Column("action_class", sa.String(16), nullable=True),
    sa.Column("verdict", sa.String(32), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("untrusted", sa.Boolean, nullable=False),
)
_flow = sa.Table(
    "fiveplane_session_flow",
    _meta,
    sa.Column("session_id", sa.String(255), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("action_id", sa.String(64), nullable=False),
    sa.Column("tool", sa.String(255), nullable=True),
    sa.Column("trusted", sa.Boolean, nullable=False),
    sa.Column("vals", sa.Text, nullable=False),
    sa.Column("shingles", sa.LargeBinary, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
)


_ROW_COLUMNS = (
    "session_id, version, intent, purpose, labels, counts, extra, steps, flow_seq, flow_entries, flow_epoch, "
    "flow_truncated, created_at, last_seen, expired"
)
_STEP_COLUMNS = "session_id, seq, action_id, point, tool, connector, action_class, verdict, at, untrusted"
_VALUE_KEYS = (
    "version",
    "intent",
    "purpose",
    "labels",
    "counts",
    "extra",
    "steps",
    "flow_seq",
    "flow_entries",
    "flow_epoch",
    "flow_truncated",
    "last_seen",
)


class _Sql:
    """The hot statements as driver SQL (no SQLAlchemy compilation per call), for one dialect."""

    def __init__(self, postgres: bool) -> None:
        self.pg = postgres

        def p(name: str) -> str:
            return f"%({name})s" if postgres else f":{name}"

        self.select_row = f"SELECT {_ROW_COLUMNS} FROM fiveplane_sessions WHERE session_id = {p('sid')}"
        self.select_steps = (
            "SELECT action_id, point, tool, connector, action_class, verdict, at, untrusted FROM fiveplane_session_steps "
            f"WHERE session_id = {p('sid')} AND seq > {p('after')} ORDER BY seq"
        )
        self.select_flow = (
            "SELECT seq, action_id, tool, trusted, vals, shingles FROM fiveplane_session_flow "
            f"WHERE session_id = {p('sid')} AND seq > {p('after')} ORDER BY seq"
        )
        sets = ", ".join(f"{k} = {p(k)}" for k in _VALUE_KEYS)
        self.update_row = (
            f"UPDATE fiveplane_sessions SET {sets}, expired = NULL WHERE session_id = {p('sid')} AND version = {p('old_version')}"
        )
        cols = ", ".join(_VALUE_KEYS)
        vals = ", ".join(p(k) for k in _VALUE_KEYS)
        self.insert_row = (
            f"INSERT INTO fiveplane_sessions (session_id, created_at, {cols}) VALUES ({p('sid')}, {p('created_at')}, {vals})"
        )
        step_vals = ", ".join(
            p(k) for k in ("sid", "seq", "action_id", "point", "tool", "connector", "action_class", "verdict", "at", "untrusted")
        )
        self.insert_step = f"INSERT INTO fiveplane_session_steps ({_STEP_COLUMNS}) VALUES ({step_vals})"
        # PostgreSQL: the row and the step in one round trip (the step only if the row matched)
        self.update_and_step = (
            f"WITH u AS ({self.update_row} RETURNING 1) INSERT INTO fiveplane_session_steps ({_STEP_COLUMNS}) "
            f"SELECT {step_vals} FROM u"
        )
        self.insert_and_step = (
            f"WITH u AS ({self.insert_row} RETURNING 1) INSERT INTO fiveplane_session_steps ({_STEP_COLUMNS}) "
            f"SELECT {step_vals} FROM u"
        )
        self.insert_flow = (
            "INSERT INTO fiveplane_session_flow (session_id, seq, action_id, tool, trusted, vals, shingles, size) VALUES ("
            + ", ".join(p(k) for k in ("sid", "seq", "action_id", "tool", "trusted", "vals", "shingles", "size"))
            + ")"
        )
        self.delete_flow = f"DELETE FROM fiveplane_session_flow WHERE session_id = {p('sid')} AND seq <= {p('upto')}"

    def ts(self, value: datetime) -> Any:
        naive = value.astimezone(UTC).replace(tzinfo=None)
        return naive if self.pg else naive.strftime("%Y-%m-%d %H:%M:%S.%f")

    def flag(self, value: bool) -> Any:
        return bool(value) if self.pg else int(bool(value))


def _read_ts(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class _Row:
    session_id: str
    version: int
    intent: str | None
    purpose: str | None
    labels: str
    counts: str
    extra: str
    steps: int
    flow_seq: int
    flow_entries: int
    flow_epoch: int
    flow_truncated: bool
    created_at: datetime
    last_seen: datetime
    expired: str | None

    @classmethod
    def of(cls, r: Any) -> _Row:
        return cls(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            r[9],
            r[10],
            bool(r[11]),
            _read_ts(r[12]),
            _read_ts(r[13]),
            r[14],
        )


def _lock_key(session_id: str) -> int:
    """A signed 64-bit advisory-lock key for a session id."""
    return int.from_bytes(hashlib.blake2b(session_id.encode(), digest_size=8, person=b"fp-sess").digest(), "big", signed=True)


@dataclass
class _Cached:
    state: SessionState
    flow_seqs: list[int] = field(default_factory=list)
    """The database seq of each content item of ``state.flow.contents`` (same order)."""
    flow_seq: int = 0
    flow_epoch: int = 0
    created_at: datetime | None = None
    """The row's creation time: a session deleted and started again is another incarnation."""


def _step(r: Any) -> Step:
    return Step(
        action_id=r[0],
        point=MediationPoint(r[1]),
        tool=r[2],
        connector=r[3],
        action_class=ActionClass(r[4]) if r[4] else None,
        verdict=Verdict(r[5]),
        timestamp=_read_ts(r[6]),
        untrusted=bool(r[7]),
    )


def _content(r: Any) -> FlowContent:
    """A flow row: seq, action_id, tool, trusted, vals, shingles."""
    blob: bytes = bytes(r[5])
    shingles = frozenset(blob[i : i + _SHINGLE_BYTES] for i in range(0, len(blob), _SHINGLE_BYTES))
    return FlowContent(r[1], r[2], bool(r[3]), frozenset(json.loads(r[4])), shingles)


class _SqlTx(SessionTx):
    blocking = True

    def __init__(self, store: SqlSessionStore, cached: _Cached, conn: Connection | None, release: Callable[[], None]) -> None:
        super().__init__(cached.state)
        self._store = store
        self._cached = cached
        self._conn = conn
        """PostgreSQL: the connection whose open transaction holds the advisory lock."""
        self._release: Callable[[], None] | None = release
        self._new = cached.state.session_id not in store._known

    def commit(self, change: SessionCommit) -> None:
        if self.committed:
            raise RuntimeError("a session transaction commits once")
        self._store._commit(self, change)
        self.committed = True

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


class SqlSessionStore:
    """Session state in SQLite or PostgreSQL, shared by every process that opens the same URL.

    Args:
        url: a SQLAlchemy URL or engine (``sqlite:///.fiveplane/sessions.db``,
            ``postgresql+psycopg://...``); default ``$FIVEPLANE_SESSIONS_URL`` or the default
            database.
        idle_ttl: seconds without a step after which a session is evicted (``None``: never).
        max_flow_entries: cap of one session's flow index (values + shingles).
        on_expired: ``block`` (default) refuses the steps of an evicted session; ``restart``
            starts it again empty.
        cache_sessions: session states this process keeps to skip reloading (LRU).
        gc_interval: seconds between sweeps for idle sessions (run by the process that closes a
            decision past it; ``None``: only :meth:`evict_idle` / ``fiveplane sessions gc``).
        record: receives ``session.evicted`` / ``session.flow_truncated`` events.
    """

    blocking = True

    def __init__(
        self,
        url: str | Engine | None = None,
        *,
        idle_ttl: float | None = DEFAULT_IDLE_TTL,
        max_flow_entries: int = DEFAULT_MAX_FLOW_ENTRIES,
        on_expired: OnExpired = "block",
        cache_sessions: int = 1024,
        gc_interval: float | None = 300.0,
        record: Recorder | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if max_flow_entries < 1 or cache_sessions < 0 or (idle_ttl is not None and idle_ttl <= 0):
            raise ValueError("max_flow_entries must be >= 1, cache_sessions >= 0 and idle_ttl > 0 (or None)")
        if on_expired not in ("block", "restart"):
            raise ValueError(f"on_expired must be 'block' or 'restart', not {on_expired!r}")
        if url is None:
            url = os.environ.get(SESSIONS_ENV) or None
        self.engine = make_engine(url, immediate=True, pre_ping=False)
        self.dialect = self.engine.dialect.name
        self._sql = _Sql(self.dialect == "postgresql")
        self._reader = self.engine
        """SQLite: reads need no write lock (WAL), so they use a second engine without BEGIN IMMEDIATE."""
        self.idle_ttl = idle_ttl
        self.max_flow_entries = max_flow_entries
        self.on_expired = on_expired
        self.cache_sessions = cache_sessions
        self.gc_interval = gc_interval
        self.record = record
        self.clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._cache_guard = threading.Lock()
        self._known: set[str] = set()
        """Sessions whose row this process saw or wrote (so a commit knows to UPDATE, not INSERT)."""
        self._thread_locks: dict[str, threading.Lock] = {}
        self._memory = False
        self._lock_dir: Path | None = None
        self._last_gc = time.monotonic()
        if self.dialect == "sqlite":
            database = make_url(str(self.engine.url)).database
            self._memory = database in (None, "", ":memory:") or "mode=memory" in str(self.engine.url)
            if not self._memory:
                assert database is not None
                self._lock_dir = Path(database).expanduser().resolve().with_name(Path(database).name + ".session-locks")
                self._lock_dir.mkdir(parents=True, exist_ok=True)

                @event.listens_for(self.engine, "connect")
                def _normal_sync(dbapi_conn: Any, _record: Any) -> None:
                    # WAL + NORMAL: a committed step survives a killed process (only power loss can
                    # take the last commits); the ledger keeps FULL for the evidence itself.
                    cur = dbapi_conn.cursor()
                    try:
                        cur.execute("PRAGMA synchronous=NORMAL")
                    finally:
                        cur.close()

                self._reader = make_engine(str(self.engine.url))
        elif self.dialect != "postgresql":
            raise ValueError(f"SqlSessionStore supports SQLite and PostgreSQL, not {self.dialect}")
        self._serial = threading.Lock() if self._memory else None
        with self._serialized():
            create_tables(_meta, self.engine)

    # ---- locking ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _serialized(self) -> Iterator[None]:
        """An in-memory SQLite database has one connection: one user at a time."""
        if self._serial is None:
            yield
        else:
            with self._serial:
                yield

    def _thread_lock(self, session_id: str) -> threading.Lock:
        with self._cache_guard:
            lock = self._thread_locks.get(session_id)
            if lock is None:
                lock = self._thread_locks[session_id] = threading.Lock()
            return lock

    def _acquire_file_lock(self, session_id: str) -> Callable[[], None]:
        assert self._lock_dir is not None
        bucket = _lock_key(session_id) % _LOCK_BUCKETS
        fd = os.open(self._lock_dir / f"{bucket:04d}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise

        def release() -> None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

        return release

    # ---- the engine's side ------------------------------------------------------------------------

    def begin(self, session_id: str) -> _SqlTx:
        """Take the session's lock (across processes) and read its state."""
        if self.dialect == "postgresql":
            conn = self.engine.connect()
            try:
                conn.begin()
                # An existing session: its row lock serializes the decision, and under READ COMMITTED
                # FOR UPDATE returns the row as the last holder committed it (one round trip). A new
                # session has no row to lock yet: an advisory lock on its id stands in, then re-read.
                raw = conn.exec_driver_sql(self._sql.select_row + " FOR UPDATE", {"sid": session_id}).first()
                if raw is None:
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(k)s)", {"k": _lock_key(session_id)})
                    raw = conn.exec_driver_sql(self._sql.select_row + " FOR UPDATE", {"sid": session_id}).first()
                cached = self._load(conn, session_id, raw)
            except BaseException:
                conn.close()
                raise

            def release_pg() -> None:
                try:
                    conn.commit()  # ends the transaction: the advisory lock goes with it
                finally:
                    conn.close()
                    self._maybe_gc()

            return _SqlTx(self, cached, conn, release_pg)
        if self._memory:
            lock = self._thread_lock(session_id)
            lock.acquire()
            release_file: Callable[[], None] = lock.release
        else:
            release_file = self._acquire_file_lock(session_id)
        try:
            with self._serialized(), self._reader.connect() as conn:
                cached = self._load(conn, session_id)
                if conn.in_transaction():
                    conn.commit()  # an eviction on load wrote
        except BaseException:
            release_file()
            raise

        def release() -> None:
            try:
                release_file()
            finally:
                self._maybe_gc()

        return _SqlTx(self, cached, None, release)

    async def abegin(self, session_id: str) -> _SqlTx:
        """Async twin of :meth:`begin` (the lock and the reads run in a worker thread)."""
        fut = asyncio.get_running_loop().run_in_executor(None, self.begin, session_id)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(lambda f: f.result().close() if not f.cancelled() and f.exception() is None else None)
            raise

    def _load(self, conn: Connection, session_id: str, raw: Any = False) -> _Cached:
        if raw is False:
            raw = conn.exec_driver_sql(self._sql.select_row, {"sid": session_id}).first()
        with self._cache_guard:
            cached = self._cache.get(session_id)
        if raw is None:
            self._known.discard(session_id)
            fresh = _Cached(SessionState(session_id))
            self._remember(fresh)
            return fresh
        row = _Row.of(raw)
        self._known.add(session_id)
        now = self.clock()
        if row.expired is None and self.idle_ttl is not None and now - row.last_seen > timedelta(seconds=self.idle_ttl):
            reason = f"idle for more than {self.idle_ttl:g} s (last step at {row.last_seen.isoformat()})"
            self._evict(conn, session_id, reason, row)
            return self._load(conn, session_id)
        if row.expired is not None:
            return _Cached(SessionState(session_id, expired=row.expired, version=row.version))
        if (
            cached is None
            or cached.created_at != row.created_at
            or cached.flow_epoch != row.flow_epoch
            or cached.state.version > row.version
        ):
            cached = _Cached(SessionState(session_id), created_at=row.created_at)
        state = cached.state
        if state.version != row.version:
            args = {"sid": session_id, "after": len(state.steps)}
            state.steps.extend(_step(r) for r in conn.exec_driver_sql(self._sql.select_steps, args))
            if row.flow_seq > cached.flow_seq:
                args = {"sid": session_id, "after": cached.flow_seq}
                for r in conn.exec_driver_sql(self._sql.select_flow, args):
                    state.flow.apply(_content(r))
                    cached.flow_seqs.append(int(r[0]))
            cached.flow_seq = row.flow_seq
            cached.flow_epoch = row.flow_epoch
            state.flow.truncated = row.flow_truncated
            state.intent, state.purpose = row.intent, row.purpose
            state.labels = set(json.loads(row.labels))
            state.counts = Counter(json.loads(row.counts))
            state.extra = json.loads(row.extra)
            state.version = row.version
            state.last_seen = row.last_seen
        self._remember(cached)
        return cached

    def _remember(self, cached: _Cached) -> None:
        if not self.cache_sessions:
            return
        with self._cache_guard:
            sid = cached.state.session_id
            self._cache[sid] = cached
            self._cache.move_to_end(sid)
            while len(self._cache) > self.cache_sessions:
                old, _ = self._cache.popitem(last=False)
                lock = self._thread_locks.get(old)
                if lock is not None and not lock.locked():
                    del self._thread_locks[old]

    def _forget(self, session_id: str) -> None:
        with self._cache_guard:
            self._cache.pop(session_id, None)

    def _commit(self, tx: _SqlTx, change: SessionCommit) -> None:
        cached, state = tx._cached, tx.state
        if state.expired is not None:
            raise RuntimeError(f"session {state.session_id!r} has expired: {state.expired}")
        old_version = state.version
        new_step_seq = len(state.steps) + 1
        flow_seq = cached.flow_seq + 1 if change.flow is not None else cached.flow_seq
        # Apply in memory first (to learn what the flow cap evicts); on any failure below the
        # cached state is dropped, so the next decision reloads it from the database.
        evicted = state.apply(change, max_flow_entries=self.max_flow_entries)
        dropped_seqs: list[int] = []
        if change.flow is not None:
            cached.flow_seqs.append(flow_seq)
        if evicted:
            dropped_seqs, cached.flow_seqs = cached.flow_seqs[:evicted], cached.flow_seqs[evicted:]
        epoch = cached.flow_epoch + (1 if evicted else 0)
        sql = self._sql
        s = change.step
        values: dict[str, Any] = {
            "sid": state.session_id,
            "version": state.version,
            "intent": state.intent,
            "purpose": state.purpose,
            "labels": json.dumps(sorted(state.labels)),
            "counts": json.dumps(dict(state.counts), sort_keys=True),
            "extra": json.dumps(state.extra, sort_keys=True, default=str),
            "steps": len(state.steps),
            "flow_seq": flow_seq,
            "flow_entries": state.flow.entries,
            "flow_epoch": epoch,
            "flow_truncated": sql.flag(state.flow.truncated),
            "last_seen": sql.ts(s.timestamp),
            "old_version": old_version,
            "created_at": sql.ts(s.timestamp),
            "seq": new_step_seq,
            "action_id": s.action_id,
            "point": s.point.value,
            "tool": s.tool,
            "connector": s.connector,
            "action_class": s.action_class.value if s.action_class else None,
            "verdict": s.verdict.value,
            "at": sql.ts(s.timestamp),
            "untrusted": sql.flag(s.untrusted),
        }
        try:
            if tx._conn is not None:
                self._write(tx._conn, tx, change, values, flow_seq, dropped_seqs)
            else:
                with self._serialized(), self.engine.begin() as conn:
                    self._write(conn, tx, change, values, flow_seq, dropped_seqs)
        except BaseException:
            self._forget(state.session_id)
            raise
        cached.flow_seq = flow_seq
        cached.flow_epoch = epoch
        if tx._new:
            cached.created_at = change.step.timestamp
        self._known.add(state.session_id)
        if evicted:
            flow_truncated(self.record, state, evicted, self.max_flow_entries)

    def _write(
        self, conn: Connection, tx: _SqlTx, change: SessionCommit, values: dict[str, Any], flow_seq: int, dropped: list[int]
    ) -> None:
        sql, sid = self._sql, tx.state.session_id
        if sql.pg:  # the row and the step in one round trip
            done = conn.exec_driver_sql(sql.insert_and_step if tx._new else sql.update_and_step, values).rowcount
        elif tx._new:
            conn.exec_driver_sql(sql.insert_row, values)
            done = conn.exec_driver_sql(sql.insert_step, values).rowcount
        else:
            done = conn.exec_driver_sql(sql.update_row, values).rowcount
            if done == 1:
                conn.exec_driver_sql(sql.insert_step, values)
        if done != 1:
            raise RuntimeError(f"session {sid!r} changed under its lock (version {values['old_version']}); not committed")
        if change.flow is not None:
            fc = change.flow
            conn.exec_driver_sql(
                sql.insert_flow,
                {
                    "sid": sid,
                    "seq": flow_seq,
                    "action_id": fc.action_id,
                    "tool": fc.tool,
                    "trusted": sql.flag(fc.trusted),
                    "vals": json.dumps(sorted(fc.values)),
                    "shingles": b"".join(sorted(fc.shingles)),
                    "size": fc.size,
                },
            )
        if dropped:
            conn.exec_driver_sql(sql.delete_flow, {"sid": sid, "upto": max(dropped)})

    # ---- eviction ---------------------------------------------------------------------------------

    def _evict(self, conn: Connection, session_id: str, reason: str, row: _Row) -> None:
        conn.execute(sa.delete(_steps).where(_steps.c.session_id == session_id))
        conn.execute(sa.delete(_flow).where(_flow.c.session_id == session_id))
        if self.on_expired == "restart":
            conn.execute(sa.delete(_sessions).where(_sessions.c.session_id == session_id))
            self._known.discard(session_id)
        else:
            conn.execute(
                sa.update(_sessions)
                .where(_sessions.c.session_id == session_id)
                .values(
                    expired=reason, version=_sessions.c.version + 1, steps=0, flow_entries=0, labels="[]", counts="{}", extra="{}"
                )
            )
        self._forget(session_id)
        emit(
            self.record,
            "session.evicted",
            {"session_id": session_id, "reason": reason, "steps": row.steps, "flow_entries": row.flow_entries},
        )

    def evict_idle(self, limit: int = 500) -> list[str]:
        """Evict sessions idle past the TTL (at most ``limit`` per call); returns their ids."""
        if self.idle_ttl is None:
            return []
        cutoff = self.clock() - timedelta(seconds=self.idle_ttl)
        with self._serialized(), self.engine.connect() as conn:
            ids = [
                r.session_id
                for r in conn.execute(
                    sa.select(_sessions.c.session_id)
                    .where(_sessions.c.last_seen < cutoff, _sessions.c.expired.is_(None))
                    .limit(limit)
                )
            ]
        gone = []
        for sid in ids:
            tx = self.begin(sid)  # takes the lock, and evicts it as it loads if it is still idle
            try:
                if tx.state.expired is not None or self.on_expired == "restart":
                    gone.append(sid)
            finally:
                tx.close()
        return gone

    def _maybe_gc(self) -> None:
        if self.gc_interval is None or self.idle_ttl is None or time.monotonic() - self._last_gc < self.gc_interval:
            return
        self._last_gc = time.monotonic()
        try:
            self.evict_idle(limit=100)
        except Exception:  # noqa: BLE001 - housekeeping; the next sweep tries again
            pass

    # ---- reading ----------------------------------------------------------------------------------

    def get(self, session_id: str) -> SessionState:
        """A fresh snapshot of a session, for inspection (takes the session's lock for the read)."""
        tx = self.begin(session_id)
        try:
            return tx.state
        finally:
            tx.close()

    def sessions(self, *, limit: int = 1000, include_expired: bool = True) -> list[dict[str, Any]]:
        """Summaries of stored sessions, most recently seen first."""
        q = sa.select(
            _sessions.c.session_id,
            _sessions.c.steps,
            _sessions.c.flow_entries,
            _sessions.c.flow_truncated,
            _sessions.c.labels,
            _sessions.c.created_at,
            _sessions.c.last_seen,
            _sessions.c.expired,
        ).order_by(_sessions.c.last_seen.desc())
        if not include_expired:
            q = q.where(_sessions.c.expired.is_(None))
        with self._serialized(), self.engine.connect() as conn:
            rows = conn.execute(q.limit(limit)).all()
        return [
            {
                "session_id": r.session_id,
                "steps": r.steps,
                "flow_entries": r.flow_entries,
                "flow_truncated": bool(r.flow_truncated),
                "labels": json.loads(r.labels),
                "created_at": r.created_at.isoformat(),
                "last_seen": r.last_seen.isoformat(),
                "expired": r.expired,
            }
            for r in rows
        ]

    def end(self, session_id: str) -> None:
        """Delete a session (the task ended); a later step with its id starts a new session."""
        tx = self.begin(session_id)
        try:
            if tx._conn is not None:
                self._delete(tx._conn, session_id)
            else:
                with self._serialized(), self.engine.begin() as conn:
                    self._delete(conn, session_id)
            self._forget(session_id)
            self._known.discard(session_id)
        finally:
            tx.close()

    @staticmethod
    def _delete(conn: Connection, session_id: str) -> None:
        for table in (_steps, _flow, _sessions):
            conn.execute(sa.delete(table).where(table.c.session_id == session_id))

    def close(self) -> None:
        self.engine.dispose()


def sessions_from_url(url: str | None, **options: Any) -> SessionStore:
    """The store for a sessions URL: ``None`` / ``memory`` for process-local state, else :class:`SqlSessionStore`."""
    if url in (None, "", "memory", "memory:"):
        return InMemorySessionStore(**{k: v for k, v in options.items() if k in _MEMORY_OPTIONS})
    return SqlSessionStore(url, **options)


_MEMORY_OPTIONS = {"idle_ttl", "max_flow_entries", "on_expired", "record", "clock", "max_sessions"}


def sessions_for(policy: Policy) -> SessionStore:
    """The session store a pack asks for: ``$FIVEPLANE_SESSIONS_URL``, else its ``sessions:`` section, else memory."""
    spec = policy.sessions
    url = os.environ.get(SESSIONS_ENV) or (spec.url if spec is not None else None)
    if spec is None:
        return sessions_from_url(url)
    return sessions_from_url(url, idle_ttl=spec.idle_ttl, max_flow_entries=spec.max_flow_entries, on_expired=spec.on_expired)
