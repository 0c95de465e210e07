"""The SQL revocation store on SQLite and on a real PostgreSQL server: record, check, revoke, purge."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from biscuit_auth import KeyPair

from fiveplane import ActionClass
from fiveplane._identity import Attenuation, Capability, CapabilityDenied, SqlRevocationStore, TokenService, attenuate
from tests.sessions.conftest import backend, db_url  # noqa: F401 - fixtures

from .conftest import AGENT, REP


def test_tokens_recorded_checked_and_revoked_in_the_database(db_url: str) -> None:  # noqa: F811 - the imported fixture
    database = db_url  # the sessions suite's: a SQLite file, or a fresh PostgreSQL schema
    store = SqlRevocationStore(database)
    root = KeyPair()
    service = TokenService(root, revocations=store)
    other_process = SqlRevocationStore(database)  # a connector elsewhere, same database
    verifier = TokenService(root, revocations=other_process).verifier()
    req = {"tool": "crm.get_account_notes", "operation": "read", "resource": "accounts/ACC-1"}

    def mint(session: str) -> Capability:
        return service.mint(
            chain=(REP, AGENT),
            tool="crm.get_account_notes",
            connector="crm",
            operation=ActionClass.READ,
            resource="accounts/ACC-1",
            session_id=session,
            action_id=uuid.uuid4().hex,
            ttl=60,
        )

    a, b = mint("s-a"), mint("s-b")
    narrowed = attenuate(a, Attenuation(operations=(ActionClass.READ,)))
    assert verifier.verify(narrowed.token, **req).token_id == a.id
    status = other_process.status([*narrowed.revocation_ids, "f" * 128])
    assert status.known == frozenset(narrowed.revocation_ids[:1]) and not status.revoked  # the holder's block is unrecorded
    assert other_process.status([]).known == frozenset()

    assert store.revoke_session("s-a", reason="task ended") == [a.id]
    for token in (a, narrowed):
        with pytest.raises(CapabilityDenied) as info:
            verifier.verify(token.token, **req)
        assert info.value.code == "revoked"
    assert verifier.verify(b.token, **req).session_id == "s-b"
    assert store.revoke_token(b.id, reason="done") == 1 and store.revoke_token(b.id, reason="again") == 0
    assert other_process.status(b.revocation_ids).revoked == frozenset(b.revocation_ids)

    unknown = TokenService(root, revocations=SqlRevocationStore("sqlite:///:memory:")).mint(
        chain=(REP, AGENT),
        tool="crm.get_account_notes",
        connector="crm",
        operation=ActionClass.READ,
        resource="accounts/ACC-1",
        ttl=60,
    )
    with pytest.raises(CapabilityDenied) as info:
        verifier.verify(unknown.token, **req)
    assert info.value.code == "unknown"

    assert store.purge(expired_before=datetime.now(UTC) + timedelta(hours=1)) == 2
    assert other_process.status(a.revocation_ids).known == frozenset()
    for s in (store, other_process):
        s.engine.dispose()
