"""Tamper classes: each one is detected by `fiveplane audit verify` (exit 1, first bad seq named).

The attacker here has the database file (and drops the append-only triggers first); what they do not
have is the signing key, nor the checkpoints kept elsewhere.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fiveplane._cli import app
from fiveplane._ledger import Ed25519Signer, NoteVerifier, open_ledger
from fiveplane._ledger import _merkle as m
from fiveplane._ledger._note import Checkpoint
from tests.ledger.conftest import fill, raw_sqlite

runner = CliRunner()
N = 40
CHECKPOINT_AT = 32


@pytest.fixture
def built(sqlite_url: str, signer: Ed25519Signer) -> str:
    """A ledger of N entries with a signed checkpoint at size 32 and one at size N."""
    with open_ledger(sqlite_url, key=signer, checkpoint_interval=None) as led:
        fill(led, CHECKPOINT_AT)
        led.checkpoint()
        fill(led, N - CHECKPOINT_AT, start=CHECKPOINT_AT)
        led.checkpoint()
    return sqlite_url


def verify_cli(url: str, verifier: NoteVerifier, *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", "verify", "--db", url, "--key", str(verifier), *extra])
    return result.exit_code, result.output


def flip(conn: sqlite3.Connection, table: str, column: str, where: str, offset: int = 5) -> None:
    value = bytearray(conn.execute(f"SELECT {column} FROM {table} WHERE {where}").fetchone()[0])
    value[offset] ^= 0x01
    conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (bytes(value),))


def rewrite_tree(conn: sqlite3.Connection) -> None:
    """Recompute nodes and the state row from the (altered) leaves: a consistent forgery."""
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


def _leaf(c: sqlite3.Connection) -> None:
    flip(c, "ledger_leaves", "leaf_hash", "seq = 13")


def _envelope(c: sqlite3.Connection) -> None:
    flip(c, "ledger_leaves", "envelope", "seq = 13", offset=40)


def _payload(c: sqlite3.Connection) -> None:
    flip(c, "ledger_payloads", "body", "seq = 13", offset=3)


def _salt(c: sqlite3.Connection) -> None:
    flip(c, "ledger_payloads", "salt", "seq = 13", offset=0)


def _node(c: sqlite3.Connection) -> None:
    flip(c, "ledger_nodes", "hash", "level = 2 AND idx = 3")  # covers entries 12..15


def _state_root(c: sqlite3.Connection) -> None:
    flip(c, "ledger_state", "root", "ledger_id = 1")


def _state_size(c: sqlite3.Connection) -> None:
    c.execute("UPDATE ledger_state SET size = size + 1")


def _deleted_leaf(c: sqlite3.Connection) -> None:
    c.execute("DELETE FROM ledger_leaves WHERE seq = 13")


def _deleted_payload(c: sqlite3.Connection) -> None:
    c.execute("DELETE FROM ledger_payloads WHERE seq = 13")


def _deleted_node(c: sqlite3.Connection) -> None:
    c.execute("DELETE FROM ledger_nodes WHERE level = 2 AND idx = 3")


def _rewritten_history(c: sqlite3.Connection) -> None:
    """Change entry 13 and recompute every hash above it: only the signed checkpoints can tell."""
    env = bytearray(c.execute("SELECT envelope FROM ledger_leaves WHERE seq = 13").fetchone()[0])
    env[-4] ^= 0x01
    c.execute("UPDATE ledger_leaves SET envelope = ?, leaf_hash = ? WHERE seq = 13", (bytes(env), m.hash_leaf(bytes(env))))
    rewrite_tree(c)


def _truncated(c: sqlite3.Connection) -> None:
    """Drop the last 5 entries and make the state row agree; the checkpoint at size 40 remains."""
    c.execute("DELETE FROM ledger_leaves WHERE seq >= 35")
    c.execute("DELETE FROM ledger_payloads WHERE seq >= 35")
    rewrite_tree(c)


TAMPERS: dict[str, tuple[Callable[[sqlite3.Connection], None], int | None, str]] = {
    # name: (tamper, expected first bad seq, expected check)
    "flipped leaf hash": (_leaf, 13, "leaf"),
    "flipped envelope": (_envelope, 13, "leaf"),
    "flipped payload": (_payload, 13, "payload"),
    "flipped payload salt": (_salt, 13, "payload"),
    "flipped tree node": (_node, 12, "node"),
    "flipped state root": (_state_root, None, "state"),
    "state size": (_state_size, 40, "state"),
    "deleted leaf row": (_deleted_leaf, 13, "sequence"),
    "deleted payload row": (_deleted_payload, 13, "payload"),
    "deleted tree node": (_deleted_node, 12, "node"),
    "rewritten history": (_rewritten_history, 0, "checkpoint"),
    "truncation": (_truncated, 35, "checkpoint"),
}


def test_untampered_ledger_verifies(built: str, verifier: NoteVerifier) -> None:
    code, out = verify_cli(built, verifier)
    assert code == 0, out
    assert "OK" in out and f"{N} entries" in out


@pytest.mark.parametrize("name", list(TAMPERS))
def test_tamper_is_detected(name: str, built: str, db_path: Path, verifier: NoteVerifier) -> None:
    tamper, first_bad, check = TAMPERS[name]
    tamper(raw_sqlite(db_path))
    with open_ledger(built, create=False, checkpoint_interval=None) as led:
        report = led.verify(keys=[verifier])
    assert not report.ok
    assert report.first_bad_seq == first_bad, report.problems
    assert report.first_problem is not None and report.first_problem.check == check, report.problems
    code, out = verify_cli(built, verifier)
    assert code == 1, out
    if first_bad is not None:
        assert f"first bad sequence number {first_bad}:" in out
    assert "FAILED" in out


def test_checkpoint_resigned_with_another_key(built: str, db_path: Path, verifier: NoteVerifier, origin: str) -> None:
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
    built: str, db_path: Path, verifier: NoteVerifier, tmp_path: Path
) -> None:
    """The one cut the database alone cannot show: back to exactly a signed checkpoint, every later
    checkpoint deleted (no gap in the numbers remains, nothing is uncovered)."""
    saved = tmp_path / "offsite.checkpoint"
    assert runner.invoke(app, ["audit", "checkpoint", "--db", built, "--out", str(saved)]).exit_code == 0
    conn = raw_sqlite(db_path)
    conn.execute(f"DELETE FROM ledger_leaves WHERE seq >= {CHECKPOINT_AT}")
    conn.execute(f"DELETE FROM ledger_payloads WHERE seq >= {CHECKPOINT_AT}")
    rewrite_tree(conn)
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
    built: str, verifier: NoteVerifier, tmp_path: Path, signer: Ed25519Signer
) -> None:
    saved = tmp_path / "cp"
    assert runner.invoke(app, ["audit", "checkpoint", "--db", built, "--out", str(saved)]).exit_code == 0
    with open_ledger(built, key=signer, checkpoint_interval=None) as led:
        fill(led, 9, start=N)
        led.checkpoint()
        report = led.verify(keys=[verifier], against=saved.read_text())
    assert report.ok and report.against is not None and report.against["root_matches"] and report.against["consistency_proof"] > 0
    code, out = verify_cli(built, verifier, "--against", str(saved))
    assert code == 0 and "consistent" in out


def test_against_a_checkpoint_of_another_log_or_key_fails(built: str, verifier: NoteVerifier, tmp_path: Path) -> None:
    other = Ed25519Signer.generate("other.example/log")
    bad = tmp_path / "cp"
    bad.write_text(Checkpoint("other.example/log", 3, b"\0" * 32).signed([other]).note or "")
    code, out = verify_cli(built, verifier, "--against", str(bad))
    assert code == 1 and "not valid" in out
