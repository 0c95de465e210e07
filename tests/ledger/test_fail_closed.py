"""A ledger that cannot keep evidence blocks actions — read actions too, whose records are not durable.

Real Governor, real SQLite: the file is deleted or replaced under the running process, inserts fail,
another process holds the write lock. ``open_ledger(..., required=True)`` (``evidence: required``) makes
every record durable, so even the first action after the failure starts is blocked.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from fiveplane import ActionBlocked, Governor
from fiveplane._ledger import Ed25519Signer, Ledger, LedgerUnavailable, open_ledger
from tests.ledger.conftest import raw_sqlite
from tests.ledger.test_ledger import CHAIN, PACK

ASYNC_TTL = 0.05  # seconds an async record relies on the last file check (see _sink._ASYNC_FILE_CHECK_TTL)


class Crm:
    def __init__(self) -> None:
        self.ran: list[str] = []

    def lookup(self, customer: str) -> dict[str, Any]:  # class read: its records are not durable
        self.ran.append(customer)
        return {"customer": customer}

    async def alookup(self, customer: str) -> dict[str, Any]:
        self.ran.append(customer)
        return {"customer": customer}


def remove_database(db_path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)


def governed(ledger: Ledger) -> tuple[Governor, Crm, Any]:
    gov = Governor(PACK, evidence=ledger)
    crm = Crm()
    return gov, crm, gov.govern(crm.lookup, tool="crm.lookup")


def test_a_deleted_sqlite_file_blocks_every_action(ledger: Ledger, db_path: Path) -> None:
    gov, crm, look = governed(ledger)
    with gov.run(CHAIN, session_id="s-gone", intent="x", purpose="testing"):
        assert look(customer="before") == {"customer": "before"}
        ledger.flush()  # (records still queued when the file goes are lost, and close() says so)
        remove_database(db_path)
        with pytest.raises(ActionBlocked) as info:
            look(customer="after")
    assert crm.ran == ["before"]  # the read did not run once its evidence had nowhere to go
    assert "evidence" in info.value.decision.explanation
    assert any("was deleted while the ledger was open" in e for e in info.value.decision.errors)
    with pytest.raises(LedgerUnavailable, match="deleted while the ledger was open"):
        ledger.record_event("test.event", {}, durable=False)
    sqlite3.connect(db_path).close()  # a new, empty file at the same path does not bring it back
    with pytest.raises(LedgerUnavailable, match="reopen the ledger"):
        ledger.record_event("test.event", {}, durable=False)


def test_a_replaced_sqlite_file_blocks_every_action(
    sqlite_url: str, db_path: Path, signer: Ed25519Signer, tmp_path: Path
) -> None:
    with open_ledger(sqlite_url, key=signer) as led:
        led.record_event("test.event", {"i": 0})
    shutil.copy(db_path, tmp_path / "backup.db")
    led = open_ledger(sqlite_url, key=signer)
    try:
        gov, crm, look = governed(led)
        with gov.run(CHAIN, session_id="s-swap", intent="x", purpose="testing"):
            look(customer="before")
            led.flush()
            os.replace(tmp_path / "backup.db", db_path)  # "restore" the older copy under the running process
            with pytest.raises(ActionBlocked) as info:
                look(customer="after")
        assert crm.ran == ["before"] and any("was replaced by another file" in e for e in info.value.decision.errors)
    finally:
        led.close()


async def test_async_actions_are_blocked_once_the_file_is_gone(sqlite_url: str, db_path: Path, signer: Ed25519Signer) -> None:
    led = open_ledger(sqlite_url, key=signer, required=True)
    try:
        gov = Governor(PACK, evidence=led)
        crm = Crm()
        look = gov.govern(crm.alookup, tool="crm.lookup")
        with gov.run(CHAIN, session_id="s-async", intent="x", purpose="testing"):
            await look.acall(customer="before")
            remove_database(db_path)
            with pytest.raises(ActionBlocked):  # required: checked by the commit itself, at once
                await look.acall(customer="after")
        assert crm.ran == ["before"]
    finally:
        await led.aclose()


async def test_async_non_durable_records_rely_on_a_file_check_at_most_a_ttl_old(
    sqlite_url: str, db_path: Path, origin: str
) -> None:
    led = open_ledger(sqlite_url, origin=origin)
    try:
        await led.arecord_event("test.event", {"i": 0})
        remove_database(db_path)
        await asyncio.sleep(ASYNC_TTL * 2)  # (no stat on the event loop: a fresh check runs in a thread)
        with pytest.raises(LedgerUnavailable, match="deleted"):
            await led.arecord_event("test.event", {"i": 1}, durable=False)
    finally:
        await led.aclose()


def test_after_a_failed_commit_non_durable_reads_are_blocked_until_it_recovers(ledger: Ledger, db_path: Path) -> None:
    gov, crm, look = governed(ledger)
    conn = raw_sqlite(db_path)
    with gov.run(CHAIN, session_id="s-fail", intent="x", purpose="testing"):
        look(customer="ok")
        ledger.flush()
        conn.execute("CREATE TRIGGER fail_inserts BEFORE INSERT ON ledger_leaves BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
        ledger.record_event("test.event", {"i": "queued"}, durable=False)  # accepted; the flusher's commit fails
        with pytest.raises(LedgerUnavailable):
            ledger.flush(timeout=5)
        for _ in range(2):
            with pytest.raises(ActionBlocked):
                look(customer="blocked")
        conn.execute("DROP TRIGGER fail_inserts")
        deadline = time.monotonic() + 10
        while True:  # the flusher retries the queued records with backoff
            try:
                ledger.flush(timeout=5)
                break
            except LedgerUnavailable:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert look(customer="again") == {"customer": "again"}
    assert crm.ran == ["ok", "again"]
    ledger.flush()
    kinds = [e["kind"] for _, e in ledger.iter_records() if e["kind"] == "test.event" or e["meta"].get("point") == "tool_call"]
    assert kinds.count("test.event") == 1 and kinds.count("intent") == 2  # the queued record was written late, not lost
    assert ledger.stats.lost == 0


def test_required_evidence_blocks_the_first_read_after_the_database_fails(
    sqlite_url: str, db_path: Path, signer: Ed25519Signer
) -> None:
    led = open_ledger(sqlite_url, key=signer, required=True)
    try:
        gov, crm, look = governed(led)
        conn = raw_sqlite(db_path)
        with gov.run(CHAIN, session_id="s-req", intent="x", purpose="testing"):
            look(customer="ok")
            conn.execute(
                "CREATE TRIGGER fail_inserts BEFORE INSERT ON ledger_leaves BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
            )
            with pytest.raises(ActionBlocked) as info:
                look(customer="first")
            conn.execute("DROP TRIGGER fail_inserts")
            look(customer="later")
        assert crm.ran == ["ok", "later"] and any("disk on fire" in e for e in info.value.decision.errors)
    finally:
        led.close()


def test_required_evidence_blocks_while_another_process_holds_the_write_lock(
    sqlite_url: str, db_path: Path, signer: Ed25519Signer
) -> None:
    led = open_ledger(sqlite_url, key=signer, required=True, busy_timeout=0.3)
    try:
        gov, crm, look = governed(led)
        with gov.run(CHAIN, session_id="s-lock", intent="x", purpose="testing"):
            look(customer="ok")
            other = sqlite3.connect(db_path, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")  # e.g. a backup or a migration in another process
            with pytest.raises(ActionBlocked) as info:
                look(customer="locked")
            other.execute("ROLLBACK")
            other.close()
            look(customer="unlocked")
        assert crm.ran == ["ok", "unlocked"] and any("locked" in e for e in info.value.decision.errors)
    finally:
        led.close()
