"""Tamper classes: each one is detected by `fiveplane audit verify --key` (exit 1, first bad seq named).

The attacker here has the database (and drops or disables the append-only triggers first); what they
do not have is the signing key, nor the checkpoints kept elsewhere. The table runs on SQLite and on
PostgreSQL (FIVEPLANE_TEST_PG_URL; never skipped under CI), where the ledger shares its database
with others and every statement is confined to its ``ledger_id``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from fiveplane._cli import app
from fiveplane._ledger import Ed25519Signer, NoteVerifier, open_ledger
from fiveplane._ledger import _merkle as m
from fiveplane._ledger._note import Checkpoint
from tests.ledger.conftest import fill, pg_url_or_skip, raw_sqlite

runner = CliRunner()
N = 40
CHECKPOINTS = (16, 32, N)
CHECKPOINT_AT = 32
_TRIGGERED = ("ledger_leaves", "ledger_nodes", "ledger_checkpoints", "ledger_cosignatures")


@dataclass
class Attacker:
    """SQL on the ledger's tables with the append-only triggers out of the way (named parameters,
    ``:lid`` is the ledger's id), plus the ledger's URL and origin for keyless writers."""

    conn: sa.Connection
    lid: int
    url: str
    origin: str

    def rows(self, sql: str, **params: Any) -> list[Any]:
        return list(self.conn.execute(sa.text(sql), {"lid": self.lid, **params}))

    def one(self, sql: str, **params: Any) -> Any:
        return self.rows(sql, **params)[0][0]

    def run(self, sql: str, rows: list[dict[str, Any]] | None = None, **params: Any) -> None:
        if rows is not None:
            self.conn.execute(sa.text(sql), [{"lid": self.lid, **r} for r in rows])
        else:
            self.conn.execute(sa.text(sql), {"lid": self.lid, **params})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    return sqlite_url if request.param == "sqlite" else pg_url_or_skip()


@pytest.fixture
def built(backend: str, signer: Ed25519Signer) -> str:
    """A ledger of N entries with signed checkpoints #1, #2, #3 at sizes 16, 32 and N."""
    with open_ledger(backend, key=signer, checkpoint_interval=None, checkpoint_every=None) as led:
        done = 0
        for size in CHECKPOINTS:
            fill(led, size - done, start=done)
            led.checkpoint()
            done = size
    return backend


@pytest.fixture
def attacker(built: str, origin: str) -> Iterator[Attacker]:
    with open_ledger(built, origin=origin, create=False) as led:
        lid = led.ledger_id
    engine = sa.create_engine(built, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                for (name,) in conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).all():
                    conn.execute(sa.text(f"DROP TRIGGER {name}"))
            else:
                for table in _TRIGGERED:
                    conn.execute(sa.text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            try:
                yield Attacker(conn, lid, built, origin)
            finally:
                if engine.dialect.name != "sqlite":
                    for table in _TRIGGERED:
                        conn.execute(sa.text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
    finally:
        engine.dispose()


def verify_cli(url: str, verifier: NoteVerifier, *extra: str, origin: str | None = None) -> tuple[int, str]:
    where = ["--origin", origin] if origin else []
    result = runner.invoke(app, ["audit", "verify", "--db", url, *where, "--key", str(verifier), *extra])
    return result.exit_code, result.output


def flip(a: Attacker, table: str, column: str, where: str, offset: int = 5) -> None:
    value = bytearray(a.one(f"SELECT {column} FROM {table} WHERE ledger_id = :lid AND {where}"))
    value[offset] ^= 0x01
    a.run(f"UPDATE {table} SET {column} = :v WHERE ledger_id = :lid AND {where}", v=bytes(value))


def rewrite_tree(a: Attacker) -> None:
    """Recompute nodes and the state row from the (altered) leaves: a consistent forgery."""
    hashes = [bytes(r[0]) for r in a.rows("SELECT leaf_hash FROM ledger_leaves WHERE ledger_id = :lid ORDER BY seq")]
    cr = m.CompactRange()
    nodes: list[tuple[int, int, bytes]] = []
    for h in hashes:
        cr.append(h, nodes)
    a.run("DELETE FROM ledger_nodes WHERE ledger_id = :lid")
    if nodes:
        a.run(
            "INSERT INTO ledger_nodes (ledger_id, level, idx, hash) VALUES (:lid, :lv, :ix, :h)",
            [{"lv": lv, "ix": i, "h": h} for lv, i, h in nodes],
        )
    a.run(
        "UPDATE ledger_state SET size = :s, root = :r, frontier = :f WHERE ledger_id = :lid",
        s=cr.size,
        r=cr.root(),
        f=cr.encode(),
    )


def _leaf(a: Attacker) -> None:
    flip(a, "ledger_leaves", "leaf_hash", "seq = 13")


def _envelope(a: Attacker) -> None:
    flip(a, "ledger_leaves", "envelope", "seq = 13", offset=40)


def _payload(a: Attacker) -> None:
    flip(a, "ledger_payloads", "body", "seq = 13", offset=3)


def _salt(a: Attacker) -> None:
    flip(a, "ledger_payloads", "salt", "seq = 13", offset=0)


def _node(a: Attacker) -> None:
    flip(a, "ledger_nodes", "hash", "level = 2 AND idx = 3")  # covers entries 12..15


def _state_root(a: Attacker) -> None:
    flip(a, "ledger_state", "root", "1 = 1")


def _state_size(a: Attacker) -> None:
    a.run("UPDATE ledger_state SET size = size + 1 WHERE ledger_id = :lid")


def _state_format(a: Attacker) -> None:
    a.run("UPDATE ledger_state SET format = 2 WHERE ledger_id = :lid")


def _deleted_leaf(a: Attacker) -> None:
    a.run("DELETE FROM ledger_leaves WHERE ledger_id = :lid AND seq = 13")


def _deleted_payload(a: Attacker) -> None:
    a.run("DELETE FROM ledger_payloads WHERE ledger_id = :lid AND seq = 13")


def _deleted_node(a: Attacker) -> None:
    a.run("DELETE FROM ledger_nodes WHERE ledger_id = :lid AND level = 2 AND idx = 3")


def _rewrite_entry(a: Attacker, seq: int) -> None:
    env = bytearray(a.one("SELECT envelope FROM ledger_leaves WHERE ledger_id = :lid AND seq = :s", s=seq))
    env[-4] ^= 0x01
    a.run(
        "UPDATE ledger_leaves SET envelope = :e, leaf_hash = :h WHERE ledger_id = :lid AND seq = :s",
        e=bytes(env),
        h=m.hash_leaf(bytes(env)),
        s=seq,
    )
    rewrite_tree(a)


def _rewritten_history(a: Attacker) -> None:
    """Change entry 13 and recompute every hash above it: only the signed checkpoints can tell."""
    _rewrite_entry(a, 13)


def _rewritten_history_checkpoints_deleted(a: Attacker) -> None:
    """... and delete the checkpoints that would tell: then nothing signed vouches for anything."""
    _rewrite_entry(a, 13)
    a.run("DELETE FROM ledger_checkpoints WHERE ledger_id = :lid")


def _rewritten_tail_last_checkpoint_deleted(a: Attacker) -> None:
    """Rewrite entry 35 and delete checkpoint #3 (size 40): #1 and #2 still verify, 32.. are uncovered."""
    _rewrite_entry(a, 35)
    a.run("DELETE FROM ledger_checkpoints WHERE ledger_id = :lid AND size = :n", n=N)


def _middle_checkpoint_deleted(a: Attacker) -> None:
    a.run("DELETE FROM ledger_checkpoints WHERE ledger_id = :lid AND size = 32")


def _truncated(a: Attacker) -> None:
    """Drop the last 5 entries and make the state row agree; the checkpoint at size 40 remains."""
    a.run("DELETE FROM ledger_leaves WHERE ledger_id = :lid AND seq >= 35")
    a.run("DELETE FROM ledger_payloads WHERE ledger_id = :lid AND seq >= 35")
    rewrite_tree(a)


def _fabricated(a: Attacker) -> None:
    """Throw the ledger away and write a new one under the same origin, without the key."""
    for table in ("ledger_leaves", "ledger_payloads", "ledger_nodes", "ledger_checkpoints"):
        a.run(f"DELETE FROM {table} WHERE ledger_id = :lid")
    a.run("UPDATE ledger_state SET size = 0, root = :r, frontier = :f WHERE ledger_id = :lid", r=m.EMPTY_ROOT, f=b"")
    with open_ledger(a.url, origin=a.origin, create=False) as led:
        fill(led, 12)


def _keyless_approval(a: Attacker) -> None:
    """A forged approval appended by a writer without the key (through the normal API)."""
    with open_ledger(a.url, origin=a.origin, create=False) as led:
        led.record("approval.approved", {"approval_id": "apr-forged", "approved_by": "mallory", "digest": "sha256:00"})


def _keyless_erasure(a: Attacker) -> None:
    with open_ledger(a.url, origin=a.origin, create=False) as led:
        led.erase([3], reason="covering tracks")


TAMPERS: dict[str, tuple[Callable[[Attacker], None], int | None, str]] = {
    # name: (tamper, expected first bad seq, expected check)
    "flipped leaf hash": (_leaf, 13, "leaf"),
    "flipped envelope": (_envelope, 13, "leaf"),
    "flipped payload": (_payload, 13, "payload"),
    "flipped payload salt": (_salt, 13, "payload"),
    "flipped tree node": (_node, 12, "node"),
    "flipped state root": (_state_root, None, "state"),
    "state size": (_state_size, 40, "state"),
    "state format": (_state_format, None, "state"),
    "deleted leaf row": (_deleted_leaf, 13, "sequence"),
    "deleted payload row": (_deleted_payload, 13, "payload"),
    "deleted tree node": (_deleted_node, 12, "node"),
    "rewritten history": (_rewritten_history, 0, "checkpoint"),
    "rewritten history, checkpoints deleted": (_rewritten_history_checkpoints_deleted, 0, "coverage"),
    "rewritten tail, last checkpoint deleted": (_rewritten_tail_last_checkpoint_deleted, 32, "coverage"),
    "checkpoint row deleted (gap)": (_middle_checkpoint_deleted, 16, "checkpoint"),
    "truncation": (_truncated, 35, "checkpoint"),
    "fabricated ledger, same origin, no key": (_fabricated, 0, "coverage"),
    "approval appended without the key": (_keyless_approval, N, "coverage"),
    "erasure without the key": (_keyless_erasure, N, "coverage"),
}


def test_untampered_ledger_verifies(built: str, verifier: NoteVerifier, origin: str) -> None:
    code, out = verify_cli(built, verifier, origin=origin)
    assert code == 0, out
    assert "OK" in out and f"{N} entries" in out and "warning" not in out
    with open_ledger(built, origin=origin, create=False) as led:
        report = led.verify(keys=[verifier])
    assert report.ok and report.signed_size == N and report.uncovered == 0 and report.latest_checkpoint_number == 3


@pytest.mark.parametrize("name", list(TAMPERS))
def test_tamper_is_detected(name: str, built: str, attacker: Attacker, verifier: NoteVerifier, origin: str) -> None:
    tamper, first_bad, check = TAMPERS[name]
    tamper(attacker)
    with open_ledger(built, origin=origin, create=False, checkpoint_interval=None) as led:
        report = led.verify(keys=[verifier])
    assert not report.ok
    assert report.first_bad_seq == first_bad, report.problems
    assert report.first_problem is not None and report.first_problem.check == check, report.problems
    code, out = verify_cli(built, verifier, origin=origin)
    assert code == 1, out
    if first_bad is not None:
        assert f"first bad sequence number {first_bad}:" in out
    assert "FAILED" in out


def test_the_forgeries_name_what_is_wrong(
    built: str, attacker: Attacker, verifier: NoteVerifier, origin: str, tmp_path: Path
) -> None:
    saved = tmp_path / "saved.checkpoint"
    assert runner.invoke(app, ["audit", "checkpoint", "--db", built, "--origin", origin, "--out", str(saved)]).exit_code == 0
    _keyless_approval(attacker)
    _keyless_erasure(attacker)
    for extra in ((), ("--against", str(saved))):  # consistent with the saved checkpoint, and still not vouched for
        code, out = verify_cli(built, verifier, *extra, origin=origin)
        assert code == 1 and f"first bad sequence number {N}:" in out, out
        assert f"entries {N}–{N + 1} are not covered" in out and f"{N} approval.approved, {N + 1} erasure" in out
    _middle_checkpoint_deleted(attacker)
    _state_format(attacker)
    code, out = verify_cli(built, verifier, origin=origin)
    assert "checkpoint #2 is missing" in out and "unknown ledger format 2" in out


@pytest.fixture
def built_sqlite(sqlite_url: str, signer: Ed25519Signer) -> str:
    with open_ledger(sqlite_url, key=signer, checkpoint_interval=None, checkpoint_every=None) as led:
        fill(led, CHECKPOINT_AT)
        led.checkpoint()
        fill(led, N - CHECKPOINT_AT, start=CHECKPOINT_AT)
        led.checkpoint()
    return sqlite_url


def sqlite_rewrite_tree(conn: Any) -> None:
    hashes = [r[0] for r in conn.execute("SELECT leaf_hash FROM ledger_leaves ORDER BY seq")]
    cr = m.CompactRange()
    nodes: list[tuple[int, int, bytes]] = []
    for h in hashes:
        cr.append(h, nodes)
    conn.execute("DELETE FROM ledger_nodes")
    conn.executemany(
        "INSERT INTO ledger_nodes (ledger_id, level, idx, hash) VALUES (1, ?, ?, ?)", [(lv, i, h) for lv, i, h in nodes]
    )
    conn.execute("UPDATE ledger_state SET size = ?, root = ?, frontier = ?", (cr.size, cr.root(), cr.encode()))


def test_checkpoint_resigned_with_another_key(built_sqlite: str, db_path: Path, verifier: NoteVerifier, origin: str) -> None:
    built = built_sqlite
    conn = raw_sqlite(db_path)
    size, root = conn.execute("SELECT size, root FROM ledger_checkpoints ORDER BY size LIMIT 1").fetchone()
    forged = Checkpoint(origin, size, root).signed([Ed25519Signer.generate(origin)])  # same name, other key
    conn.execute("UPDATE ledger_checkpoints SET note = ? WHERE size = ?", (forged.note, size))
    code, out = verify_cli(built, verifier)
    assert code == 1 and "no signature from a trusted key" in out
    # even trusting only the keys recorded in the database (which the attacker did not touch here)
    with open_ledger(built, create=False) as led:
        report = led.verify()
    assert not report.ok and report.first_problem is not None and report.first_problem.check == "checkpoint"


def test_truncation_to_a_checkpoint_with_the_later_ones_removed_needs_a_checkpoint_kept_elsewhere(
    built_sqlite: str, db_path: Path, verifier: NoteVerifier, tmp_path: Path
) -> None:
    built = built_sqlite
    """The one cut the database alone cannot show: back to exactly a signed checkpoint, every later
    checkpoint deleted (no gap in the numbers remains, nothing is uncovered)."""
    saved = tmp_path / "offsite.checkpoint"
    assert runner.invoke(app, ["audit", "checkpoint", "--db", built, "--out", str(saved)]).exit_code == 0
    conn = raw_sqlite(db_path)
    conn.execute(f"DELETE FROM ledger_leaves WHERE seq >= {CHECKPOINT_AT}")
    conn.execute(f"DELETE FROM ledger_payloads WHERE seq >= {CHECKPOINT_AT}")
    sqlite_rewrite_tree(conn)
    conn.execute(f"DELETE FROM ledger_checkpoints WHERE size > {CHECKPOINT_AT}")
    assert verify_cli(built, verifier)[0] == 0  # the database alone now looks fine...
    code, out = verify_cli(built, verifier, "--against", str(saved))
    assert code == 1, out  # ...but not against the checkpoint kept off the box
    assert f"first bad sequence number {CHECKPOINT_AT}:" in out and "entries were removed" in out


def test_restored_older_copy_is_detected_against_a_later_checkpoint(
    sqlite_url: str, db_path: Path, signer: Ed25519Signer, verifier: NoteVerifier, tmp_path: Path
) -> None:
    backup = tmp_path / "backup.db"
    with open_ledger(sqlite_url, key=signer, checkpoint_interval=None) as led:
        fill(led, 20)
        led.checkpoint()
    shutil.copy(db_path, backup)  # closed cleanly: the WAL was checkpointed into the main file
    with open_ledger(sqlite_url, key=signer, checkpoint_interval=None) as led:
        fill(led, 25, start=20)
        later = led.checkpoint()
    saved = tmp_path / "later.checkpoint"
    saved.write_text(later.note or "")
    for suffix in ("-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, db_path)  # the restore
    assert verify_cli(sqlite_url, verifier)[0] == 0  # a consistent, signed, older state
    code, out = verify_cli(sqlite_url, verifier, "--against", str(saved))
    assert code == 1 and "first bad sequence number 20:" in out and "restored older copy" in out


def test_against_a_consistent_earlier_checkpoint_passes(
    built_sqlite: str, verifier: NoteVerifier, tmp_path: Path, signer: Ed25519Signer
) -> None:
    built = built_sqlite
    saved = tmp_path / "cp"
    assert runner.invoke(app, ["audit", "checkpoint", "--db", built, "--out", str(saved)]).exit_code == 0
    with open_ledger(built, key=signer, checkpoint_interval=None) as led:
        fill(led, 9, start=N)
        led.checkpoint()
        report = led.verify(keys=[verifier], against=saved.read_text())
    assert report.ok and report.against is not None and report.against["root_matches"] and report.against["consistency_proof"] > 0
    code, out = verify_cli(built, verifier, "--against", str(saved))
    assert code == 0 and "consistent" in out


def test_against_a_checkpoint_of_another_log_or_key_fails(built_sqlite: str, verifier: NoteVerifier, tmp_path: Path) -> None:
    built = built_sqlite
    other = Ed25519Signer.generate("other.example/log")
    bad = tmp_path / "cp"
    bad.write_text(Checkpoint("other.example/log", 3, b"\0" * 32).signed([other]).note or "")
    code, out = verify_cli(built, verifier, "--against", str(bad))
    assert code == 1 and "not valid" in out
