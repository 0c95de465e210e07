"""Checkpoints writers sign by themselves (every N entries, every T seconds, at close), their sequence
numbers, and what `verify` makes of entries no signed checkpoint covers (fail with --key, warn without,
--grace for a live ledger's fresh tail)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fiveplane._cli import app
from fiveplane._ledger import Ed25519Signer, Ledger, LedgerError, LedgerUnavailable, NoteVerifier, open_ledger
from fiveplane._ledger._note import Checkpoint
from fiveplane._ledger._records import make_record
from tests.ledger.conftest import fill, raw_sqlite

runner = CliRunner()


def numbers(led: Ledger) -> list[tuple[int, int | None]]:
    """``(size, number)`` of every stored checkpoint, in size order."""
    return [(size, Checkpoint.parse_unverified(note).number) for size, _, note in led.store.checkpoints(led.ledger_id)]


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def test_a_writer_with_the_key_signs_every_n_entries_and_at_close(sqlite_url: str, signer: Ed25519Signer) -> None:
    led = open_ledger(sqlite_url, key=signer, checkpoint_every=10, checkpoint_interval=None)

    def latest() -> int:
        return (led.latest_checkpoint() or Checkpoint("", -1, b"")).size

    def append(n: int, start: int) -> None:
        for i in range(start, start + n):
            led.record_event("test.event", {"i": i})  # durable: committed on this thread

    append(10, 0)
    wait_for(lambda: latest() == 10)  # signed on the flusher once 10 entries are uncovered
    append(9, 10)
    time.sleep(0.2)
    assert latest() == 10  # 9 uncovered: not yet (and no time trigger)
    append(1, 19)
    wait_for(lambda: latest() == 20)
    append(5, 20)
    assert [n for _, n in numbers(led)] == [1, 2]
    led.close()
    with open_ledger(sqlite_url, create=False) as again:
        assert numbers(again) == [(10, 1), (20, 2), (25, 3)]  # close covered the rest
        report = again.verify(keys=[signer.verifier])
    assert report.ok and report.signed_size == 25 and report.uncovered == 0


def test_a_writer_with_the_key_signs_within_the_interval(sqlite_url: str, signer: Ed25519Signer) -> None:
    led = open_ledger(sqlite_url, key=signer, checkpoint_interval=0.1, checkpoint_every=None)
    try:
        t0 = time.monotonic()
        fill(led, 3)  # non-durable, through the flusher
        wait_for(lambda: (led.latest_checkpoint() or Checkpoint("", 0, b"")).size == 3, timeout=5)
        assert time.monotonic() - t0 < 5
        led.record_event("test.event", {"late": True})  # durable, committed by this thread
        wait_for(lambda: (led.latest_checkpoint() or Checkpoint("", 0, b"")).size == 4, timeout=5)
        got = numbers(led)  # (a stalled machine may sign 1 or 2 of the first 3 on their own: fine)
        assert [n for _, n in got] == list(range(1, len(got) + 1)) and {3, 4} <= {size for size, _ in got}
    finally:
        led.close()


def test_without_the_key_nothing_is_signed(sqlite_url: str, origin: str) -> None:
    with open_ledger(sqlite_url, origin=origin, checkpoint_interval=0.01, checkpoint_every=1) as led:
        fill(led, 5)
        time.sleep(0.05)
        assert led.latest_checkpoint() is None
    with open_ledger(sqlite_url, create=False) as led:
        assert led.store.checkpoints(led.ledger_id) == []


def test_checkpoint_numbers_never_fork_with_concurrent_signers(sqlite_url: str, signer: Ed25519Signer) -> None:
    """Two ledger objects (two connections, as two processes would have) append and sign at once."""
    a = open_ledger(sqlite_url, key=signer, checkpoint_interval=None, checkpoint_every=None)
    b = open_ledger(sqlite_url, key=signer, checkpoint_interval=None, checkpoint_every=None)
    errors: list[BaseException] = []

    def work(led: Ledger, k: int) -> None:
        try:
            for i in range(30):
                led.record_event("test.event", {"w": k, "i": i})
                led.checkpoint()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(led, k)) for k, led in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = numbers(a)
    assert [n for _, n in got] == list(range(1, len(got) + 1)) and len(got) >= 30
    assert [s for s, _ in got] == sorted({s for s, _ in got})
    a.close()
    b.close()
    with open_ledger(sqlite_url, create=False) as led:
        assert led.verify(keys=[signer.verifier]).ok


def test_legacy_checkpoints_without_a_number_may_only_come_first(
    sqlite_url: str, db_path: Path, signer: Ed25519Signer, verifier: NoteVerifier, origin: str
) -> None:
    with open_ledger(sqlite_url, key=signer, checkpoint_interval=None, checkpoint_every=None) as led:
        fill(led, 5)
        state = led.store.state(led.ledger_id)
        legacy = Checkpoint(origin, 5, state.root).signed([signer])  # as versions before the numbers wrote them
        assert legacy.note is not None
        led.store.insert_checkpoint(led.ledger_id, 5, state.root, legacy.note, after=None)
        fill(led, 5, start=5)
        assert led.checkpoint().number == 1  # numbering starts after the legacy ones
        report = led.verify(keys=[verifier])
    assert report.ok and report.latest_checkpoint_number == 1, report.problems
    with open_ledger(sqlite_url, key=signer, checkpoint_interval=None, checkpoint_every=None) as led:
        fill(led, 2, start=10)
        state = led.store.state(led.ledger_id)
        late = Checkpoint(origin, 12, state.root).signed([signer])
        assert late.note is not None
        led.store.insert_checkpoint(led.ledger_id, 12, state.root, late.note, after=10)
        report = led.verify(keys=[verifier])
    assert not report.ok and "no sequence number although earlier ones do" in str(report.problems)


def test_uncovered_entries_warn_without_a_key_and_fail_with_one(
    sqlite_url: str, signer: Ed25519Signer, verifier: NoteVerifier, origin: str
) -> None:
    with open_ledger(sqlite_url, key=signer, checkpoint_interval=None, checkpoint_every=None) as led:
        fill(led, 6)
    with open_ledger(sqlite_url, origin=origin, create=False) as keyless:
        keyless.record("approval.approved", {"approval_id": "apr-1", "approved_by": "eve"})
        quiet = keyless.verify()  # the database's keys: self-asserted, so a report, not a verdict
        strict = keyless.verify(keys=[verifier])
    assert quiet.ok and [w.check for w in quiet.warnings] == ["coverage"] and "6 approval.approved" in quiet.warnings[0].detail
    assert not strict.ok and strict.first_bad_seq == 6 and strict.uncovered == 1
    assert strict.uncovered_entries[0]["kind"] == "approval.approved" and strict.uncovered_entries[0]["time"]
    result = runner.invoke(app, ["audit", "verify", "--db", sqlite_url])
    assert result.exit_code == 0 and "warning" in result.output and "entry 6 UNCOVERED" in result.output
    assert "entry 6 is not covered by any checkpoint signed by a trusted key (they cover entries 0–5)" in result.output
    result = runner.invoke(app, ["audit", "verify", "--db", sqlite_url, "--key", str(verifier)])
    assert result.exit_code == 1 and "first bad sequence number 6:" in result.output and "6 approval.approved" in result.output


def test_grace_tolerates_a_fresh_tail_but_not_an_old_one(
    sqlite_url: str, signer: Ed25519Signer, verifier: NoteVerifier, origin: str
) -> None:
    with open_ledger(sqlite_url, key=signer, checkpoint_interval=None, checkpoint_every=None) as led:
        fill(led, 4)
    with open_ledger(sqlite_url, origin=origin, create=False) as keyless:
        keyless.record_event("test.event", {"fresh": True})
        fresh = keyless.verify(keys=[verifier], grace=3600)
        assert fresh.ok and fresh.uncovered == 1 and "allowed by the grace" in fresh.warnings[0].detail
        assert not keyless.verify(keys=[verifier]).ok
        keyless.append_records([make_record(origin, "test.event", {"old": True}, time="2020-01-01T00:00:00.000000Z")])
        old = keyless.verify(keys=[verifier], grace=3600)
    assert not old.ok and old.first_bad_seq == 5  # the backdated entry is older than the grace: it fails
    args = ["audit", "verify", "--db", sqlite_url, "--key", str(verifier), "--grace", "3600"]
    assert runner.invoke(app, args).exit_code == 1


def test_an_empty_ledger_without_a_checkpoint_fails_with_a_key(sqlite_url: str, origin: str, verifier: NoteVerifier) -> None:
    open_ledger(sqlite_url, origin=origin).close()
    result = runner.invoke(app, ["audit", "verify", "--db", sqlite_url, "--key", str(verifier)])
    assert result.exit_code == 1 and "no signed checkpoint at all" in result.output


def test_an_unknown_state_format_refuses_writes(
    sqlite_url: str, db_path: Path, signer: Ed25519Signer, verifier: NoteVerifier, origin: str
) -> None:
    with open_ledger(sqlite_url, key=signer, checkpoint_interval=None) as led:
        fill(led, 3)
    raw_sqlite(db_path).execute("UPDATE ledger_state SET format = 7")
    with pytest.raises(LedgerError, match="unknown ledger format 7"):
        open_ledger(sqlite_url, key=signer)
    with open_ledger(sqlite_url, origin=origin, create=False) as led:
        with pytest.raises(LedgerUnavailable, match="unknown ledger format 7"):
            led.record_event("test.event", {}, durable=False)
        report = led.verify()  # even trusting the database: an unknown format is not a warning
    assert not report.ok and report.format == 7 and "unknown ledger format 7" in str(report.problems)
    result = runner.invoke(app, ["audit", "verify", "--db", sqlite_url, "--key", str(verifier)])
    assert result.exit_code == 1 and "unknown ledger format 7" in result.output


def test_checkpoint_intervals_are_validated(sqlite_url: str, origin: str) -> None:
    with pytest.raises(ValueError, match="checkpoint_every"):
        open_ledger(sqlite_url, origin=origin, checkpoint_every=0)
    with pytest.raises(ValueError, match="checkpoint_interval"):
        open_ledger(sqlite_url, origin=origin, checkpoint_interval=0)
