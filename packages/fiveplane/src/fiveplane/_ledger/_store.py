"""Ledger storage on SQLAlchemy Core: tables, sequencing transaction, reads for proofs and fsck.

Tables (one database can hold several ledgers, told apart by ``ledger_id``):

* ``ledger_state`` — one row per ledger: origin, tree size, root, compact-range frontier, verifier keys.
* ``ledger_leaves`` — ``(ledger_id, seq)`` → leaf hash, canonical envelope, and a few columns copied
  from the envelope for lookups (kind, action id, parent action id, session id).
* ``ledger_payloads`` — ``(ledger_id, seq)`` → salt and payload body; the only table rows are ever
  deleted from (erasure).
* ``ledger_nodes`` — ``(ledger_id, level, idx)`` → hash of every complete interior subtree (level ≥ 1;
  level 0 is the leaf hash), enough to answer any inclusion or consistency proof with one read.
* ``ledger_checkpoints`` — ``(ledger_id, size)`` → root and signed checkpoint note.
* ``ledger_cosignatures`` — ``(ledger_id, size, key name, key ID)`` → a witness's cosignature line
  on the checkpoint at that size (C2SP ``tlog-cosignature``), imported after witnessing.

Sequencing: one writer at a time per ledger. A batch is appended in **one** transaction that first
takes the ledger's lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT … FOR UPDATE`` on the
state row), reads size and frontier, assigns ``seq = size + i`` (never a database sequence: those
leave gaps), inserts leaves, payloads and completed nodes, and updates the state row. A crash leaves
either the old tree or the new one. Leaves, nodes and checkpoints are append-only: UPDATE, DELETE
and TRUNCATE are refused by triggers (hygiene against mistakes; the real protection is checkpoints
kept off the box).

SQLite runs in WAL mode with ``synchronous=FULL`` (a commit survives power loss) and a busy timeout.

Appends (the hot path) run on one dedicated DB-API connection (sqlite3 or psycopg) held for the
store's lifetime, with plain ``execute`` calls: SQLAlchemy creates the schema and serves every read,
but is not in the way of each commit. A SQLite store remembers the device and inode of the file it
opened and refuses to append once the path names another file or none (deleted, replaced, restored
from a backup under the running process): records written to an unlinked file would be lost.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

try:
    import fcntl
except ImportError:  # Windows: SQLite's busy timeout alone
    fcntl = None  # type: ignore[assignment]

from ._errors import LedgerUnavailable
from ._merkle import EMPTY_ROOT, CompactRange, Coord
from ._records import PendingRecord

__all__ = ["FORMAT_VERSION", "AppendResult", "LedgerRow", "Store", "metadata"]

FORMAT_VERSION = 1

metadata = MetaData()

state_t = Table(
    "ledger_state",
    metadata,
    Column("ledger_id", Integer, primary_key=True, autoincrement=True),
    Column("origin", String(255), nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary, nullable=False),
    Column("frontier", LargeBinary, nullable=False),
    Column("verifier_keys", Text, nullable=False, default=""),
    Column("format", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

leaves_t = Table(
    "ledger_leaves",
    metadata,
    Column("ledger_id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("leaf_hash", LargeBinary, nullable=False),
    Column("envelope", LargeBinary, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("action_id", String(64)),
    Column("parent_id", String(64)),
    Column("session_id", String(255)),
    Index("ix_ledger_leaves_action", "ledger_id", "action_id"),
)
Index(
    "ix_ledger_leaves_parent",
    leaves_t.c.ledger_id,
    leaves_t.c.parent_id,
    sqlite_where=leaves_t.c.parent_id.isnot(None),
    postgresql_where=leaves_t.c.parent_id.isnot(None),
)

payloads_t = Table(
    "ledger_payloads",
    metadata,
    Column("ledger_id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("salt", LargeBinary, nullable=False),
    Column("body", LargeBinary, nullable=False),
)

nodes_t = Table(
    "ledger_nodes",
    metadata,
    Column("ledger_id", Integer, primary_key=True, autoincrement=False),
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary, nullable=False),
    sqlite_with_rowid=False,
)

checkpoints_t = Table(
    "ledger_checkpoints",
    metadata,
    Column("ledger_id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary, nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

cosignatures_t = Table(
    "ledger_cosignatures",
    metadata,
    Column("ledger_id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("key_name", String(255), primary_key=True),
    Column("key_id", LargeBinary, primary_key=True),
    Column("line", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

_APPEND_ONLY = ("ledger_leaves", "ledger_nodes", "ledger_checkpoints", "ledger_cosignatures")
_ABANDONED: list[Any] = []  # connections inherited over fork(): never closed from the child
_PG_LOCK_KEY = 0x5F1E_D6E7  # advisory lock that serializes schema creation on PostgreSQL
_CHUNK = 4096


@dataclass(frozen=True)
class LedgerRow:
    ledger_id: int
    origin: str
    verifier_keys: tuple[str, ...]
    format: int = FORMAT_VERSION


@dataclass(frozen=True)
class AppendResult:
    first_seq: int
    size: int
    root: bytes


@dataclass(frozen=True)
class StateRow:
    size: int
    root: bytes
    frontier: bytes
    format: int = FORMAT_VERSION


def _sqlite_listeners(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:  # every connection, the append one included
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (pysqlite's implicit BEGIN is deferred)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        row = cur.execute("PRAGMA journal_mode").fetchone()
        if row and str(row[0]).lower() not in ("wal", "memory"):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA secure_delete=ON")  # erased payloads are overwritten, not left in free pages
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("fiveplane_write") else "BEGIN")


class Store:
    """Database access for one or more ledgers in one database."""

    def __init__(self, url: str, *, busy_timeout: float = 30.0, create: bool = True, echo: bool = False) -> None:
        u = make_url(url)
        self.url = u
        self.dialect = u.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported ledger database {self.dialect!r}: use sqlite:/// or postgresql+psycopg://")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            db = u.database
            if not db or db == ":memory:" or db.startswith("file:"):
                raise ValueError(
                    "in-memory SQLite cannot hold evidence (it is lost with the process): give a file, e.g. sqlite:///.fiveplane/ledger.db"
                )
            if not create and not Path(db).exists():
                raise FileNotFoundError(f"no ledger database at {db}")
            Path(db).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": busy_timeout, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["pool_size"] = 4
        self.engine = create_engine(u, **kwargs)
        self._thread_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._lock_pid = 0
        self._lock_path: str | None = f"{u.database}.lock" if self.dialect == "sqlite" and fcntl is not None else None
        if self.dialect == "sqlite":
            _sqlite_listeners(self.engine, int(busy_timeout * 1000))
        p = "?" if self.dialect == "sqlite" else "%s"
        lock = "" if self.dialect == "sqlite" else " FOR UPDATE"
        self._sql = {
            "p": p,
            "state": f"SELECT size, frontier FROM ledger_state WHERE ledger_id = {p}{lock}",
            "leaves": "INSERT INTO ledger_leaves (ledger_id, seq, leaf_hash, envelope, kind, action_id, parent_id, session_id) VALUES ",
            "payloads": "INSERT INTO ledger_payloads (ledger_id, seq, salt, body) VALUES ",
            "nodes": "INSERT INTO ledger_nodes (ledger_id, level, idx, hash) VALUES ",
            "update": f"UPDATE ledger_state SET size = {p}, root = {p}, frontier = {p} WHERE ledger_id = {p}",
        }
        self._raw: Any = None  # the pool connection appends commit on (checked out once, see _writer)
        self._path: str | None = u.database if self.dialect == "sqlite" else None
        self._file_id: tuple[int, int] | None = None
        self._stmts: dict[tuple[str, int], str] = {}
        self._cosigs = True
        if create:
            self.ensure_schema()
        else:
            with self.engine.connect() as conn:
                found = inspect(conn)
                if not found.has_table("ledger_state"):
                    self.engine.dispose()
                    raise LookupError(f"no evidence ledger in {u.render_as_string(hide_password=True)}")
                self._cosigs = found.has_table("ledger_cosignatures")  # (ledgers made before witnessing lack it)
        if self._path is not None:
            st = os.stat(self._path)
            self._file_id = (st.st_dev, st.st_ino)

    def after_fork(self) -> None:
        """In a forked child: fresh locks and connections (the parent's are not ours to use)."""
        self._thread_lock = threading.Lock()
        self._lock_fd = None
        if self._raw is not None:  # never close the parent's connection from here: keep it alive, unused
            _ABANDONED.append(self._raw)
            self._raw = None
        self.engine.dispose(close=False)

    def dispose(self) -> None:
        self._drop_writer(invalidate=False)
        self.engine.dispose()
        if self._lock_fd is not None and self._lock_pid == os.getpid():
            os.close(self._lock_fd)
        self._lock_fd = None

    def file_problem(self) -> str | None:
        """Why appending must stop because the SQLite file opened is no longer the one at its path, or ``None``."""
        if self._file_id is None or self._path is None:
            return None
        try:
            st = os.stat(self._path)
        except OSError as exc:
            return f"the ledger database {self._path} is gone ({exc.strerror or exc}): it was deleted while the ledger was open"
        if (st.st_dev, st.st_ino) != self._file_id:
            return f"the ledger database {self._path} was replaced by another file while the ledger was open"
        return None

    # ---- connections ----------------------------------------------------------------------------

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialize writers across processes with an OS file lock next to a SQLite database.

        SQLite's own busy handler polls with sleeps of up to 100 ms, which ruins group commit when
        several processes write; waiters on ``flock`` wake as soon as the lock is released (and the
        kernel drops it if the holder dies). PostgreSQL locks the state row instead.
        """
        if self._lock_path is None:
            yield
            return
        with self._thread_lock:
            if self._lock_fd is None or self._lock_pid != os.getpid():  # (a forked child needs its own)
                self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
                self._lock_pid = os.getpid()
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def write_conn(self) -> Connection:
        """A connection whose transactions take the write lock up front (SQLite ``BEGIN IMMEDIATE``)."""
        return self.engine.connect().execution_options(fiveplane_write=True)

    def read_conn(self) -> Connection:
        return self.engine.connect()

    # ---- schema ---------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        with self._lock(), self.write_conn() as conn, conn.begin():
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            metadata.create_all(conn)
            self._create_triggers(conn)

    def _create_triggers(self, conn: Connection) -> None:
        if self.dialect == "sqlite":
            for table in _APPEND_ONLY:
                for op in ("UPDATE", "DELETE"):
                    conn.exec_driver_sql(
                        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                    )
            return
        existing = {r[0] for r in conn.execute(text("SELECT tgname FROM pg_trigger WHERE tgname LIKE 'ledger_%_append_only%'"))}
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
            )
        )
        for table in _APPEND_ONLY:
            if f"{table}_append_only" not in existing:
                conn.exec_driver_sql(
                    f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
                )
            if f"{table}_append_only_truncate" not in existing:
                conn.exec_driver_sql(
                    f"CREATE TRIGGER {table}_append_only_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
                )

    # ---- ledgers --------------------------------------------------------------------------------

    def ledgers(self) -> list[tuple[LedgerRow, int]]:
        with self.read_conn() as conn, conn.begin():
            rows = conn.execute(
                select(state_t.c.ledger_id, state_t.c.origin, state_t.c.verifier_keys, state_t.c.size).order_by(
                    state_t.c.ledger_id
                )
            ).all()
        return [(LedgerRow(r.ledger_id, r.origin, _keys(r.verifier_keys)), r.size) for r in rows]

    def open_ledger(self, origin: str, *, verifier_key: str | None, create: bool) -> LedgerRow:
        """The ledger row for ``origin``, created if missing (and ``create``); records a new verifier key.

        Without ``create`` and a key to record it only reads (no write lock), so auditors and
        witnesses can work with read-only database credentials."""
        if not create and not verifier_key:
            with self.read_conn() as conn, conn.begin():
                row = conn.execute(select(state_t).where(state_t.c.origin == origin)).first()
            if row is None:
                raise LookupError(f"no ledger with origin {origin!r} in {self.url.render_as_string(hide_password=True)}")
            return LedgerRow(row.ledger_id, row.origin, _keys(row.verifier_keys), int(row.format))
        for _ in range(3):
            with self._lock(), self.write_conn() as conn, conn.begin():
                row = conn.execute(select(state_t).where(state_t.c.origin == origin).with_for_update()).first()
                if row is not None:
                    keys = _keys(row.verifier_keys)
                    fmt = int(row.format)
                    if verifier_key and verifier_key not in keys and fmt == FORMAT_VERSION:  # never write an unknown format
                        keys = (*keys, verifier_key)
                        conn.execute(
                            update(state_t).where(state_t.c.ledger_id == row.ledger_id).values(verifier_keys="\n".join(keys))
                        )
                    return LedgerRow(row.ledger_id, row.origin, keys, fmt)
                if not create:
                    raise LookupError(f"no ledger with origin {origin!r} in {self.url.render_as_string(hide_password=True)}")
                try:
                    res = conn.execute(
                        insert(state_t).values(
                            origin=origin,
                            size=0,
                            root=EMPTY_ROOT,
                            frontier=b"",
                            verifier_keys=verifier_key or "",
                            format=FORMAT_VERSION,
                            created_at=datetime.now(UTC),
                        )
                    )
                except IntegrityError:  # another process created it first: read it again
                    continue
                assert res.inserted_primary_key is not None
                return LedgerRow(int(res.inserted_primary_key[0]), origin, (verifier_key,) if verifier_key else ())
        raise RuntimeError(f"could not open ledger {origin!r}")

    # ---- sequencing -----------------------------------------------------------------------------

    def _writer(self) -> Any:
        """The DB-API connection appends run on: checked out of SQLAlchemy's pool once (so it gets
        the same per-connection setup) and kept; each append is then a few plain ``execute`` calls."""
        if self._raw is None:
            self._raw = self.engine.raw_connection()
        return self._raw.driver_connection

    def _drop_writer(self, *, invalidate: bool) -> None:
        raw, self._raw = self._raw, None
        if raw is None:
            return
        try:
            if invalidate:
                raw.invalidate()
            else:
                raw.close()
        except Exception:  # noqa: BLE001 - a broken connection is being thrown away anyway
            pass

    def append(self, ledger_id: int, records: Sequence[PendingRecord]) -> AppendResult:
        """Sequence and store ``records`` in one transaction (see the module docstring).

        The inserts go straight to the driver as multi-row ``INSERT … VALUES`` statements (the hot
        path of every append): one statement per table and chunk, rather than one per row, which on
        SQLite also means one GIL release per chunk instead of one per row. A PostgreSQL connection
        found dead before the commit was sent (server restart, failover, idle timeout) is replaced
        and the transaction run once more; a failure during the commit is left to the caller, who
        checks whether it landed.
        """
        with self._lock():
            problem = self.file_problem()
            if problem is not None:
                raise LedgerUnavailable(problem)
            for attempt in (1, 2):
                conn = self._writer()
                stage: list[str] = []
                try:
                    result = self._append_txn(conn, ledger_id, records, stage)
                    break
                except BaseException as exc:
                    self._rollback(conn)
                    if attempt == 1 and not stage and self._disconnected(exc, conn):
                        self._drop_writer(invalidate=True)
                        continue
                    raise
            problem = self.file_problem()  # deleted during the commit: it went to an unlinked file
            if problem is not None:
                raise LedgerUnavailable(problem)
        return result

    def _append_txn(self, conn: Any, ledger_id: int, records: Sequence[PendingRecord], stage: list[str]) -> AppendResult:
        sql = self._sql
        sqlite = self.dialect == "sqlite"
        execute = conn.execute if sqlite else conn.cursor().execute
        if sqlite:
            execute("BEGIN IMMEDIATE")
        st = execute(sql["state"], (ledger_id,)).fetchone()
        if st is None:
            raise LookupError(f"ledger {ledger_id} has no state row")
        size = int(st[0])
        cr = CompactRange.decode(size, bytes(st[1]))
        new_nodes: list[tuple[int, int, bytes]] = []
        leaf_rows: list[tuple[Any, ...]] = []
        payload_rows: list[tuple[Any, ...]] = []
        append_leaf = cr.append
        for seq, r in enumerate(records, start=size):
            append_leaf(r.leaf_hash, new_nodes)
            leaf_rows.append((ledger_id, seq, r.leaf_hash, r.envelope, r.kind, r.action_id, r.parent_id, r.session_id))
            if r.body is not None:
                payload_rows.append((ledger_id, seq, r.salt, r.body))
        self._insert(execute, "leaves", 8, leaf_rows)
        self._insert(execute, "payloads", 4, payload_rows)
        self._insert(execute, "nodes", 4, [(ledger_id, lv, ix, h) for lv, ix, h in new_nodes])
        root = cr.root()
        execute(sql["update"], (cr.size, root, cr.encode(), ledger_id))
        stage.append("commit")  # from here a failure is ambiguous: never run again blindly
        if sqlite:
            execute("COMMIT")
        else:
            conn.commit()
        return AppendResult(size, cr.size, root)

    def _rollback(self, conn: Any) -> None:
        try:
            if self.dialect == "sqlite":
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            else:
                conn.rollback()
        except Exception:  # noqa: BLE001 - the connection is unusable: a fresh one next time
            self._drop_writer(invalidate=True)

    def _disconnected(self, exc: BaseException, conn: Any) -> bool:
        if self.dialect != "postgresql" or not isinstance(exc, Exception):
            return False
        try:
            return bool(self.engine.dialect.is_disconnect(exc, conn, None)) or bool(getattr(conn, "closed", False))  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - cannot tell: not a disconnect
            return False

    _CHUNKS = (256, 64, 16, 4, 1)  # few distinct statement shapes, so the driver's statement cache hits

    def _insert(self, execute: Callable[..., Any], table: str, width: int, rows: list[tuple[Any, ...]]) -> None:
        n = len(rows)
        if n == 1:  # the common case of a lone record: no flattening
            execute(self._stmt(table, width, 1), rows[0])
            return
        pos = 0
        for chunk in self._CHUNKS:
            while n - pos >= chunk:
                part = rows[pos : pos + chunk]
                execute(self._stmt(table, width, chunk), tuple(v for row in part for v in row))
                pos += chunk

    def _stmt(self, table: str, width: int, chunk: int) -> str:
        key = (table, chunk)
        sql = self._stmts.get(key)
        if sql is None:
            one = "(" + ", ".join([self._sql["p"]] * width) + ")"
            sql = self._stmts[key] = self._sql[table] + ", ".join([one] * chunk)
        return sql

    def committed_at(self, ledger_id: int, first_seq_at_least: int, leaf_hashes: Sequence[bytes]) -> int | None:
        """Where a batch already sits in the log (after an ambiguous commit failure), or ``None``."""
        if not leaf_hashes:
            return None
        with self.read_conn() as conn, conn.begin():
            hit = conn.execute(
                select(leaves_t.c.seq).where(
                    leaves_t.c.ledger_id == ledger_id,
                    leaves_t.c.seq >= first_seq_at_least,
                    leaves_t.c.leaf_hash == leaf_hashes[0],
                )
            ).first()
            if hit is None:
                return None
            seq = int(hit.seq)
            got = [
                r.leaf_hash
                for r in conn.execute(
                    select(leaves_t.c.leaf_hash)
                    .where(leaves_t.c.ledger_id == ledger_id, leaves_t.c.seq >= seq, leaves_t.c.seq < seq + len(leaf_hashes))
                    .order_by(leaves_t.c.seq)
                )
            ]
        return seq if list(got) == list(leaf_hashes) else None

    # ---- reads ----------------------------------------------------------------------------------

    def state(self, ledger_id: int, conn: Connection | None = None) -> StateRow:
        def run(c: Connection) -> StateRow:
            r = c.execute(
                select(state_t.c.size, state_t.c.root, state_t.c.frontier, state_t.c.format).where(
                    state_t.c.ledger_id == ledger_id
                )
            ).one()
            return StateRow(int(r.size), bytes(r.root), bytes(r.frontier), int(r.format))

        if conn is not None:
            return run(conn)
        with self.read_conn() as c, c.begin():
            return run(c)

    def subtrees(self, conn: Connection, ledger_id: int, coords: Iterable[Coord]) -> dict[Coord, bytes]:
        """Hashes of the complete subtrees ``coords`` (level 0 from the leaves, others from the nodes).

        One statement of primary-key point lookups joined by UNION ALL (a row-value ``IN`` list is not
        index-assisted on SQLite): a proof costs one round trip.
        """
        want = sorted(set(coords))
        if not want:
            return {}
        p = self._sql["p"]
        arms: list[str] = []
        args: list[int] = []
        for lv, idx in want:
            if lv == 0:
                arms.append(f"SELECT 0, seq, leaf_hash FROM ledger_leaves WHERE ledger_id = {p} AND seq = {p}")
                args += (ledger_id, idx)
            else:
                arms.append(f"SELECT level, idx, hash FROM ledger_nodes WHERE ledger_id = {p} AND level = {p} AND idx = {p}")
                args += (ledger_id, lv, idx)
        out = {(int(r[0]), int(r[1])): bytes(r[2]) for r in conn.exec_driver_sql(" UNION ALL ".join(arms), tuple(args))}
        missing = set(want) - out.keys()
        if missing:
            raise LookupError(f"tree nodes missing from the database: {sorted(missing)[:5]}")
        return out

    def leaf(self, ledger_id: int, seq: int) -> tuple[bytes, bytes] | None:
        with self.read_conn() as conn, conn.begin():
            r = conn.execute(
                select(leaves_t.c.leaf_hash, leaves_t.c.envelope).where(leaves_t.c.ledger_id == ledger_id, leaves_t.c.seq == seq)
            ).first()
        return (bytes(r.leaf_hash), bytes(r.envelope)) if r else None

    def iter_leaves(
        self, ledger_id: int, start: int = 0, end: int | None = None, *, conn: Connection | None = None, descending: bool = False
    ) -> Iterator[Any]:
        """Leaf rows in seq order (chunked by seq range, so it streams on every backend)."""
        if conn is None:
            with self.read_conn() as c, c.begin():
                yield from self.iter_leaves(ledger_id, start, end, conn=c, descending=descending)
            return
        if end is None:
            end = (
                int(
                    conn.execute(
                        select(func.coalesce(func.max(leaves_t.c.seq), -1)).where(leaves_t.c.ledger_id == ledger_id)
                    ).scalar_one()
                )
                + 1
            )
        cols = (
            leaves_t.c.seq,
            leaves_t.c.leaf_hash,
            leaves_t.c.envelope,
            leaves_t.c.kind,
            leaves_t.c.action_id,
            leaves_t.c.parent_id,
            leaves_t.c.session_id,
        )
        if descending:
            hi = end
            while hi > start:
                lo = max(start, hi - _CHUNK)
                yield from conn.execute(
                    select(*cols)
                    .where(leaves_t.c.ledger_id == ledger_id, leaves_t.c.seq >= lo, leaves_t.c.seq < hi)
                    .order_by(leaves_t.c.seq.desc())
                )
                hi = lo
            return
        lo = start
        while lo < end:
            hi = min(end, lo + _CHUNK)
            yield from conn.execute(
                select(*cols)
                .where(leaves_t.c.ledger_id == ledger_id, leaves_t.c.seq >= lo, leaves_t.c.seq < hi)
                .order_by(leaves_t.c.seq)
            )
            lo = hi

    def max_seq(self, ledger_id: int, conn: Connection) -> int:
        return int(
            conn.execute(
                select(func.coalesce(func.max(leaves_t.c.seq), -1)).where(leaves_t.c.ledger_id == ledger_id)
            ).scalar_one()
        )

    def payload_rows(self, ledger_id: int, lo: int, hi: int, conn: Connection) -> dict[int, tuple[bytes, bytes]]:
        rows = conn.execute(
            select(payloads_t.c.seq, payloads_t.c.salt, payloads_t.c.body).where(
                payloads_t.c.ledger_id == ledger_id, payloads_t.c.seq >= lo, payloads_t.c.seq < hi
            )
        )
        return {int(r.seq): (bytes(r.salt), bytes(r.body)) for r in rows}

    def payloads_for(self, ledger_id: int, seqs: Sequence[int], conn: Connection) -> dict[int, tuple[bytes, bytes]]:
        out: dict[int, tuple[bytes, bytes]] = {}
        for i in range(0, len(seqs), 500):
            part = list(seqs[i : i + 500])
            rows = conn.execute(
                select(payloads_t.c.seq, payloads_t.c.salt, payloads_t.c.body).where(
                    payloads_t.c.ledger_id == ledger_id, payloads_t.c.seq.in_(part)
                )
            )
            out.update({int(r.seq): (bytes(r.salt), bytes(r.body)) for r in rows})
        return out

    def iter_nodes(self, ledger_id: int, level: int, conn: Connection) -> Iterator[tuple[int, bytes]]:
        last = -1
        while True:
            rows = conn.execute(
                select(nodes_t.c.idx, nodes_t.c.hash)
                .where(nodes_t.c.ledger_id == ledger_id, nodes_t.c.level == level, nodes_t.c.idx > last)
                .order_by(nodes_t.c.idx)
                .limit(_CHUNK)
            ).all()
            if not rows:
                return
            for r in rows:
                yield int(r.idx), bytes(r.hash)
            last = int(rows[-1].idx)

    def max_node_level(self, ledger_id: int, conn: Connection) -> int:
        return int(
            conn.execute(select(func.coalesce(func.max(nodes_t.c.level), 0)).where(nodes_t.c.ledger_id == ledger_id)).scalar_one()
        )

    def rows_for_actions(self, ledger_id: int, action_ids: Sequence[str], *, children: bool = False) -> list[Any]:
        col = leaves_t.c.parent_id if children else leaves_t.c.action_id
        with self.read_conn() as conn, conn.begin():
            return list(
                conn.execute(
                    select(
                        leaves_t.c.seq,
                        leaves_t.c.leaf_hash,
                        leaves_t.c.envelope,
                        leaves_t.c.kind,
                        leaves_t.c.action_id,
                        leaves_t.c.parent_id,
                        leaves_t.c.session_id,
                    )
                    .where(leaves_t.c.ledger_id == ledger_id, col.in_(list(action_ids)))
                    .order_by(leaves_t.c.seq)
                )
            )

    def seqs_by_kind(self, ledger_id: int, kinds: Sequence[str], conn: Connection) -> Iterator[Any]:
        lo, end = 0, self.max_seq(ledger_id, conn) + 1
        cols = (leaves_t.c.seq, leaves_t.c.envelope, leaves_t.c.kind, leaves_t.c.action_id)
        while lo < end:
            hi = min(end, lo + _CHUNK)
            yield from conn.execute(
                select(*cols)
                .where(
                    leaves_t.c.ledger_id == ledger_id, leaves_t.c.seq >= lo, leaves_t.c.seq < hi, leaves_t.c.kind.in_(list(kinds))
                )
                .order_by(leaves_t.c.seq)
            )
            lo = hi

    # ---- checkpoints ----------------------------------------------------------------------------

    def checkpoints(self, ledger_id: int, conn: Connection | None = None) -> list[tuple[int, bytes, str]]:
        def run(c: Connection) -> list[tuple[int, bytes, str]]:
            rows = c.execute(
                select(checkpoints_t.c.size, checkpoints_t.c.root, checkpoints_t.c.note)
                .where(checkpoints_t.c.ledger_id == ledger_id)
                .order_by(checkpoints_t.c.size)
            )
            return [(int(r.size), bytes(r.root), str(r.note)) for r in rows]

        if conn is not None:
            return run(conn)
        with self.read_conn() as c, c.begin():
            return run(c)

    def latest_checkpoint(self, ledger_id: int, conn: Connection) -> tuple[int, bytes, str] | None:
        r = conn.execute(
            select(checkpoints_t.c.size, checkpoints_t.c.root, checkpoints_t.c.note)
            .where(checkpoints_t.c.ledger_id == ledger_id)
            .order_by(checkpoints_t.c.size.desc())
            .limit(1)
        ).first()
        return (int(r.size), bytes(r.root), str(r.note)) if r else None

    def insert_checkpoint(self, ledger_id: int, size: int, root: bytes, note: str, *, after: int | None) -> bool:
        """Store a signed checkpoint if the latest stored one is still at size ``after`` (``None``: none).

        Returns ``False`` (and stores nothing) when another writer stored a checkpoint in between:
        the caller re-reads and signs again, so checkpoint sequence numbers never fork.
        """
        values = {"ledger_id": ledger_id, "size": size, "root": root, "note": note, "created_at": datetime.now(UTC)}
        with self._lock(), self.write_conn() as conn, conn.begin():
            if self.dialect == "postgresql":  # the state row lock serializes checkpoint writers too
                conn.execute(select(state_t.c.size).where(state_t.c.ledger_id == ledger_id).with_for_update())
            latest = self.latest_checkpoint(ledger_id, conn)
            if (latest[0] if latest else None) != after:
                return False
            conn.execute(insert(checkpoints_t).values(**values))
        return True

    def cosignatures(self, ledger_id: int, size: int, conn: Connection) -> list[str]:
        """Witness signature lines stored for the checkpoint at ``size``."""
        if not self._cosigs:
            return []
        rows = conn.execute(
            select(cosignatures_t.c.line)
            .where(cosignatures_t.c.ledger_id == ledger_id, cosignatures_t.c.size == size)
            .order_by(cosignatures_t.c.key_name, cosignatures_t.c.key_id)
        )
        return [str(r.line) for r in rows]

    def insert_cosignatures(self, ledger_id: int, size: int, lines: Sequence[tuple[str, bytes, str]]) -> int:
        """Store ``(key name, key ID, signature line)`` rows for the checkpoint at ``size`` (known ones are kept)."""
        if not lines:
            return 0
        rows = [
            {"ledger_id": ledger_id, "size": size, "key_name": n, "key_id": k, "line": line, "created_at": datetime.now(UTC)}
            for n, k, line in lines
        ]
        if not self._cosigs:  # a ledger from before witnessing, opened without create: add the table now
            self.ensure_schema()
            self._cosigs = True
        stmt = (
            sqlite_dialect.insert(cosignatures_t) if self.dialect == "sqlite" else pg_dialect.insert(cosignatures_t)
        ).on_conflict_do_nothing()
        with self._lock(), self.write_conn() as conn, conn.begin():
            res = conn.execute(stmt, rows)
        return int(res.rowcount or 0)

    # ---- erasure --------------------------------------------------------------------------------

    def delete_payloads(self, ledger_id: int, seqs: Sequence[int]) -> int:
        """Delete payload rows. On SQLite the freed pages are zeroed (``secure_delete``) and the WAL is
        checkpointed and truncated so the erased bytes leave the files; PostgreSQL keeps dead tuples
        until ``VACUUM`` (and in its WAL archive and backups)."""
        with self._lock(), self.write_conn() as conn, conn.begin():
            res = conn.execute(delete(payloads_t).where(payloads_t.c.ledger_id == ledger_id, payloads_t.c.seq.in_(list(seqs))))
            count = int(res.rowcount or 0)
        if self.dialect == "sqlite":
            raw = self.engine.raw_connection()
            try:
                raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
            finally:
                raw.close()
        return count


def _keys(blob: str | None) -> tuple[str, ...]:
    return tuple(k for k in (blob or "").split("\n") if k.strip())
