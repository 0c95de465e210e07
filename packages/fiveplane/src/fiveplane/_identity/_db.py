"""The identity plane's tables (grants, grants version, token revocation ids); portable SQL only.

Engines come from :mod:`fiveplane._db` (the one helper every store uses): SQLite by default,
PostgreSQL unchanged when several processes or machines share grants and revocations.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, Text, insert, select
from sqlalchemy.exc import IntegrityError

from .._db import DATABASE_ENV, DEFAULT_DATABASE_URL, UTCDateTime, default_database_url, make_engine
from .._db import create_tables as _create_all

__all__ = [
    "DATABASE_ENV",
    "DEFAULT_DATABASE_URL",
    "Recorder",
    "capabilities",
    "create_tables",
    "default_database_url",
    "grants",
    "make_engine",
    "meta",
    "metadata",
]

Recorder = Callable[[str, dict[str, Any]], None]
"""``record(kind, payload)``: where identity events go (the evidence ledger). Raising aborts the change."""

metadata = MetaData()

grants = Table(
    "fiveplane_identity_grants",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("principal", String(512), nullable=False),
    Column("spec", Text, nullable=False),
    Column("spec_hash", String(80), nullable=False),
    Column("source", String(255), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_by", String(255), nullable=True),
    Column("updated_at", UTCDateTime(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("revoked_by", String(255), nullable=True),
    Column("revoke_reason", Text, nullable=True),
)

meta = Table(
    "fiveplane_identity_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Integer, nullable=False),
)

capabilities = Table(
    "fiveplane_identity_capabilities",
    metadata,
    Column("revocation_id", String(160), primary_key=True),
    Column("token_id", String(64), nullable=False, index=True),
    Column("block", Integer, nullable=False),
    Column("session_id", String(255), nullable=True, index=True),
    Column("action_id", String(64), nullable=True),
    Column("tool", String(255), nullable=True),
    Column("operation", String(16), nullable=True),
    Column("issued_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False, index=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("revoke_reason", Text, nullable=True),
)


_CREATED: weakref.WeakSet[Engine] = weakref.WeakSet()


def create_tables(engine: Engine) -> None:
    """Create the identity tables and the grants version row if missing (idempotent, race-safe)."""
    if engine in _CREATED:
        return
    _create_all(metadata, engine)
    with engine.connect() as conn:
        have = conn.execute(select(meta.c.value).where(meta.c.key == "grants_version")).first()
        if have is None:
            try:
                conn.execute(insert(meta).values(key="grants_version", value=0))
                conn.commit()
            except IntegrityError:  # another process created it first
                conn.rollback()
    _CREATED.add(engine)
