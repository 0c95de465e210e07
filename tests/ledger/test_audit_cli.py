"""`fiveplane audit …`: output, JSON and exit codes (0 ok, 1 verification failed, 2 bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fiveplane import ActionBlocked, Governor
from fiveplane._cli import app
from fiveplane._ledger import Ed25519Signer, NoteVerifier, open_ledger
from tests.ledger.test_ledger import CHAIN, PACK, lookup, send, update

runner = CliRunner()


@pytest.fixture
def story_db(sqlite_url: str, signer: Ed25519Signer) -> str:
    with open_ledger(sqlite_url, key=signer, checkpoint_interval=None) as led:
        gov = Governor(PACK, evidence=led)
        look, upd, mail = (
            gov.govern(lookup, tool="crm.lookup"),
            gov.govern(update, tool="crm.update"),
            gov.govern(send, tool="mail.send"),
        )
        with gov.run(CHAIN, session_id="s-cli", intent="look up [c1] and tell them", purpose="testing"):
            look(customer="c1")
            upd(customer="c1", tier="[gold]")
            with pytest.raises(ActionBlocked):
                mail(to="x@evil.example", body="[bold]hi[/bold]")
        led.checkpoint()
    return sqlite_url


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", *args])
    return result.exit_code, result.output


def test_show_table_and_json_with_filters(story_db: str) -> None:
    code, out = cli("show", "--db", story_db)
    assert code == 0 and "crm.update" in out and "block" in out
    code, out = cli("show", "--db", story_db, "--json", "--verdict", "block")
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert code == 0 and len(rows) == 1 and rows[0]["meta"]["tool"] == "mail.send" and rows[0]["kind"] == "decision"
    code, out = cli("show", "--db", story_db, "--json", "--tool", "crm.lookup", "--kind", "outcome", "-n", "5")
    assert [json.loads(x)["meta"]["status"] for x in out.splitlines()] == ["success"]
    code, out = cli("show", "--db", story_db, "--session", "nope")
    assert code == 0 and "no matching entries" in out


def test_reconstruct_by_prefix_and_json(story_db: str) -> None:
    _, out = cli("show", "--db", story_db, "--json", "--tool", "crm.update", "--kind", "decision")
    action_id = json.loads(out.splitlines()[0])["action_id"]
    code, out = cli("reconstruct", action_id[:10], "--db", story_db)
    assert code == 0, out
    for expected in (
        "user:tess (tester) → agent:test-agent",
        "crm.update [modify]",
        '"tier": "[gold]"',
        "look up [c1] and tell them",
        "test.crm",
        "success",
    ):
        assert expected in out
    code, out = cli("reconstruct", action_id, "--db", story_db, "--json")
    story = json.loads(out)
    assert code == 0 and story["decision"]["verdict"] == "allow" and story["what"]["arguments"]["tier"] == "[gold]"
    assert cli("reconstruct", "ffffffffff", "--db", story_db)[0] == 2


def test_receipt_and_offline_verification(story_db: str, tmp_path: Path, verifier: NoteVerifier, key_file: Path) -> None:
    out_file = tmp_path / "r.tlog-proof"
    code, _ = cli("receipt", "3", "--db", story_db, "--out", str(out_file))
    assert code == 0 and out_file.read_text().startswith("c2sp.org/tlog-proof@v1\n")
    code, out = cli("verify-receipt", str(out_file), "--key", str(verifier))
    assert code == 0 and "OK" in out and "entry 3" in out
    code, out = cli("verify-receipt", str(out_file), "--key", str(key_file) + ".pub", "--json")
    assert code == 0 and json.loads(out)["index"] == 3 and json.loads(out)["entry"]["kind"]
    other = Ed25519Signer.generate(verifier.name).verifier
    code, out = cli("verify-receipt", str(out_file), "--key", str(other))
    assert code == 1 and "trusted key" in out
    out_file.write_text(out_file.read_text().replace("index 3", "index 4"))
    assert cli("verify-receipt", str(out_file), "--key", str(verifier))[0] == 1
    assert cli("verify-receipt", str(tmp_path / "none"), "--key", str(verifier))[0] == 2
    assert cli("verify-receipt", str(out_file), "--key", "garbage")[0] == 2


def test_receipt_beyond_latest_checkpoint_needs_a_signing_key(story_db: str, key_file: Path) -> None:
    with open_ledger(story_db, create=False) as led:
        led.record_event("test.event", {"late": True})
        size = led.size()
    code, out = cli("receipt", str(size - 1), "--db", story_db)
    assert code == 2 and "no checkpoint covers" in out
    code, out = cli("receipt", str(size - 1), "--db", story_db, "--signing-key", str(key_file))
    assert code == 0 and out.startswith("c2sp.org/tlog-proof@v1")


def test_checkpoint_print_sign_and_keygen(story_db: str, key_file: Path, tmp_path: Path) -> None:
    code, out = cli("checkpoint", "--db", story_db)
    assert code == 0 and out.splitlines()[0].startswith("test.fiveplane.local/") and "— " in out
    code, out = cli("checkpoint", "--db", story_db, "--json")
    assert code == 0 and json.loads(out)["size"] > 0
    assert cli("checkpoint", "--db", story_db, "--sign")[0] == 2
    assert cli("checkpoint", "--db", story_db, "--sign", "--signing-key", str(key_file))[0] == 0
    code, out = cli("keygen", "acme.example/agents", "--out", str(tmp_path / "new.key"))
    assert (
        code == 0
        and any(line.startswith("acme.example/agents+") for line in out.splitlines())
        and (tmp_path / "new.key.pub").exists()
    )
    assert cli("keygen", "acme.example/agents", "--out", str(tmp_path / "new.key"))[0] == 2


def test_checkpoint_missing_is_a_failure(sqlite_url: str, origin: str) -> None:
    with open_ledger(sqlite_url, origin=origin) as led:
        led.record_event("test.event", {})
    code, out = cli("checkpoint", "--db", sqlite_url)
    assert code == 1 and "no signed checkpoint" in out


def test_erase_and_verify_still_passes(story_db: str, verifier: NoteVerifier, key_file: Path) -> None:
    _, out = cli("show", "--db", story_db, "--json", "--tool", "crm.lookup", "--kind", "intent")
    action_id = json.loads(out.splitlines()[0])["action_id"]
    assert cli("erase", "--db", story_db, "--action", action_id, "--yes")[0] == 2  # no reason
    code, out = cli(
        "erase", "--db", story_db, "--action", action_id, "--reason", "DSR-42", "--signing-key", str(key_file), "--yes"
    )
    assert code == 0 and "erased payloads" in out and "no --signing-key" not in out
    code, out = cli("verify", "--db", story_db, "--key", str(verifier), "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["payloads_erased"] >= 3 and report["uncovered"] == 0
    code, out = cli("reconstruct", action_id, "--db", story_db)
    assert code == 0 and "payloads were erased" in out
    assert cli("erase", "--db", story_db, "999", "--reason", "x", "--yes")[0] == 2


def test_an_erasure_without_the_key_is_uncovered(story_db: str, verifier: NoteVerifier) -> None:
    _, out = cli("show", "--db", story_db, "--json", "--tool", "crm.update", "--kind", "intent")
    action_id = json.loads(out.splitlines()[0])["action_id"]
    code, out = cli("erase", "--db", story_db, "--action", action_id, "--reason", "DSR-43", "--yes")
    assert code == 0 and "no --signing-key" in out
    with open_ledger(story_db, create=False) as led:
        erasure_seq = led.size() - 1
    code, out = cli("verify", "--db", story_db, "--key", str(verifier))
    assert code == 1 and f"first bad sequence number {erasure_seq}:" in out and f"{erasure_seq} erasure" in out
    assert "not covered by any checkpoint signed by a trusted key" in out
    code, out = cli("verify", "--db", story_db, "--key", str(verifier), "--json")
    report = json.loads(out)
    assert code == 1 and report["uncovered"] == 1 and report["uncovered_entries"][0]["kind"] == "erasure"
    assert [p["check"] for p in report["problems"]] == ["coverage"]
    code, out = cli("verify", "--db", story_db)  # the database's own keys: reported, not failed
    assert code == 0 and "warning" in out and "UNCOVERED" in out


def test_verify_json_and_bad_inputs(story_db: str, tmp_path: Path, verifier: NoteVerifier) -> None:
    code, out = cli("verify", "--db", story_db, "--json")
    assert code == 0 and json.loads(out)["first_bad_seq"] is None
    assert cli("verify", "--db", f"sqlite:///{tmp_path}/missing.db")[0] == 2
    assert cli("verify", "--db", story_db, "--against", str(tmp_path / "nope"))[0] == 2
    assert cli("verify", "--db", story_db, "--key", "not-a-key")[0] == 2
    code, out = cli("verify", "--db", story_db)
    assert code == 0 and "trusting the verifier key(s) recorded in the database" in out


def test_recover_command(story_db: str) -> None:
    code, out = cli("recover", "--db", story_db)
    assert code == 0 and "marked 0 action(s)" in out


def test_user_data_with_brackets_is_printed_literally(story_db: str) -> None:
    code, out = cli("reconstruct", "[bold]nope[/bold]", "--db", story_db)
    assert code == 2 and "[bold]nope[/bold]" in out
