"""Rate limits and quotas kept in the database, shared by every process that uses it.

Sliding windows, exact: each counted action is a row (key, time). A check-and-take for one action
runs in one transaction that

1. serializes on the keys involved: ``BEGIN IMMEDIATE`` on SQLite (one writer at a time), a
   ``SELECT ... FOR UPDATE`` on one row per key on PostgreSQL (keys locked in sorted order, so two
   actions never deadlock);
2. drops the key's rows that fell out of its window, counts the rest, and
3. inserts one row per key only if *every* key is under its limit (all or nothing).

Rows taken for an action that ends up not running (blocked by another plane, waiting for
approval) are given back with :meth:`RateLimitStore.release`. SQLAlchemy Core with portable SQL;
the tables are this module's own (``fiveplane_endpoint_rate_keys`` / ``_events``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from .._db import create_tables, make_engine

__all__ = ["DEFAULT_RATE_LIMIT_URL", "RateExceeded", "RateLimitStore", "RateRequest", "RateResult"]

DEFAULT_RATE_LIMIT_URL = "sqlite:///.fiveplane/endpoint.db"
"""Used when neither ``database_url=`` nor ``FIVEPLANE_RATE_LIMIT_URL`` is set."""

_metadata = sa.MetaData()
_keys = sa.Table(
    "fiveplane_endpoint_rate_keys",
    _metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("label", sa.String(500), nullable=False),
)
_events = sa.Table(
    "fiveplane_endpoint_rate_events",
    _metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("at_us", sa.BigInteger(), nullable=False),
    sa.Index("ix_fiveplane_endpoint_rate_events_key_at", "key", "at_us"),
)


@dataclass(frozen=True)
class RateRequest:
    """Take one unit of ``key`` (at most ``limit`` per ``window_s`` seconds)."""

    rule_id: str
    key: str
    limit: int
    window_s: float


@dataclass(frozen=True)
class RateExceeded:
    rule_id: str
    key: str
    used: int
    limit: int
    window_s: float
    retry_after_s: float


@dataclass(frozen=True)
class RateResult:
    ok: bool
    reservations: tuple[int, ...] = ()
    exceeded: RateExceeded | None = None


class _Exceeded(Exception):
    """Raised inside the transaction so that it rolls back."""

    def __init__(self, result: RateResult) -> None:
        super().__init__("rate limit exceeded")
        self.result = result


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:48]


class RateLimitStore:
    """Database-backed sliding-window counters (SQLite by default, PostgreSQL for many machines)."""

    def __init__(self, url: str | None = None, *, engine: Engine | None = None) -> None:
        self.url = url or os.environ.get("FIVEPLANE_RATE_LIMIT_URL") or DEFAULT_RATE_LIMIT_URL
        self.engine = engine if engine is not None else make_engine(self.url, immediate=True)
        self._sqlite = self.engine.dialect.name == "sqlite"
        self._ready = False
        self._lock = threading.Lock()
        memory = self._sqlite and (self.engine.url.database or ":memory:") == ":memory:"
        self._serial = threading.Lock() if memory else None
        """One shared in-memory connection: serialize its transactions in this process."""

    def _setup(self) -> None:
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                create_tables(_metadata, self.engine)
                self._ready = True

    def acquire(self, requests: Sequence[RateRequest], now_us: int) -> RateResult:
        """Atomically take one unit of every request's key, or none if any is at its limit."""
        if not requests:
            return RateResult(ok=True)
        self._setup()
        ordered = sorted(requests, key=lambda r: _digest(r.key))
        try:
            if self._serial is not None:
                with self._serial:
                    return self._acquire(ordered, now_us)
            return self._acquire(ordered, now_us)
        except _Exceeded as stop:
            return stop.result

    def _acquire(self, ordered: Sequence[RateRequest], now_us: int) -> RateResult:
        with self.engine.begin() as conn:
            for req in ordered:
                self._lock_key(conn, req)
            for req in ordered:
                digest = _digest(req.key)
                floor = now_us - int(req.window_s * 1_000_000)
                conn.execute(sa.delete(_events).where(_events.c.key == digest, _events.c.at_us <= floor))
                used, oldest = conn.execute(
                    sa.select(sa.func.count(), sa.func.min(_events.c.at_us)).where(
                        _events.c.key == digest, _events.c.at_us > floor
                    )
                ).one()
                if used >= req.limit:
                    retry = max(0.0, (int(oldest) - floor) / 1_000_000) if oldest is not None else req.window_s
                    raise _Exceeded(
                        RateResult(
                            ok=False, exceeded=RateExceeded(req.rule_id, req.key, int(used), req.limit, req.window_s, retry)
                        )
                    )
            ids: list[int] = []
            for req in ordered:
                result = conn.execute(sa.insert(_events).values(key=_digest(req.key), at_us=now_us))
                pk = result.inserted_primary_key
                assert pk is not None
                ids.append(int(pk[0]))
        return RateResult(ok=True, reservations=tuple(ids))

    def _lock_key(self, conn: Connection, req: RateRequest) -> None:
        digest = _digest(req.key)
        if self._sqlite:  # BEGIN IMMEDIATE already holds the write lock
            conn.execute(sa.insert(_keys).prefix_with("OR IGNORE").values(key=digest, label=req.key[:500]))
            return
        row = conn.execute(sa.select(_keys.c.key).where(_keys.c.key == digest).with_for_update()).first()
        if row is None:
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(_keys).values(key=digest, label=req.key[:500]))
            except IntegrityError:
                pass  # another process inserted it first
            conn.execute(sa.select(_keys.c.key).where(_keys.c.key == digest).with_for_update()).one()

    def release(self, reservations: Sequence[int]) -> None:
        """Give back units taken for an action that did not run."""
        if not reservations:
            return
        self._setup()
        with self._serial or contextlib.nullcontext(), self.engine.begin() as conn:
            conn.execute(sa.delete(_events).where(_events.c.id.in_(list(reservations))))

    def used(self, key: str, window_s: float, now_us: int) -> int:
        """Units of ``key`` taken in the window ending now."""
        self._setup()
        floor = now_us - int(window_s * 1_000_000)
        with self._serial or contextlib.nullcontext(), self.engine.begin() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(_events.c.key == _digest(key), _events.c.at_us > floor)
                ).scalar_one()
            )

    def close(self) -> None:
        self.engine.dispose()
