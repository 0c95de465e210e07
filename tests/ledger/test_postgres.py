"""The ledger on a real PostgreSQL server (FIVEPLANE_TEST_PG_URL; never skipped under CI)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from fiveplane import ActionBlocked, Governor
from fiveplane._ledger import Ed25519Signer, Ledger, NoteVerifier, open_ledger, verify_receipt
from fiveplane._ledger import _merkle as m
from tests.ledger.conftest import fill
from tests.ledger.test_ledger import CHAIN, PACK, lookup, update

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_ledger(pg_url: str, signer: Ed25519Signer) -> Iterator[Ledger]:
    led = open_ledger(pg_url, key=signer, checkpoint_interval=None)
    yield led
    led.close()


@pytest.fixture
def admin(pg_url: str) -> Iterator[sa.Connection]:
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        yield conn
    engine.dispose()


def test_append_verify_and_receipts(pg_ledger: Ledger, verifier: NoteVerifier) -> None:
    fill(pg_ledger, 300)
    hashes = [bytes(r.leaf_hash) for r in pg_ledger.store.iter_leaves(pg_ledger.ledger_id)]
    assert pg_ledger.root() == m.root_hash(hashes)
    check = verify_receipt(pg_ledger.receipt(123).encode(), [verifier], origin=pg_ledger.origin)
    assert check.index == 123 and check.checkpoint.size == 300
    report = pg_ledger.verify(keys=[verifier])
    assert report.ok and report.entries == 300 and report.checkpoints_checked == 1


def test_governor_and_reconstruct(pg_ledger: Ledger) -> None:
    gov = Governor(PACK, evidence=pg_ledger)
    with gov.run(CHAIN, session_id="s-pg", intent="set tier", purpose="testing"):
        gov.govern(update, tool="crm.update")(customer="c", tier="gold")
    pg_ledger.flush()
    call = next(e["action_id"] for _, e in pg_ledger.iter_records() if e["kind"] == "decision")
    story = pg_ledger.reconstruct(call)
    assert story is not None and story.decision is not None and story.decision["verdict"] == "allow"
    assert [o["status"] for o in story.outcomes] == ["success"]


def test_an_outcome_rides_with_the_decision_on_its_result(pg_url: str, signer: Ed25519Signer) -> None:
    led = open_ledger(pg_url, key=signer, checkpoint_interval=None, linger=60.0)  # only a commit can take it
    try:
        gov = Governor(PACK, evidence=led)
        with gov.run(CHAIN, session_id="s-pg-ride", intent="look up", purpose="testing"):
            before = led.stats.flushes
            assert gov.govern(lookup, tool="crm.lookup")(customer="c") == {"customer": "c", "tier": "gold"}
            commits = led.stats.flushes - before
        kinds = [e["kind"] for _, e in led.iter_records()]  # committed rows, read at once
        assert kinds == ["intent", "decision", "outcome", "intent", "decision"] and commits == 2
    finally:
        led.close()


def test_append_only_triggers(pg_ledger: Ledger, admin: sa.Connection) -> None:
    fill(pg_ledger, 3)
    for stmt in ("UPDATE ledger_leaves SET kind = 'x' WHERE ledger_id = :i", "DELETE FROM ledger_nodes WHERE ledger_id = :i"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            admin.execute(sa.text(stmt), {"i": pg_ledger.ledger_id})


def test_tampering_is_detected(pg_ledger: Ledger, admin: sa.Connection, verifier: NoteVerifier) -> None:
    fill(pg_ledger, 50)
    pg_ledger.checkpoint()
    lid = pg_ledger.ledger_id
    admin.execute(sa.text("ALTER TABLE ledger_leaves DISABLE TRIGGER USER"))
    try:
        admin.execute(
            sa.text("UPDATE ledger_leaves SET envelope = envelope || '\\x00'::bytea WHERE ledger_id = :i AND seq = 21"),
            {"i": lid},
        )
    finally:
        admin.execute(sa.text("ALTER TABLE ledger_leaves ENABLE TRIGGER USER"))
    report = pg_ledger.verify(keys=[verifier])
    assert not report.ok and report.first_bad_seq == 21


def test_a_failing_database_blocks_the_action(pg_ledger: Ledger, admin: sa.Connection) -> None:
    lid = pg_ledger.ledger_id
    admin.execute(
        sa.text(
            "CREATE OR REPLACE FUNCTION ledger_test_fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$"
        )
    )
    admin.execute(
        sa.text(
            f"CREATE TRIGGER ledger_test_fail_{lid} BEFORE INSERT ON ledger_leaves FOR EACH ROW WHEN (NEW.ledger_id = {lid}) EXECUTE FUNCTION ledger_test_fail()"
        )
    )
    ran: list[str] = []

    def tracked(customer: str, tier: str) -> None:
        ran.append(customer)

    try:
        gov = Governor(PACK, evidence=pg_ledger)
        with gov.run(CHAIN, session_id="s-pg-fail", intent="x", purpose="testing"), pytest.raises(ActionBlocked):
            gov.govern(tracked, tool="crm.update")(customer="c", tier="gold")
        assert ran == []
    finally:
        admin.execute(sa.text(f"DROP TRIGGER ledger_test_fail_{lid} ON ledger_leaves"))
    pg_ledger.flush(timeout=10)  # the queued (non-durable) `blocked` outcome is written once the database works again


def test_sqlite_and_postgres_build_the_same_tree(pg_ledger: Ledger, tmp_path: Path, signer: Ed25519Signer) -> None:
    lite = open_ledger(f"sqlite:///{tmp_path / 'same.db'}", key=signer, checkpoint_interval=None)
    try:
        from fiveplane._ledger._records import make_record

        records = [make_record(pg_ledger.origin, "test.event", {"i": i}, {"p": i}) for i in range(77)]
        for k in range(0, 77, 7):
            pg_ledger.append_records(records[k : k + 7])
            lite.append_records(records[k : k + 7])
        assert pg_ledger.root() == lite.root()
        assert pg_ledger.inclusion_proof(40) == lite.inclusion_proof(40)
        assert pg_ledger.consistency_proof(30) == lite.consistency_proof(30)
    finally:
        lite.close()


def test_a_writer_connection_killed_between_appends_is_replaced(
    pg_ledger: Ledger, admin: sa.Connection, verifier: NoteVerifier
) -> None:
    """The server ends the append connection (restart, failover, idle timeout): the next append finds
    it dead before anything was committed, and runs once more on a fresh connection."""
    pg_ledger.record_event("test.event", {"i": 0})
    backend = pg_ledger.store._writer().info.backend_pid
    admin.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": backend})
    assert pg_ledger.record_event("test.event", {"i": 1}) == 1  # no error reaches the caller
    assert pg_ledger.store._writer().info.backend_pid != backend
    pg_ledger.checkpoint()
    assert pg_ledger.verify(keys=[verifier]).ok and pg_ledger.stats.failures == 0


def test_an_auditor_with_read_only_credentials_verifies_and_witnesses(
    pg_ledger: Ledger, admin: sa.Connection, pg_url: str, verifier: NoteVerifier, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from fiveplane._cli import app
    from fiveplane._ledger._witness import generate_witness_key

    fill(pg_ledger, 20)
    pg_ledger.checkpoint()
    role = f"auditor_{pg_ledger.ledger_id}_{uuid.uuid4().hex[:6]}"
    admin.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
    admin.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
    try:
        url = sa.make_url(pg_url).set(username=role, password=None).render_as_string(hide_password=False)
        run = CliRunner().invoke
        where = ["--db", url, "--origin", pg_ledger.origin]
        result = run(app, ["audit", "verify", *where, "--key", str(verifier)])
        assert result.exit_code == 0, result.output
        cp, out = tmp_path / "cp", tmp_path / "cosigned"
        assert run(app, ["audit", "checkpoint", *where, "--out", str(cp)]).exit_code == 0
        wkey = tmp_path / "w.key"
        generate_witness_key(wkey, "witness.example/ro")
        args = ["--key", str(wkey), "--log-key", str(verifier), "--state", str(tmp_path / "state"), *where]
        result = run(app, ["audit", "cosign", "--checkpoint", str(cp), *args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        result = run(app, ["audit", "import-cosignature", str(out), *where])
        assert result.exit_code == 2 and "permission denied" in result.output  # storing it is a write
    finally:
        admin.execute(sa.text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}"))
        admin.execute(sa.text(f"DROP ROLE {role}"))
