"""Fixtures for the ledger suite: real SQLite files, a real PostgreSQL server (FIVEPLANE_TEST_PG_URL)."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fiveplane._ledger import Ed25519Signer, Ledger, NoteVerifier, generate_signing_key, load_signing_key, open_ledger

PG_ENV = "FIVEPLANE_TEST_PG_URL"


def pg_url_or_skip() -> str:
    """The test server's URL; skipped when unset, except under CI where PostgreSQL tests may not skip."""
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{PG_ENV} is not set under CI: the PostgreSQL tests must run (see scripts/pg-test-cluster.sh)")
        pytest.skip(f"{PG_ENV} not set (start one with scripts/pg-test-cluster.sh)")
    return url


@pytest.fixture
def pg_url() -> str:
    return pg_url_or_skip()


@pytest.fixture
def origin() -> str:
    """A fresh origin per test: PostgreSQL tests share one database and are told apart by ledger."""
    return f"test.fiveplane.local/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def key_file(tmp_path: Path, origin: str) -> Path:
    path = tmp_path / "keys" / "ledger.key"
    generate_signing_key(path, origin)
    return path


@pytest.fixture
def signer(key_file: Path) -> Ed25519Signer:
    return load_signing_key(key_file)


@pytest.fixture
def verifier(signer: Ed25519Signer) -> NoteVerifier:
    return signer.verifier


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def sqlite_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


@pytest.fixture
def ledger(sqlite_url: str, signer: Ed25519Signer) -> Iterator[Ledger]:
    led = open_ledger(sqlite_url, key=signer, checkpoint_interval=None)
    yield led
    led.close()


def raw_sqlite(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection with the append-only triggers dropped: the attacker's view."""
    conn = sqlite3.connect(path, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def fill(led: Ledger, n: int, *, start: int = 0) -> None:
    for i in range(start, start + n):
        led.record_event(
            "test.event", {"i": i}, {"note": f"payload {i}"}, action_id=f"act-{i // 3}", session_id="s-1", durable=False
        )
    led.flush()
