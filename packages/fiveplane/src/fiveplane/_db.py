"""The one database helper every store uses (ledger, grants, revocations, approvals, rate limits).

SQLite is the default (one machine); PostgreSQL works unchanged when several processes or machines
share the state. Timestamps are stored as naive UTC and read back aware.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

__all__ = ["DATABASE_ENV", "DEFAULT_DATABASE_URL", "UTCDateTime", "create_tables", "default_database_url", "make_engine"]

DATABASE_ENV = "FIVEPLANE_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///.fiveplane/fiveplane.db"


def default_database_url() -> str:
    """``$FIVEPLANE_DATABASE_URL`` or ``sqlite:///.fiveplane/fiveplane.db``."""
    return os.environ.get(DATABASE_ENV) or DEFAULT_DATABASE_URL


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; give a time zone")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def make_engine(url: str | Engine | None = None, *, immediate: bool = False, pre_ping: bool = True) -> Engine:
    """An engine for ``url`` (default :func:`default_database_url`), with SQLite tuned for sharing.

    SQLite gets WAL, a 30 s busy timeout and cross-thread use; an in-memory SQLite URL gets one
    shared connection (so every thread sees the same database). ``immediate=True`` makes every SQLite
    transaction take the write lock up front (``BEGIN IMMEDIATE``), for check-and-update stores
    whose reads must not be upgraded to writes later (``SQLITE_BUSY`` under WAL). ``pre_ping=False``
    saves a round trip per checkout on servers (a dead connection then fails one use, and is replaced).
    """
    if isinstance(url, Engine):
        return url
    url = url or default_database_url()
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=pre_ping)
    memory = parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed)
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
    if memory:
        kwargs["poolclass"] = StaticPool
    elif parsed.database:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        if immediate:
            dbapi_conn.isolation_level = None  # BEGIN is emitted below, not pysqlite's deferred one
        cur = dbapi_conn.cursor()
        try:
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
        finally:
            cur.close()

    if immediate:

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


_DDL_LOCK = 0x66_69_76_65_70_6C_61_6E  # "fiveplan": one advisory lock for every store's CREATE TABLE


def create_tables(metadata: MetaData, engine: Engine) -> None:
    """Create a store's missing tables, safely when several processes start on one database at once.

    PostgreSQL: under a transaction-scoped advisory lock (two ``CREATE TABLE`` racing on a fresh
    schema otherwise fail on the catalog's unique index). SQLite: a ``CREATE`` that lost the race to
    another process ("already exists") is simply checked again.
    """
    for attempt in range(3):
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _DDL_LOCK})
                metadata.create_all(conn, checkfirst=True)
            return
        except OperationalError as exc:
            if attempt == 2 or "already exists" not in str(exc):
                raise
