"""The grants store (SQLAlchemy) and its in-memory index.

Grants live in the database so that every process sees the same grants and every change (a pack's
grants loaded, a grant added or revoked at run time) is one transaction that also bumps a version
counter. Each process keeps a :class:`GrantIndex` built from the active rows and reloads it when the
version changed (checked at most every ``refresh_seconds``; changes made through the same store are
seen at once). Every change is reported to the ``record`` callback inside the transaction: if
recording fails, the change is rolled back.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from .._actions import Principal, PrincipalKind
from ._db import Recorder, create_tables, grants, make_engine, meta
from ._model import Grant, GrantSpec, IdentityError

__all__ = ["GrantIndex", "GrantStore", "SyncReport"]


def _hash(spec: GrantSpec) -> str:
    body = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


_SCAN_CACHE = 10_000
"""How many link ids an index remembers the scanned selectors of (then it scans again)."""


class GrantIndex:
    """Active (unrevoked) grants indexed by principal, for evaluation without a database round trip.

    Expired grants stay in the index so a denial can say "its grant expired".
    """

    def __init__(self, items: Iterable[Grant], version: int = 0) -> None:
        self.version = version
        self.grants: dict[str, Grant] = {}
        self._by_id: dict[tuple[PrincipalKind, str], list[Grant]] = {}
        self._by_role: dict[tuple[PrincipalKind, str], list[Grant]] = {}
        self._scan: dict[PrincipalKind, list[Grant]] = {}
        self._scanned: dict[tuple[PrincipalKind, str], list[Grant]] = {}
        """Per link id: the scanned grants whose id glob matches it (the index never changes, so neither does this)."""
        for g in items:
            if g.revoked_at is not None:
                continue
            self.grants[g.id] = g
            sel = g.spec.principal
            exact = sel.exact_id
            if exact is not None:
                self._by_id.setdefault((sel.kind, exact), []).append(g)
            elif sel.role is not None:
                self._by_role.setdefault((sel.kind, sel.role), []).append(g)
            else:
                self._scan.setdefault(sel.kind, []).append(g)

    def __len__(self) -> int:
        return len(self.grants)

    def for_link(self, chain: Sequence[Principal], index: int) -> list[Grant]:
        """Grants whose principal selector matches link ``index`` of ``chain`` (expired included)."""
        link = chain[index]
        found: list[Grant] = []
        found.extend(self._by_id.get((link.kind, link.id), ()))
        for role in link.roles:
            found.extend(self._by_role.get((link.kind, role), ()))
        found.extend(self._scan_for(link.kind, link.id))
        return [g for g in found if g.spec.principal.matches(chain, index)]

    def _scan_for(self, kind: PrincipalKind, link_id: str) -> list[Grant]:
        """The glob / role-less / claim selectors of ``kind`` that can match ``link_id`` (the rest of the
        selector — roles, claims, delegation — is still checked by ``matches``)."""
        key = (kind, link_id)
        hit = self._scanned.get(key)
        if hit is None:
            hit = [g for g in self._scan.get(kind, ()) if g.spec.principal.id_matches(link_id)]
            if len(self._scanned) < _SCAN_CACHE:
                self._scanned[key] = hit
        return hit


@dataclass
class SyncReport:
    """What loading a pack's grants changed."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept_revoked: list[str] = field(default_factory=list)
    """Grants of the pack that were revoked at run time: they stay revoked."""

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


class GrantStore:
    """Grants in a database (SQLite by default, PostgreSQL for several processes).

    Args:
        engine: an SQLAlchemy engine or URL (default ``$FIVEPLANE_DATABASE_URL`` or ``sqlite:///.fiveplane/fiveplane.db``).
        record: ``record(kind, payload)`` for every change (kinds ``identity.grant.added``,
            ``identity.grant.updated``, ``identity.grant.revoked``); called inside the transaction.
        refresh_seconds: how stale this process's index may be with respect to changes made by other
            processes (0: check the version on every lookup).
        clock: the current time (UTC).
    """

    def __init__(
        self,
        engine: Engine | str | None = None,
        *,
        record: Recorder | None = None,
        refresh_seconds: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = make_engine(engine)
        self.record = record
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        create_tables(self.engine)
        self._lock = threading.Lock()
        self._index: GrantIndex | None = None
        self._checked = 0.0

    # ---- reading -------------------------------------------------------------------------------

    @staticmethod
    def _row_to_grant(row: Any) -> Grant:
        spec = GrantSpec.model_validate(json.loads(row.spec))
        return Grant(
            spec=spec,
            source=row.source,
            created_at=row.created_at,
            created_by=row.created_by,
            revoked_at=row.revoked_at,
            revoked_by=row.revoked_by,
            revoke_reason=row.revoke_reason,
        )

    def version(self) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(select(meta.c.value).where(meta.c.key == "grants_version")).scalar_one()
        return int(value)

    def get(self, grant_id: str) -> Grant | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(grants).where(grants.c.id == grant_id)).first()
        return self._row_to_grant(row) if row is not None else None

    def list(self, *, include_revoked: bool = False, include_expired: bool = True, source: str | None = None) -> list[Grant]:
        """Stored grants, ordered by id."""
        q = select(grants).order_by(grants.c.id)
        if not include_revoked:
            q = q.where(grants.c.revoked_at.is_(None))
        if source is not None:
            q = q.where(grants.c.source == source)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        out = [self._row_to_grant(r) for r in rows]
        if not include_expired:
            now = self.clock()
            out = [g for g in out if g.expires_at is None or g.expires_at > now]
        return out

    def index(self) -> GrantIndex:
        """The current index (reloaded when another process changed the grants)."""
        now = time.monotonic()
        with self._lock:
            index = self._index
            if index is not None and now - self._checked < self.refresh_seconds:
                return index
            version = self.version()
            self._checked = now
            if index is not None and index.version == version:
                return index
            with self.engine.connect() as conn:
                rows = conn.execute(select(grants).where(grants.c.revoked_at.is_(None))).all()
                # The version may have moved while we read; keep the one read before (a later check reloads).
            self._index = GrantIndex((self._row_to_grant(r) for r in rows), version)
            return self._index

    def invalidate(self) -> None:
        with self._lock:
            self._index = None

    # ---- changing ------------------------------------------------------------------------------

    @staticmethod
    def _bump(conn: Connection) -> None:
        # First statement of every write transaction: takes the write lock before any read (SQLite).
        conn.execute(update(meta).where(meta.c.key == "grants_version").values(value=meta.c.value + 1))

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        if self.record is not None:
            self.record(kind, payload)

    def add(self, spec: GrantSpec | Mapping[str, Any], *, by: str | None = None, source: str = "runtime") -> Grant:
        """Store a new grant. Raises :class:`IdentityError` if the id is taken (even by a revoked grant)."""
        if not isinstance(spec, GrantSpec):
            spec = GrantSpec.model_validate(spec)
        now = self.clock()
        grant = Grant(spec=spec, source=source, created_at=now, created_by=by)
        try:
            with self.engine.begin() as conn:
                self._bump(conn)
                conn.execute(insert(grants).values(**self._values(spec), source=source, created_at=now, created_by=by))
                self._emit("identity.grant.added", {"grant": grant.to_json(), "by": by})
        except IntegrityError:
            raise IdentityError(f"grant id {spec.id!r} already exists (ids are never reused, even after revocation)") from None
        self.invalidate()
        return grant

    @staticmethod
    def _values(spec: GrantSpec) -> dict[str, Any]:
        return {
            "id": spec.id,
            "principal": str(spec.principal)[:512],
            "spec": json.dumps(spec.model_dump(mode="json"), sort_keys=True),
            "spec_hash": _hash(spec),
            "expires_at": spec.expires,
        }

    def revoke(self, grant_id: str, *, by: str | None = None, reason: str | None = None) -> Grant:
        """Revoke a grant now. Raises :class:`IdentityError` if unknown or already revoked."""
        now = self.clock()
        with self.engine.begin() as conn:
            self._bump(conn)
            row = conn.execute(select(grants).where(grants.c.id == grant_id)).first()
            if row is None:
                raise IdentityError(f"no grant {grant_id!r}")
            if row.revoked_at is not None:
                raise IdentityError(f"grant {grant_id!r} was already revoked at {row.revoked_at.isoformat()}")
            conn.execute(
                update(grants).where(grants.c.id == grant_id).values(revoked_at=now, revoked_by=by, revoke_reason=reason)
            )
            self._emit(
                "identity.grant.revoked", {"grant_id": grant_id, "by": by, "reason": reason, "revoked_at": now.isoformat()}
            )
            grant = self._row_to_grant(row)
        self.invalidate()
        return Grant(
            spec=grant.spec,
            source=grant.source,
            created_at=grant.created_at,
            created_by=grant.created_by,
            revoked_at=now,
            revoked_by=by,
            revoke_reason=reason,
        )

    def sync(self, specs: Sequence[GrantSpec], *, source: str, by: str | None = None) -> SyncReport:
        """Make the store hold exactly ``specs`` for ``source`` (a pack: ``policy:<name>``).

        New grants are added, changed ones updated, ones gone from the pack revoked. A grant revoked
        at run time stays revoked (restarting a process never re-grants). A grant id already used by
        another source is an error. A no-op sync writes nothing.
        """
        wanted = {s.id: s for s in specs}
        if len(wanted) != len(specs):
            dup = sorted({s.id for s in specs if sum(t.id == s.id for t in specs) > 1})
            raise IdentityError(f"duplicate grant id(s) in {source}: {', '.join(dup)}")
        for attempt in (1, 2):
            try:
                return self._sync_once(wanted, source, by)
            except IntegrityError:  # another process inserted the same rows concurrently
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _sync_once(self, wanted: dict[str, GrantSpec], source: str, by: str | None) -> SyncReport:
        report = SyncReport()
        with self.engine.connect() as conn:
            rows = {
                r.id: r
                for r in conn.execute(select(grants).where(grants.c.id.in_(list(wanted)) | (grants.c.source == source))).all()
            }
        plan_add = [s for i, s in wanted.items() if i not in rows]
        plan_update = [s for i, s in wanted.items() if i in rows and rows[i].revoked_at is None and rows[i].spec_hash != _hash(s)]
        plan_remove = [r.id for r in rows.values() if r.source == source and r.id not in wanted and r.revoked_at is None]
        foreign = [i for i in wanted if i in rows and rows[i].source != source]
        if foreign:
            raise IdentityError(
                f"grant id(s) {', '.join(sorted(foreign))} in {source} are already used by another source ({rows[foreign[0]].source})"
            )
        report.kept_revoked = sorted(i for i in wanted if i in rows and rows[i].revoked_at is not None)
        if not (plan_add or plan_update or plan_remove):
            return report
        now = self.clock()
        with self.engine.begin() as conn:
            self._bump(conn)
            for spec in plan_add:
                conn.execute(insert(grants).values(**self._values(spec), source=source, created_at=now, created_by=by))
                self._emit("identity.grant.added", {"grant": Grant(spec, source, now, by).to_json(), "by": by})
                report.added.append(spec.id)
            for spec in plan_update:
                values = self._values(spec)
                values.pop("id")
                res = conn.execute(
                    update(grants).where(grants.c.id == spec.id, grants.c.revoked_at.is_(None)).values(**values, updated_at=now)
                )
                if res.rowcount:
                    self._emit("identity.grant.updated", {"grant": Grant(spec, source, now, by).to_json(), "by": by})
                    report.updated.append(spec.id)
            for gid in plan_remove:
                res = conn.execute(
                    update(grants)
                    .where(grants.c.id == gid, grants.c.revoked_at.is_(None))
                    .values(revoked_at=now, revoked_by=by, revoke_reason=f"removed from {source}")
                )
                if res.rowcount:
                    self._emit(
                        "identity.grant.revoked",
                        {"grant_id": gid, "by": by, "reason": f"removed from {source}", "revoked_at": now.isoformat()},
                    )
                    report.removed.append(gid)
        self.invalidate()
        return report
