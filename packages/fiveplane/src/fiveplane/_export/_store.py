"""Durable export state in the ledger's database: one cursor per sink and ledger, and dead letters.

* ``fiveplane_export_cursors`` — ``(sink, origin)`` → the last sequence number delivered (``-1`` for
  none yet), counters, the last error and a lease (which exporter works on the sink until when), so
  two exporters never deliver the same sink at once.
* ``fiveplane_export_dead_letters`` — events a sink rejected for good (malformed for the receiver,
  4xx), with the reason and the event itself, so nothing is lost silently.

The cursor only moves forward and only after the sink confirmed delivery (outbox pattern): a crash
between delivery and the cursor update re-delivers, never skips.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)

from .._db import UTCDateTime, create_tables, make_engine

__all__ = ["CursorState", "DeadLetter", "ExportStore", "LeaseHeld", "event_json"]

metadata = MetaData()

cursors_t = Table(
    "fiveplane_export_cursors",
    metadata,
    Column("sink", String(128), primary_key=True),
    Column("origin", String(255), primary_key=True),
    Column("sink_type", String(32), nullable=False, default=""),
    Column("last_seq", BigInteger, nullable=False, default=-1),
    Column("delivered", BigInteger, nullable=False, default=0),
    Column("dead_letters", BigInteger, nullable=False, default=0),
    Column("failures", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("last_success_at", UTCDateTime()),
    Column("last_attempt_at", UTCDateTime()),
    Column("lease_owner", String(255)),
    Column("lease_until", UTCDateTime()),
    Column("updated_at", UTCDateTime()),
)

dead_t = Table(
    "fiveplane_export_dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sink", String(128), nullable=False),
    Column("origin", String(255), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("event_uid", String(512), nullable=False),
    Column("reason", Text, nullable=False),
    Column("event", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("sink", "event_uid", name="uq_fiveplane_export_dead_letter"),
)


@dataclass(frozen=True)
class CursorState:
    sink: str
    origin: str
    sink_type: str
    last_seq: int
    delivered: int
    dead_letters: int
    failures: int
    last_error: str | None
    last_success_at: datetime | None
    last_attempt_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.__dict__)
        for k, v in out.items():
            if isinstance(v, datetime):
                out[k] = v.isoformat()
        return out


@dataclass(frozen=True)
class DeadLetter:
    id: int
    sink: str
    origin: str
    seq: int
    event_uid: str
    reason: str
    event: str
    created_at: datetime


class LeaseHeld(RuntimeError):
    """Another exporter holds the sink's lease."""


def _now() -> datetime:
    return datetime.now(UTC)


class ExportStore:
    """Cursors and dead letters (SQLAlchemy Core, same database as the ledger)."""

    def __init__(self, url: str | Engine) -> None:
        self.engine = make_engine(url)
        create_tables(metadata, self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    def _row(self, sink: str, origin: str) -> CursorState | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(cursors_t).where(cursors_t.c.sink == sink, cursors_t.c.origin == origin)).first()
        return None if r is None else CursorState(**{k: getattr(r, k) for k in CursorState.__dataclass_fields__})

    def cursor(self, sink: str, origin: str, sink_type: str = "") -> CursorState:
        """The sink's cursor (created at ``-1``: nothing delivered yet)."""
        row = self._row(sink, origin)
        if row is not None:
            return row
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(cursors_t).values(
                        sink=sink,
                        origin=origin,
                        sink_type=sink_type,
                        last_seq=-1,
                        delivered=0,
                        dead_letters=0,
                        failures=0,
                        updated_at=_now(),
                    )
                )
        except Exception:  # noqa: BLE001 - created concurrently by another exporter: read it back
            pass
        row = self._row(sink, origin)
        assert row is not None
        return row

    def cursors(self) -> list[CursorState]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(cursors_t).order_by(cursors_t.c.sink, cursors_t.c.origin)).all()
        return [CursorState(**{k: getattr(r, k) for k in CursorState.__dataclass_fields__}) for r in rows]

    def acquire(self, sink: str, origin: str, owner: str, seconds: float) -> None:
        """Take (or renew) the sink's lease; raises :class:`LeaseHeld` if another live exporter has it."""
        now = _now()
        with self.engine.begin() as conn:
            res = conn.execute(
                update(cursors_t)
                .where(
                    cursors_t.c.sink == sink,
                    cursors_t.c.origin == origin,
                    or_(cursors_t.c.lease_owner.is_(None), cursors_t.c.lease_owner == owner, cursors_t.c.lease_until < now),
                )
                .values(lease_owner=owner, lease_until=now + timedelta(seconds=seconds))
            )
            if res.rowcount == 1:
                return
            holder = conn.execute(
                select(cursors_t.c.lease_owner, cursors_t.c.lease_until).where(
                    cursors_t.c.sink == sink, cursors_t.c.origin == origin
                )
            ).first()
        who = f"{holder.lease_owner} until {holder.lease_until:%Y-%m-%dT%H:%M:%SZ}" if holder else "another exporter"
        raise LeaseHeld(f"sink {sink!r} is being exported by {who}")

    def release(self, sink: str, origin: str, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(cursors_t)
                .where(cursors_t.c.sink == sink, cursors_t.c.origin == origin, cursors_t.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    def advance(
        self,
        sink: str,
        origin: str,
        *,
        expected: int,
        to: int,
        delivered: int,
        dead: list[tuple[int, str, str, str]] = (),  # type: ignore[assignment]
    ) -> bool:
        """Move the cursor from ``expected`` to ``to`` and store dead letters, in one transaction.

        ``dead``: ``(seq, event_uid, reason, event_json)``. Returns False (and changes nothing) when
        the cursor is no longer at ``expected`` (another exporter moved it).
        """
        now = _now()
        with self.engine.begin() as conn:
            res = conn.execute(
                update(cursors_t)
                .where(and_(cursors_t.c.sink == sink, cursors_t.c.origin == origin, cursors_t.c.last_seq == expected))
                .values(
                    last_seq=to,
                    delivered=cursors_t.c.delivered + delivered,
                    dead_letters=cursors_t.c.dead_letters + len(dead),
                    failures=0,
                    last_error=None,
                    last_success_at=now,
                    last_attempt_at=now,
                    updated_at=now,
                )
            )
            if res.rowcount != 1:
                return False
            known = set()
            if dead:
                known = {
                    r[0]
                    for r in conn.execute(
                        select(dead_t.c.event_uid).where(dead_t.c.sink == sink, dead_t.c.event_uid.in_([d[1] for d in dead]))
                    )
                }
            for seq, uid, reason, event in dead:
                if uid in known:
                    continue
                known.add(uid)
                conn.execute(
                    insert(dead_t).values(
                        sink=sink, origin=origin, seq=seq, event_uid=uid, reason=reason[:4000], event=event, created_at=now
                    )
                )
        return True

    def failed(self, sink: str, origin: str, error: str) -> None:
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(
                update(cursors_t)
                .where(cursors_t.c.sink == sink, cursors_t.c.origin == origin)
                .values(failures=cursors_t.c.failures + 1, last_error=error[:4000], last_attempt_at=now, updated_at=now)
            )

    def reset(self, sink: str, origin: str, to: int) -> None:
        """Set the cursor (``-1`` re-exports everything): an operator's tool, e.g. after a SIEM data loss."""
        with self.engine.begin() as conn:
            conn.execute(
                update(cursors_t)
                .where(cursors_t.c.sink == sink, cursors_t.c.origin == origin)
                .values(last_seq=to, updated_at=_now())
            )

    def dead_letters(self, sink: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        q = select(dead_t).order_by(dead_t.c.id).limit(limit)
        if sink is not None:
            q = q.where(dead_t.c.sink == sink)
        with self.engine.connect() as conn:
            return [
                DeadLetter(r.id, r.sink, r.origin, int(r.seq), r.event_uid, r.reason, r.event, r.created_at)
                for r in conn.execute(q)
            ]

    def dead_letter_count(self, sink: str | None = None) -> int:
        q = select(func.count()).select_from(dead_t)
        if sink is not None:
            q = q.where(dead_t.c.sink == sink)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())


def event_json(data: dict[str, Any] | None, text: str | None) -> str:
    return text if text is not None else json.dumps(data, ensure_ascii=False, sort_keys=True, default=str)
