"""`evidence: required` (the default and the shipped packs') blocks whatever cannot be recorded; `best_effort` lets
non-durable classes run with a warning."""

from __future__ import annotations

from pathlib import Path

from fiveplane import Governor, Verdict, load_policy
from tests.conftest import POLICIES
from tests.sessions.test_stores import PACK, FailingEvidence, call


def _pack(tmp_path: Path, evidence: str | None) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(f"name: p\nextends: [{PACK}]\n" + (f"evidence: {evidence}\n" if evidence else ""))
    return p


def test_required_blocks_every_class_when_evidence_fails(tmp_path: Path) -> None:
    for evidence in (None, "required"):
        sink = FailingEvidence()
        sink.down = True
        gov = Governor(_pack(tmp_path, evidence), evidence=sink)
        d = gov.decide(call("e-1", "notes.read"))  # a read: not a durable class, still blocked
        assert d.verdict is Verdict.BLOCK and d.rule_ids == ("evidence.error",)


def test_best_effort_lets_reads_run_and_still_blocks_modifies(tmp_path: Path) -> None:
    sink = FailingEvidence()
    sink.down = True
    gov = Governor(_pack(tmp_path, "best_effort"), evidence=sink)
    read = gov.decide(call("e-2", "notes.read"))
    assert read.verdict is Verdict.ALLOW
    assert any(f.code == "not_recorded" and f.plane == "evidence" for f in read.findings)
    pack = tmp_path / "allow-modify.yaml"
    pack.write_text(
        "name: m\nevidence: best_effort\nconnectors: [{name: contracts}]\n"
        "tools: [{name: contracts.update, connector: contracts, class: modify}]\n"
        "agents: [{name: helper, purpose: test, tools: ['*']}]\n"
        "rules: [{id: updates-ok, match: {tools: [contracts.update]}, verdict: allow}]\n"
    )
    gov2 = Governor(pack, evidence=sink)
    sink.down = False
    assert gov2.decide(call("e-3", "contracts.update", id="C-1", status="draft")).verdict is Verdict.ALLOW  # the control
    sink.down = True
    change = gov2.decide(call("e-3", "contracts.update", id="C-1", status="draft"))
    # modify is a durable class: even best_effort never lets it run unrecorded
    assert change.verdict is Verdict.BLOCK and change.rule_ids == ("evidence.error",)


def test_shipped_packs_require_evidence() -> None:
    for pack in sorted(POLICIES.rglob("*.yaml")):
        if pack.name.endswith(".tests.yaml"):
            continue
        assert load_policy(pack).evidence == "required", pack


def test_under_a_required_pack_every_record_waits_for_the_disk(tmp_path: Path) -> None:
    from fiveplane import open_ledger

    led = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", origin="test.local/required")
    try:
        seen: list[bool] = []
        real = led.record_decision

        def spy(action, decision, *, durable):  # type: ignore[no-untyped-def]
            seen.append(durable)
            return real(action, decision, durable=durable)

        led.record_decision = spy  # type: ignore[method-assign]
        Governor(_pack(tmp_path, "best_effort"), evidence=led).decide(call("e-4", "notes.read"))
        Governor(_pack(tmp_path, None), evidence=led).decide(call("e-5", "notes.read"))
        assert seen == [False, True]  # a read: durable only when the pack requires evidence
        (tmp_path / "l.db").unlink()  # the ledger disappears: a read is blocked, nothing runs unrecorded
        d = Governor(_pack(tmp_path, None), evidence=led).decide(call("e-6", "notes.read"))
        assert d.verdict is Verdict.BLOCK and d.rule_ids == ("evidence.error",)
        assert led.required is False  # the caller's ledger object is left as it was
    finally:
        try:
            led.close()
        except Exception:
            pass
