"""The Ledger as the Governor's evidence sink: records, durability, fail-closed behaviour, receipts,
erasure, recovery and evidence sufficiency (reconstructing an action from the ledger alone)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from blockbuster import BlockingError, blockbuster_ctx

from fiveplane import ActionBlocked, Governor, MediationPoint, OutcomeStatus, Verdict
from fiveplane._ledger import (
    Ed25519Signer,
    Ledger,
    LedgerError,
    LedgerUnavailable,
    NoteVerifier,
    TimelineFilter,
    open_ledger,
    verify_receipt,
)
from fiveplane._ledger import _merkle as m
from tests.ledger.conftest import fill, raw_sqlite

PACK = Path(__file__).parent / "packs" / "ledger-test.yaml"
CHAIN = [
    {"kind": "user", "id": "tess", "roles": ["tester"], "claims": {"email": "tess@acme.example"}},
    {"kind": "agent", "id": "test-agent"},
]


def lookup(customer: str) -> dict[str, Any]:
    return {"customer": customer, "tier": "gold"}


def update(customer: str, tier: str) -> dict[str, Any]:
    return {"customer": customer, "tier": tier}


def send(to: str, body: str) -> str:
    return "sent"


def flush_eventually(led: Ledger) -> None:
    for _ in range(200):  # the flusher retries failed batches with backoff
        try:
            led.flush(timeout=5)
            return
        except LedgerUnavailable:
            time.sleep(0.05)
    raise AssertionError("queued records were never written")


def leaf_hashes(led: Ledger) -> list[bytes]:
    return [bytes(r.leaf_hash) for r in led.store.iter_leaves(led.ledger_id)]


def test_appends_build_the_rfc6962_tree(ledger: Ledger) -> None:
    fill(ledger, 257)
    assert ledger.size() == 257
    hashes = leaf_hashes(ledger)
    assert ledger.root() == m.root_hash(hashes)
    for seq, env in ledger.iter_records(0, 3):
        assert env["kind"] == "test.event" and env["meta"] == {"i": seq} and env["origin"] == ledger.origin
    proof = ledger.inclusion_proof(100)
    m.verify_inclusion(hashes[100], 100, 257, proof, ledger.root())
    old_root = m.root_hash(hashes[:100])
    m.verify_consistency(100, 257, ledger.consistency_proof(100), old_root, ledger.root())
    assert ledger.verify().ok


def test_durable_append_returns_its_seq_and_a_call_is_contiguous(ledger: Ledger) -> None:
    fill(ledger, 5)
    seq = ledger.record_event("test.event", {"k": 1}, {"p": 1})
    assert seq == 5
    gov = Governor(PACK, evidence=ledger)
    tool = gov.govern(update, tool="crm.update")
    with gov.run(CHAIN, session_id="s-contig", intent="change a tier", purpose="testing"):
        tool(customer="c1", tier="gold")
    recs = [(s, e["kind"], e.get("action_id")) for s, e in ledger.iter_records(6)]
    call = recs[0][2]
    assert [k for _, k, a in recs if a == call][:2] == ["intent", "decision"]
    assert recs[1][0] == recs[0][0] + 1  # intent and decision of one call: one group, adjacent


def test_governor_evidence_is_sufficient_to_reconstruct_an_action(ledger: Ledger) -> None:
    gov = Governor(PACK, evidence=ledger)
    tools = {
        name: gov.govern(fn, tool=name) for name, fn in (("crm.lookup", lookup), ("crm.update", update), ("mail.send", send))
    }
    with gov.run(CHAIN, session_id="s-story", intent="look up c9, set gold, tell them", purpose="testing"):
        tools["crm.lookup"](customer="c9")
        tools["crm.update"](customer="c9", tier="gold")
        with pytest.raises(ActionBlocked):
            tools["mail.send"](to="x@evil.example", body="hi")
    ledger.flush()
    decisions = [e for _, e in ledger.iter_records() if e["kind"] == "decision" and e["meta"].get("point") == "tool_call"]
    assert [d["meta"]["tool"] for d in decisions] == ["crm.lookup", "crm.update", "mail.send"]
    update_id = decisions[1]["action_id"]
    story = ledger.reconstruct(update_id)
    assert story is not None
    assert [p["id"] for p in story.who] == ["tess", "test-agent"] and story.who[0]["roles"] == ["tester"]
    assert story.what["tool"] == "crm.update" and story.what["class"] == "modify"
    assert story.what["arguments"] == {"customer": "c9", "tier": "gold"}
    assert story.why == {"intent": "look up c9, set gold, tell them", "purpose": "testing"}
    assert story.decision is not None and story.decision["verdict"] == "allow" and story.decision["rule_ids"] == ["test.crm"]
    assert story.decision["policy_hash"].startswith("sha256:") and story.decision["explanation"]
    assert [o["status"] for o in story.outcomes] == ["success"] and story.outcomes[0]["result_digest"].startswith("sha256:")
    assert len(story.results) == 1 and story.results[0].what["point"] == "tool_result"
    assert story.results[0].what["content"] is None and story.results[0].what["content_digest"].startswith("sha256:")
    blocked = ledger.reconstruct(decisions[2]["action_id"])
    assert blocked is not None and blocked.decision is not None
    assert blocked.decision["verdict"] == "block" and blocked.decision["rule_ids"] == ["test.mail-blocked"]
    assert [o["status"] for o in blocked.outcomes] == [OutcomeStatus.BLOCKED.value]
    assert ledger.reconstruct("no-such-action") is None


def test_modify_is_durable_before_the_tool_runs(ledger: Ledger, db_path: Path) -> None:
    seen: list[list[str]] = []

    def update_and_look(customer: str, tier: str) -> str:
        with sqlite3.connect(db_path) as conn:  # another connection: sees only committed data
            seen.append([k for (k,) in conn.execute("SELECT kind FROM ledger_leaves ORDER BY seq")])
        return "ok"

    gov = Governor(PACK, evidence=ledger)
    tool = gov.govern(update_and_look, tool="crm.update")
    with gov.run(CHAIN, session_id="s-durable", intent="x", purpose="testing"):
        tool(customer="c1", tier="gold")
    assert seen[0][-2:] == ["intent", "decision"]


def test_a_failing_ledger_blocks_the_action(ledger: Ledger, db_path: Path) -> None:
    ran: list[str] = []

    def update_tracked(customer: str, tier: str) -> str:
        ran.append(customer)
        return "ok"

    conn = raw_sqlite(db_path)
    conn.execute("CREATE TRIGGER fail_inserts BEFORE INSERT ON ledger_leaves BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    gov = Governor(PACK, evidence=ledger)
    tool = gov.govern(update_tracked, tool="crm.update")
    with gov.run(CHAIN, session_id="s-fail", intent="x", purpose="testing"), pytest.raises(ActionBlocked) as info:
        tool(customer="c1", tier="gold")
    assert ran == []
    assert info.value.decision.verdict is Verdict.BLOCK and "evidence" in info.value.decision.explanation
    assert any("disk on fire" in e for e in info.value.decision.errors)
    # after a failed commit even the non-durable `blocked` outcome is written synchronously: it is
    # refused too (the caller learns it), nothing is queued to fail later
    assert isinstance(info.value.__cause__, LedgerUnavailable) and "disk on fire" in str(info.value.__cause__)
    conn.execute("DROP TRIGGER fail_inserts")
    flush_eventually(ledger)
    assert list(ledger.iter_records()) == []
    with gov.run(CHAIN, session_id="s-fail", intent="x", purpose="testing"):
        assert tool(customer="c1", tier="gold") == "ok"  # the database works again: so does the action
    assert ran == ["c1"] and [e["kind"] for _, e in ledger.iter_records()][:2] == ["intent", "decision"]


def test_queued_records_are_never_dropped_and_block_new_ones_while_stuck(ledger: Ledger, db_path: Path) -> None:
    fill(ledger, 3)
    conn = raw_sqlite(db_path)
    conn.execute("CREATE TRIGGER fail_inserts BEFORE INSERT ON ledger_leaves BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    ledger.record_event("test.event", {"i": "queued"}, durable=False)  # accepted, cannot be written yet
    with pytest.raises(LedgerUnavailable):
        ledger.flush(timeout=5)
    with pytest.raises(LedgerUnavailable, match="refusing new records"):
        ledger.record_event("test.event", {"i": "new"}, durable=False)
    conn.execute("DROP TRIGGER fail_inserts")
    flush_eventually(ledger)
    assert [e["meta"]["i"] for _, e in ledger.iter_records(3)] == ["queued"]
    assert ledger.record_event("test.event", {"i": "after"}) == 4
    assert ledger.verify().ok


def test_unreachable_database_fails_at_open(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"connect|refused|Connection"):
        open_ledger("postgresql+psycopg://nobody@127.0.0.1:9/none", origin="x.example/l", busy_timeout=2)
    with pytest.raises(FileNotFoundError):
        open_ledger(f"sqlite:///{tmp_path}/missing.db", origin="x.example/l", create=False)
    with pytest.raises(ValueError, match="in-memory"):
        open_ledger("sqlite://", origin="x.example/l")


async def test_async_twins_do_not_block_the_event_loop(ledger: Ledger) -> None:
    gov = Governor(PACK, evidence=ledger)
    tool = gov.govern(update, tool="crm.update")
    ledger.record_event("test.event", {"warm": True})  # start the flusher thread outside the guarded block
    with blockbuster_ctx():
        with pytest.raises(BlockingError):  # the guard is live: a blocking call on the loop is caught
            time.sleep(0.001)  # noqa: ASYNC251 - deliberately: proves the guard catches blocking calls
        with gov.run(CHAIN, session_id="s-async", intent="x", purpose="testing"):
            await tool.acall(customer="c2", tier="silver")
            results = await asyncio.gather(*(tool.acall(customer=f"c{i}", tier="gold") for i in range(20)))
        seq = await ledger.arecord_event("test.event", {"i": 1}, {"x": 1})
        await ledger.arecord_event("test.event", {"i": 2}, durable=False)
    assert len(results) == 20 and seq is not None
    ledger.flush()
    kinds = [e["kind"] for _, e in ledger.iter_records()]
    assert kinds.count("decision") == 2 * 21 and kinds.count("outcome") == 21
    assert ledger.verify().ok


def test_receipts_verify_offline(ledger: Ledger, verifier: NoteVerifier) -> None:
    fill(ledger, 40)
    receipt = ledger.receipt(17)
    check = verify_receipt(receipt.encode(), [verifier], origin=ledger.origin)
    assert check.index == 17 and check.checkpoint.size == 40
    assert json.loads((check.entry or b"")[1:])["meta"] == {"i": 17}
    fill(ledger, 5, start=40)
    assert ledger.receipt(17).checkpoint_note == receipt.checkpoint_note  # the latest checkpoint still covers it
    assert verify_receipt(ledger.receipt(43).encode(), [verifier]).checkpoint.size == 45  # a new one was signed
    all_of_action = ledger.receipts("act-3")
    assert [r.index for r in all_of_action] == [9, 10, 11]
    with pytest.raises(LedgerError, match="does not exist"):
        ledger.receipt(999)


def test_receipt_needs_a_signer_when_no_checkpoint_covers(sqlite_url: str, origin: str) -> None:
    with open_ledger(sqlite_url, origin=origin, checkpoint_interval=None) as led:
        fill(led, 3)
        with pytest.raises(LedgerError, match="no checkpoint covers"):
            led.receipt(1)
        with pytest.raises(LedgerError, match="no signing key"):
            led.checkpoint()


def test_background_checkpoints(sqlite_url: str, signer: Ed25519Signer) -> None:
    led = open_ledger(sqlite_url, key=signer, checkpoint_interval=0.05)
    fill(led, 10)
    led.close()  # signs a last checkpoint at close
    led = open_ledger(sqlite_url, key=signer)
    cp = led.latest_checkpoint()
    assert cp is not None and cp.size == 10 and cp.root == led.root()
    led.close()


def test_a_log_never_signs_an_inconsistent_checkpoint(ledger: Ledger, db_path: Path) -> None:
    fill(ledger, 10)
    ledger.checkpoint()
    fill(ledger, 5, start=10)
    conn = raw_sqlite(db_path)  # rewrite entry 3 and everything derived from it, consistently
    env = bytearray(conn.execute("SELECT envelope FROM ledger_leaves WHERE seq = 3").fetchone()[0])
    env[-3] ^= 1
    hashes = [r[0] for r in conn.execute("SELECT leaf_hash FROM ledger_leaves ORDER BY seq")]
    hashes[3] = m.hash_leaf(bytes(env))
    cr = m.CompactRange()
    nodes: list[tuple[int, int, bytes]] = []
    for h in hashes:
        cr.append(h, nodes)
    conn.execute("UPDATE ledger_leaves SET envelope = ?, leaf_hash = ? WHERE seq = 3", (bytes(env), hashes[3]))
    conn.executemany("UPDATE ledger_nodes SET hash = ? WHERE level = ? AND idx = ?", [(h, lv, i) for lv, i, h in nodes])
    conn.execute("UPDATE ledger_state SET root = ?, frontier = ?", (cr.root(), cr.encode()))
    with pytest.raises(LedgerError, match="not consistent"):
        ledger.checkpoint()


def test_erasure_keeps_proofs_valid(ledger: Ledger, db_path: Path, verifier: NoteVerifier) -> None:
    gov = Governor(PACK, evidence=ledger)
    tool = gov.govern(lookup, tool="crm.lookup")
    with gov.run(CHAIN, session_id="s-erase", intent="find Jane Roe-Erasable", purpose="testing"):
        tool(customer="Jane Roe-Erasable")
    ledger.flush()
    call = next(
        e["action_id"] for _, e in ledger.iter_records() if e["kind"] == "decision" and e["meta"].get("point") == "tool_call"
    )
    receipt_before = ledger.receipt(0).encode()
    erased = ledger.erase_action(call, reason="GDPR art. 17 request", requested_by="dpo@acme.example")
    assert len(erased) >= 5  # intent, decision, outcome of the call + intent, decision of its result
    report = ledger.verify(keys=[verifier])
    assert report.ok, report.problems
    assert report.payloads_erased == len(erased)
    verify_receipt(receipt_before, [verifier])  # a receipt cut before the erasure still verifies
    verify_receipt(ledger.receipt(erased[0]).encode(), [verifier])
    story = ledger.reconstruct(call)
    assert story is not None and story.erased and story.what["tool"] == "crm.lookup"
    assert story.decision is not None and story.decision["verdict"] == "allow" and story.decision["explanation"] is None
    last = list(ledger.iter_records())[-1][1]
    assert last["kind"] == "erasure" and last["meta"]["erased"] == erased
    ledger.close()
    for suffix in ("", "-wal"):
        p = Path(f"{db_path}{suffix}")
        if p.exists():
            assert b"Jane Roe-Erasable" not in p.read_bytes()


def _die_mid_call(url: str, origin: str) -> None:  # runs in a forked child
    led = open_ledger(url, origin=origin, checkpoint_interval=None)
    gov = Governor(PACK, evidence=led)

    def hang(customer: str, tier: str) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    with gov.run(CHAIN, session_id="s-dead", intent="x", purpose="testing"):
        gov.govern(hang, tool="crm.update")(customer="c", tier="gold")


def test_recover_marks_calls_of_dead_processes_unknown(sqlite_url: str, origin: str) -> None:
    led = open_ledger(sqlite_url, origin=origin, checkpoint_interval=None)
    led.close()
    child = mp.get_context("fork").Process(target=_die_mid_call, args=(sqlite_url, origin))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    with open_ledger(sqlite_url, origin=origin) as led:
        marked = led.recover()
        assert len(marked) == 1
        story = led.reconstruct(marked[0])
        assert story is not None and [o["status"] for o in story.outcomes] == ["unknown"]
        assert story.outcomes[0]["detail"]["recovered"] is True
        assert led.recover() == []
        assert led.verify().ok


def test_recover_leaves_live_calls_alone(ledger: Ledger) -> None:
    gov = Governor(PACK, evidence=ledger)
    marked: list[list[str]] = []

    def inspect(customer: str, tier: str) -> None:
        marked.append(ledger.recover())  # this very process is alive and mid-call

    with gov.run(CHAIN, session_id="s-live", intent="x", purpose="testing"):
        gov.govern(inspect, tool="crm.update")(customer="c", tier="gold")
    assert marked == [[]]


def test_several_ledgers_share_one_database(sqlite_url: str) -> None:
    a = open_ledger(sqlite_url, origin="a.example/log")
    b = open_ledger(sqlite_url, origin="b.example/log")
    fill(a, 7)
    fill(b, 3)
    assert (a.size(), b.size()) == (7, 3) and a.verify().ok and b.verify().ok
    a.close()
    b.close()
    with pytest.raises(LedgerError, match="2 ledgers"):
        open_ledger(sqlite_url)


def test_event_kinds_and_metadata_are_validated(ledger: Ledger) -> None:
    for kind in ("decision", "nodot", "Upper.case", "x." + "y" * 70):
        with pytest.raises(ValueError, match="namespaced"):
            ledger.record_event(kind, {})
    with pytest.raises(ValueError, match="canonical JSON"):
        ledger.record_event("test.event", {"big": 2**60})
    assert ledger.record_event("identity.grant_changed", {"grant": "g-1", "ttl": 1.5}) == 0


def test_timeline_filters(ledger: Ledger) -> None:
    gov = Governor(PACK, evidence=ledger)
    look, mail = gov.govern(lookup, tool="crm.lookup"), gov.govern(send, tool="mail.send")
    with gov.run(CHAIN, session_id="s-a", intent="x", purpose="testing"):
        look(customer="c")
        with pytest.raises(ActionBlocked):
            mail(to="a@evil.example", body="b")
    with gov.run(CHAIN, session_id="s-b", intent="y", purpose="testing"):
        look(customer="d")
    ledger.flush()
    assert {r.session_id for r in ledger.timeline(TimelineFilter(session="s-b"), limit=None)} == {"s-b"}
    blocked = ledger.timeline(TimelineFilter(verdict="block"), limit=None)
    assert len(blocked) == 1 and blocked[0].meta["tool"] == "mail.send"
    assert all(r.meta.get("tool") == "crm.lookup" for r in ledger.timeline(TimelineFilter(tool="crm.lookup"), limit=None))
    assert [r.kind for r in ledger.timeline(TimelineFilter(kind="outcome"), limit=2)] == ["outcome", "outcome"]
    assert all(r.meta.get("agent") == "test-agent" for r in ledger.timeline(TimelineFilter(agent="test-agent"), limit=None))


def test_close_flushes_queued_records(sqlite_url: str, origin: str) -> None:
    led = open_ledger(sqlite_url, origin=origin)
    for i in range(500):
        led.record_event("test.event", {"i": i}, durable=False)
    led.close()
    with pytest.raises(LedgerError, match="closed"):
        led.record_event("test.event", {})
    with open_ledger(sqlite_url, origin=origin, create=False) as again:
        assert again.size() == 500 and again.verify().ok


def test_decision_points_other_than_tool_calls(ledger: Ledger) -> None:
    gov = Governor(PACK, evidence=ledger)
    with gov.run(CHAIN, session_id="s-pts", intent="hello", purpose="testing") as run:
        d = gov.decide(run.action(MediationPoint.INPUT, content="hello"))
    assert d.verdict is Verdict.ALLOW
    ledger.flush()
    kinds = [(e["kind"], e["meta"]["point"]) for _, e in ledger.iter_records()]
    assert kinds == [("intent", "input"), ("decision", "input")]


def test_same_origin_different_key_is_recorded(sqlite_url: str, signer: Ed25519Signer) -> None:
    with open_ledger(sqlite_url, key=signer) as led:
        fill(led, 2)
    rotated = Ed25519Signer.generate(signer.name)
    with open_ledger(sqlite_url, key=rotated) as led:
        assert {str(v) for v in led.verifiers()} == {signer.verifier_key(), rotated.verifier_key()}


def test_sqlite_tables_are_append_only(ledger: Ledger, db_path: Path) -> None:
    fill(ledger, 3)
    ledger.checkpoint()
    conn = sqlite3.connect(db_path)
    for stmt in (
        "UPDATE ledger_leaves SET kind = 'x'",
        "DELETE FROM ledger_nodes",
        "DELETE FROM ledger_checkpoints",
        "UPDATE ledger_leaves SET seq = seq + 1",
    ):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(stmt)


def test_private_package_surface() -> None:
    import fiveplane._ledger as pkg

    assert pkg.__all__ == sorted(pkg.__all__, key=lambda n: (not n.isupper(), n))
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None


def test_demo_with_evidence(tmp_path: Path, sales_pack: Path) -> None:
    from fiveplane._ledger import load_verifier, run_demo_with_evidence

    ev = run_demo_with_evidence(sales_pack, tmp_path / ".fiveplane")
    assert ev.report.ok and ev.report.entries > 10
    assert (tmp_path / ".fiveplane" / "demo.db").exists() and ev.receipt_file.read_text() == ev.receipt
    check = verify_receipt(ev.receipt, [load_verifier(Path(f"{ev.key_file}.pub"))], origin="demo.fiveplane.local/ledger")
    assert check.index == ev.receipt_seq and json.loads((check.entry or b"")[1:])["meta"]["tool"] == "contracts.update_status"
    again = run_demo_with_evidence(sales_pack, tmp_path / ".fiveplane")  # re-runnable: fresh ledger, same key
    assert again.report.ok and again.verifier_key == ev.verifier_key


def test_a_crashed_writer_thread_fails_closed(sqlite_url: str, origin: str) -> None:
    class Boom(BaseException):
        pass

    led = open_ledger(sqlite_url, origin=origin, durable_timeout=1.0)
    fill(led, 2)

    def explode(*args: Any) -> Any:
        raise Boom("bug")

    led.store.append = explode  # type: ignore[method-assign]
    with pytest.raises(LedgerUnavailable):
        led.record_event("test.event", {})  # durable: never acknowledged
    with pytest.raises(LedgerUnavailable, match="refusing new records"):
        led.record_event("test.event", {}, durable=False)
    with pytest.raises(LedgerUnavailable):
        led.close(timeout=2)
