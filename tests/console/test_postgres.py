"""The console over PostgreSQL: the agents' approvals and the ledger in a real server (FIVEPLANE_TEST_PG_URL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fiveplane import ApprovalStatus, ApprovalStore, Governor, Verdict
from fiveplane._console._notify import build_channels
from fiveplane._ledger import generate_signing_key, load_signing_key, open_ledger
from fiveplane._policy._load import Policy
from tests.console.conftest import AGENT_PACK, Clock, Idp, Receiver, World, approval_id, login, make_client
from tests.ledger.conftest import pg_url_or_skip

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_db() -> Iterator[str]:
    """A database of its own on the test server (the approvals table is not shared with other tests)."""
    base = make_url(pg_url_or_skip())
    name = f"fp_console_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_decide_notify_and_expire_on_postgresql(
    pg_db: str, tmp_path: Path, policy: Policy, clock: Clock, idp: Idp, receiver: Receiver
) -> None:
    key = tmp_path / "pg.key"
    generate_signing_key(key, "pg.fiveplane.local/console")
    ledger = open_ledger(pg_db, key=load_signing_key(key), checkpoint_interval=None)
    try:
        gov = Governor(AGENT_PACK, approvals=ApprovalStore(pg_db, record=ledger.record), evidence=ledger)
        world = World(tmp_path, pg_db, ledger, gov, key)
        client = make_client(world, policy, clock, channels=build_channels(None, webhook_url=receiver.url + "/hook"))
        console = client.app.state.console  # type: ignore[attr-defined]
        approve_me = approval_id(world.contract("pg-1"))
        leave_me = approval_id(world.contract("pg-2"))
        assert console.tick() == (0, 2)
        assert console.tick() == (0, 0)
        csrf = login(client, idp.token("manager-1", ttl=7200))
        assert client.post(f"/requests/{approve_me}/approve", data={"csrf": csrf, "reason_text": "pg ok"}).status_code == 303
        assert world.contract("pg-1").verdict is Verdict.ALLOW
        clock.advance(3601)
        assert console.tick() == (1, 0)
        store = ApprovalStore(pg_db)
        assert store.get(leave_me).status is ApprovalStatus.DENIED and store.get(approve_me).status is ApprovalStatus.CONSUMED
        assert world.contract("pg-2").verdict is Verdict.BLOCK
        page = client.get(f"/requests/{approve_me}").text
        assert 'data-testid="decided-by">manager-1<' in page and "Notified via webhook: sent" in page
        ledger.flush()
        kinds = {r.kind for aid in (store.get(approve_me).action_id, store.get(leave_me).action_id) for r in ledger.records(aid)}
        assert {"approval.requested", "approval.approved", "approval.consumed", "approval.expired"} <= kinds
    finally:
        ledger.close()
