"""A tool call's outcome rides with the decision on its result: one commit instead of two, the result
released only once both are on disk; an outcome no commit follows is written after ``linger``; a
failing ledger still commits (and refuses) it at once."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from fiveplane import Action, ActionBlocked, Governor, MediationPoint, Outcome, OutcomeStatus, Principal, PrincipalKind
from fiveplane._ledger import Ed25519Signer, LedgerUnavailable, open_ledger
from tests.ledger.conftest import raw_sqlite
from tests.ledger.test_ledger import CHAIN, PACK, lookup


def _committed_kinds(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as conn:  # another connection: sees only committed rows
        return [k for (k,) in conn.execute("SELECT kind FROM ledger_leaves ORDER BY seq")]


def _action(tool: str = "crm.lookup") -> Action:
    return Action(
        point=MediationPoint.TOOL_CALL,
        tool=tool,
        arguments={"customer": "c1"},
        principal=(Principal(kind=PrincipalKind.USER, id="tess"), Principal(kind=PrincipalKind.AGENT, id="test-agent")),
        session_id="s-next",
    )


def _outcome(action: Action) -> Outcome:
    return Outcome(action_id=action.action_id, status=OutcomeStatus.SUCCESS, duration_ms=1.0)


def test_a_governed_call_commits_its_outcome_with_the_decision_on_its_result(db_path: Path, signer: Ed25519Signer) -> None:
    # a long linger: the outcome can only be on disk when the call returns if the result's commit took it
    led = open_ledger(f"sqlite:///{db_path}", key=signer, checkpoint_interval=None, linger=60.0)
    try:
        gov = Governor(PACK, evidence=led)  # the pack's evidence is `required`: every decision durable
        tool = gov.govern(lookup, tool="crm.lookup")
        with gov.run(CHAIN, session_id="s-ride", intent="look up c1", purpose="testing"):
            before = led.stats.flushes
            assert tool(customer="c1") == {"customer": "c1", "tier": "gold"}
            commits = led.stats.flushes - before
            kinds = _committed_kinds(db_path)  # right after the call returned, before any linger
        assert kinds == ["intent", "decision", "outcome", "intent", "decision"]
        assert commits == 2  # the call's decision; the outcome with the result's decision
        assert led.stats.max_batch == 3  # outcome + the result's intent and decision: one transaction
        assert led.verify().ok
    finally:
        led.close()


def test_an_outcome_no_commit_follows_is_written_after_the_linger(db_path: Path, signer: Ed25519Signer) -> None:
    led = open_ledger(f"sqlite:///{db_path}", key=signer, checkpoint_interval=None, linger=0.3)
    try:
        led.record_event("test.event", {"warm": True})  # the flusher runs and sleeps without a timeout
        action = _action()
        led.record_outcome(action, _outcome(action), durable=True, with_next=True)
        assert _committed_kinds(db_path) == ["test.event"]  # queued for the next commit, not written alone yet
        deadline = time.monotonic() + 10
        while _committed_kinds(db_path) != ["test.event", "outcome"]:
            assert time.monotonic() < deadline, "the held outcome was never written"
            time.sleep(0.02)
    finally:
        led.close()


def test_close_writes_a_held_outcome(db_path: Path, signer: Ed25519Signer) -> None:
    led = open_ledger(f"sqlite:///{db_path}", key=signer, checkpoint_interval=None, linger=60.0)
    action = _action()
    led.record_outcome(action, _outcome(action), durable=True, with_next=True)
    led.close()
    assert _committed_kinds(db_path) == ["outcome"]


def test_a_failing_ledger_refuses_a_held_outcome_at_once(db_path: Path, signer: Ed25519Signer) -> None:
    led = open_ledger(f"sqlite:///{db_path}", key=signer, checkpoint_interval=None, linger=60.0)
    try:
        led.record_event("test.event", {"warm": True})
        conn = raw_sqlite(db_path)
        conn.execute("CREATE TRIGGER fail_inserts BEFORE INSERT ON ledger_leaves BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
        with pytest.raises(LedgerUnavailable, match="disk on fire"):
            led.record_event("test.event", {"i": 1})  # the failed commit: from now on every record is synchronous
        action = _action()
        with pytest.raises(LedgerUnavailable, match="disk on fire"):
            led.record_outcome(action, _outcome(action), durable=True, with_next=True)
        conn.execute("DROP TRIGGER fail_inserts")
        led.record_outcome(action, _outcome(action), durable=True, with_next=True)  # committed at once: still failing-mode
        assert _committed_kinds(db_path) == ["test.event", "outcome"]
    finally:
        led.close()


def test_a_result_whose_commit_fails_is_withheld_and_its_outcome_kept(db_path: Path, signer: Ed25519Signer) -> None:
    led = open_ledger(f"sqlite:///{db_path}", key=signer, checkpoint_interval=None, linger=60.0)
    try:
        gov = Governor(PACK, evidence=led)
        conn = raw_sqlite(db_path)

        def lookup_then_break(customer: str) -> dict[str, str]:
            # the disk fails after the call's decision was committed: the result's commit (with the outcome) fails
            conn.execute(
                "CREATE TRIGGER fail_inserts BEFORE INSERT ON ledger_leaves BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
            )
            return {"customer": customer, "tier": "gold"}

        tool = gov.govern(lookup_then_break, tool="crm.lookup")
        with gov.run(CHAIN, session_id="s-break", intent="look up c1", purpose="testing"), pytest.raises(ActionBlocked) as info:
            tool(customer="c1")  # the result is not released unrecorded
        conn.execute("DROP TRIGGER fail_inserts")
        assert info.value.decision.rule_ids == ("evidence.error",)  # the tool ran (it broke the disk): its result is refused
        for _ in range(200):  # the kept outcome is retried by the flusher
            try:
                led.flush(timeout=5)
                break
            except LedgerUnavailable:
                time.sleep(0.05)
        assert _committed_kinds(db_path)[:3] == ["intent", "decision", "outcome"]
    finally:
        led.close()


async def test_async_twin_rides_with_the_next_commit(db_path: Path, signer: Ed25519Signer) -> None:
    led = open_ledger(f"sqlite:///{db_path}", key=signer, checkpoint_interval=None, linger=60.0)
    try:
        gov = Governor(PACK, evidence=led)
        tool = gov.govern(lookup, tool="crm.lookup")
        with gov.run(CHAIN, session_id="s-async-ride", intent="look up c1", purpose="testing"):
            before = led.stats.flushes
            assert await tool.acall(customer="c1") == {"customer": "c1", "tier": "gold"}
            commits = led.stats.flushes - before
        assert _committed_kinds(db_path) == ["intent", "decision", "outcome", "intent", "decision"]
        assert commits == 2
    finally:
        led.close()


def test_a_held_record_is_refused_at_once_when_the_file_is_gone(db_path: Path, signer: Ed25519Signer) -> None:
    led = open_ledger(f"sqlite:///{db_path}", key=signer, checkpoint_interval=None, linger=60.0)
    try:
        led.record_event("test.event", {"warm": True})
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        action = _action()
        with pytest.raises(LedgerUnavailable, match="deleted while the ledger was open"):
            led.record_outcome(action, _outcome(action), durable=True, with_next=True)  # checked before it is taken
    finally:
        try:
            led.close()
        except LedgerUnavailable:
            pass


def test_concurrent_calls_keep_every_held_outcome_and_its_order(db_path: Path, signer: Ed25519Signer) -> None:
    """Eight threads make governed calls at once: commits mix held outcomes of one thread with another
    thread's durable records. Every call's outcome is on disk when the call returns, before its
    result's decision, and the log verifies."""
    import threading

    led = open_ledger(f"sqlite:///{db_path}", key=signer, checkpoint_interval=None, linger=60.0)
    problems: list[str] = []
    last_call: dict[int, str] = {}
    try:
        gov = Governor(PACK, evidence=led)
        gov.add_listener(
            lambda a, d: (
                last_call.__setitem__(threading.get_ident(), a.action_id) if a.point is MediationPoint.TOOL_CALL else None
            )
        )
        tool = gov.govern(lookup, tool="crm.lookup")

        def worker(w: int) -> None:
            try:
                with sqlite3.connect(db_path) as conn:  # another connection: sees only committed rows
                    for i in range(15):
                        with gov.run(CHAIN, session_id=f"s-{w}", intent="look up", purpose="testing"):
                            tool(customer=f"c{w}-{i}")
                        call = last_call[threading.get_ident()]
                        (n,) = conn.execute(
                            "SELECT count(*) FROM ledger_leaves WHERE kind = 'outcome' AND action_id = ?", (call,)
                        ).fetchone()
                        if n != 1:
                            problems.append(f"worker {w} call {i}: its outcome is not on disk when the call returned")
            except Exception as exc:  # reported below
                problems.append(f"worker {w}: {exc!r}")

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert problems == []
        records = list(led.iter_records())
        outcome_at = {e["action_id"]: s for s, e in records if e["kind"] == "outcome"}
        result_at = {e["parent_id"]: s for s, e in records if e["kind"] == "decision" and e.get("parent_id")}
        assert len(outcome_at) == 8 * 15 and outcome_at.keys() == result_at.keys()
        assert all(outcome_at[a] < result_at[a] for a in outcome_at)  # an outcome precedes its result's decision
        assert led.verify().ok
    finally:
        led.close()
