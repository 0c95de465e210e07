"""Where every capability token's revocation ids are recorded, and which of them are revoked.

Biscuit gives each block of a token a revocation id (the block's signature); a token derived by
attenuation carries its parent's ids plus one for each new block, so revoking the root block's id
revokes every token derived from it. The SQL store shares revocations between processes through
the database; the memory store is for tests and single-process benchmarks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import Engine, bindparam, delete, insert, select, update

from ._db import capabilities, create_tables, make_engine

__all__ = ["MemoryRevocationStore", "RevocationStatus", "RevocationStore", "SqlRevocationStore", "TokenRecord"]


@dataclass(frozen=True)
class TokenRecord:
    """One recorded revocation id."""

    revocation_id: str
    token_id: str
    block: int
    session_id: str | None
    action_id: str | None
    tool: str | None
    operation: str | None
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class RevocationStatus:
    known: frozenset[str]
    """Which of the asked ids were recorded when minted."""
    revoked: frozenset[str]
    """Which of them are revoked."""


class RevocationStore(Protocol):
    """Records revocation ids at mint time and answers whether any is revoked."""

    def record(self, records: Sequence[TokenRecord]) -> None: ...

    def status(self, revocation_ids: Sequence[str]) -> RevocationStatus: ...

    def revoke_session(self, session_id: str, *, reason: str) -> list[str]:
        """Revoke every token of a session; returns their token ids."""
        ...

    def revoke_token(self, token_id: str, *, reason: str) -> int:
        """Revoke one token (and so everything derived from it); returns how many ids changed."""
        ...

    def purge(self, *, expired_before: datetime) -> int:
        """Forget ids of tokens that expired before this time (they fail verification anyway)."""
        ...


# Built once: constructing a statement costs more than SQLite takes to run it (the hot path checks
# revocation on every verification and records it on every mint).
_INSERT = insert(capabilities)
_STATUS = select(capabilities.c.revocation_id, capabilities.c.revoked_at).where(
    capabilities.c.revocation_id.in_(bindparam("ids", expanding=True))
)


class SqlRevocationStore:
    """Revocation ids in the database (the same one as the grants and, by default, the ledger)."""

    def __init__(self, engine: Engine | str | None = None, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = make_engine(engine)
        self.clock = clock
        create_tables(self.engine)

    def record(self, records: Sequence[TokenRecord]) -> None:
        if not records:
            return
        with self.engine.begin() as conn:
            conn.execute(
                _INSERT,
                [
                    {
                        "revocation_id": r.revocation_id,
                        "token_id": r.token_id,
                        "block": r.block,
                        "session_id": r.session_id,
                        "action_id": r.action_id,
                        "tool": r.tool,
                        "operation": r.operation,
                        "issued_at": r.issued_at,
                        "expires_at": r.expires_at,
                    }
                    for r in records
                ],
            )

    def status(self, revocation_ids: Sequence[str]) -> RevocationStatus:
        ids = list(dict.fromkeys(revocation_ids))
        if not ids:
            return RevocationStatus(frozenset(), frozenset())
        with self.engine.connect() as conn:
            rows = conn.execute(_STATUS, {"ids": ids}).all()
        return RevocationStatus(frozenset(r[0] for r in rows), frozenset(r[0] for r in rows if r[1] is not None))

    def revoke_session(self, session_id: str, *, reason: str) -> list[str]:
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(
                update(capabilities)
                .where(capabilities.c.session_id == session_id, capabilities.c.revoked_at.is_(None))
                .values(revoked_at=now, revoke_reason=reason)
            )
            tokens = conn.execute(select(capabilities.c.token_id).where(capabilities.c.session_id == session_id).distinct()).all()
        return sorted(r[0] for r in tokens)

    def revoke_token(self, token_id: str, *, reason: str) -> int:
        with self.engine.begin() as conn:
            res = conn.execute(
                update(capabilities)
                .where(capabilities.c.token_id == token_id, capabilities.c.revoked_at.is_(None))
                .values(revoked_at=self.clock(), revoke_reason=reason)
            )
        return int(res.rowcount or 0)

    def purge(self, *, expired_before: datetime) -> int:
        with self.engine.begin() as conn:
            res = conn.execute(delete(capabilities).where(capabilities.c.expires_at < expired_before))
        return int(res.rowcount or 0)


class MemoryRevocationStore:
    """Process-local revocation ids (tests, single-process use, benchmarks)."""

    def __init__(self, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock
        self._records: dict[str, TokenRecord] = {}
        self._revoked: dict[str, tuple[datetime, str]] = {}
        self._lock = threading.Lock()

    def record(self, records: Sequence[TokenRecord]) -> None:
        with self._lock:
            for r in records:
                if r.revocation_id in self._records:
                    raise ValueError(f"revocation id {r.revocation_id[:16]}… recorded twice")
            for r in records:
                self._records[r.revocation_id] = r

    def status(self, revocation_ids: Sequence[str]) -> RevocationStatus:
        with self._lock:
            known = frozenset(i for i in revocation_ids if i in self._records)
            revoked = frozenset(i for i in known if i in self._revoked)
        return RevocationStatus(known, revoked)

    def revoke_session(self, session_id: str, *, reason: str) -> list[str]:
        now = self.clock()
        with self._lock:
            hit = [r for r in self._records.values() if r.session_id == session_id]
            for r in hit:
                self._revoked.setdefault(r.revocation_id, (now, reason))
        return sorted({r.token_id for r in hit})

    def revoke_token(self, token_id: str, *, reason: str) -> int:
        now = self.clock()
        n = 0
        with self._lock:
            for r in self._records.values():
                if r.token_id == token_id and r.revocation_id not in self._revoked:
                    self._revoked[r.revocation_id] = (now, reason)
                    n += 1
        return n

    def purge(self, *, expired_before: datetime) -> int:
        with self._lock:
            gone = [i for i, r in self._records.items() if r.expires_at < expired_before]
            for i in gone:
                self._records.pop(i, None)
                self._revoked.pop(i, None)
        return len(gone)
