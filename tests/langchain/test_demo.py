"""The demo end to end: the reference scenario as a real create_agent agent, offline (and `fiveplane demo`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fiveplane import ApprovalStatus, ApprovalStore, Governor
from langchain_fiveplane import DemoResult, arun_langchain_demo, run_demo_cli, run_langchain_demo
from langchain_fiveplane._cli import app as cli_app
from langchain_fiveplane._demo import DemoRedactionPlane, build_demo_governor
from tests.conftest import SALES_PACK
from tests.langchain.conftest import PACK


def check(result: DemoResult) -> None:
    by_title = {e.title: e for e in result.decisions()}
    outside = next(e for e in result.decisions() if e.tool == "email.send" and "evil.example" in e.title)
    assert outside.verdict == "block" and "flow.email-recipient" in outside.rule_ids
    assert "untrusted content of crm.get_account_notes" in outside.explanation
    change = [e for e in result.decisions() if e.tool == "contracts.update_status" and e.point == "tool_call"]
    assert [e.verdict for e in change] == ["require_approval", "allow"]
    assert "approved by manager-1" in change[1].explanation
    approvals = [e.title for e in result.events if e.kind == "approval"]
    assert approvals[1] == "rep-1 tries to approve it: refused" and approvals[2] == "manager-1 approves it"
    assert [e.kind for e in result.events].count("resume") == 1
    assert result.executed == [
        "crm_search_accounts(query='Globex')",
        "crm_get_account_notes(account_id='ACC-1')",
        "contracts_update_status(contract_id='C-7', status='signed')",
        "email_send(to='bob@acme.example')",
    ]
    # PII: the model read the note redacted, and the answer carries none
    for pii in ("jane.roe@globex.example", "415 555 0134"):
        assert pii not in result.notes_seen_by_model and pii not in result.answer
    assert "<EMAIL_ADDRESS" in result.notes_seen_by_model
    assert result.approvals[0].decided_by == "manager-1"
    assert by_title["user request"].verdict == "allow"


@pytest.fixture
def demo_gov(db: str) -> Governor:
    return Governor(PACK, approvals=ApprovalStore(db), planes=[DemoRedactionPlane()])


def test_demo_runs_offline(demo_gov: Governor) -> None:
    result = run_langchain_demo(demo_gov)
    check(result)
    assert demo_gov.approvals is not None
    assert demo_gov.approvals.get(result.approvals[0].id).status is ApprovalStatus.CONSUMED


async def test_demo_runs_offline_async(db: str) -> None:
    gov = await asyncio.to_thread(lambda: Governor(PACK, approvals=ApprovalStore(db), planes=[DemoRedactionPlane()]))
    check(await arun_langchain_demo(gov))


def test_demo_with_the_shipped_pack_runs_every_call_with_its_token(db: str) -> None:
    """The `make demo` Governor: the pack's identity and network planes, each executed call carries its token."""
    gov, note = build_demo_governor(SALES_PACK, db)
    assert "identity" in note
    result = run_langchain_demo(gov)
    check(result)
    change = next(e for e in result.decisions() if e.tool == "contracts.update_status" and e.verdict == "allow")
    token = change.detail["token"]
    assert token["operation"] == "modify" and token["resource"] == "contracts/C-7" and token["arguments_bound"]
    assert result.tokens["contracts_update_status(contract_id='C-7', status='signed')"] == token["token_id"]
    assert all(result.tokens.values())


def test_demo_needs_an_approval_store() -> None:
    with pytest.raises(ValueError, match="approvals"):
        run_langchain_demo(Governor(PACK))


@pytest.fixture
def cli() -> typer.Typer:
    return cli_app


def test_fiveplane_demo_cli(cli: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make demo`: the shipped pack, the planes it configures, a fresh ledger, verify and a receipt."""
    monkeypatch.chdir(SALES_PACK.parent.parent.parent)
    out = CliRunner().invoke(cli, ["demo", "--json", "--dir", str(tmp_path)])
    assert out.exit_code == 0, out.stdout + str(out.exception)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    steps, tail = lines[:-1], lines[-1]
    blocked = [s for s in steps if s["verdict"] == "block" and s["tool"] == "email.send"]
    assert blocked and blocked[0]["outcome"] == "does not run (block)"
    assert "contracts_update_status(contract_id='C-7', status='signed')" in tail["executed"]
    assert all(tail["tokens"].values())  # the shipped pack's identity plane minted one per call
    ev = tail["evidence"]
    if "unavailable" in ev:  # the ledger is optional for the demo
        pytest.skip(f"no ledger here: {ev['unavailable']}")
    assert ev["verified"] is True and ev["entries"] > 20
    assert Path(ev["receipt"]["file"]).read_text().strip()


def test_fiveplane_demo_cli_text(cli: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SALES_PACK.parent.parent.parent)
    text = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path), "--no-evidence"])
    assert text.exit_code == 0, text.stdout
    assert "manager-1 approves it" in text.stdout and "tools that really ran" in text.stdout
    bad_model = CliRunner().invoke(cli, ["demo", "--model", "nosuchprovider:x", "--no-evidence", "--dir", str(tmp_path)])
    assert bad_model.exit_code == 2
    assert run_demo_cli(Path("no/such/pack.yaml"), directory=tmp_path, evidence=False) == 2


def test_run_demo_cli_with_the_callers_governor(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """How the core wires it in: its own Governor (planes, approvals, ledger) handed to the LangChain demo."""
    try:
        from fiveplane._ledger import Ed25519Signer, open_ledger
    except ImportError:
        pytest.skip("no ledger in this checkout")
    signer = Ed25519Signer.generate("test.fiveplane.local/lc")
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", key=signer, checkpoint_interval=None)
    try:
        gov = Governor(PACK, approvals=ApprovalStore(db), planes=[DemoRedactionPlane()], evidence=ledger)
        assert run_demo_cli(json_out=True, governor=gov, directory=tmp_path) == 0
    finally:
        ledger.close()
    tail = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert tail["evidence"]["verified"] is True and Path(tail["evidence"]["receipt"]["file"]).exists()
