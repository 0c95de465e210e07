"""``fiveplane grants list | add | revoke | keygen``: output, JSON and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fiveplane._cli import app
from fiveplane._identity import GrantStore, load_root_key

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["grants", *args])
    return result.exit_code, result.output


def test_add_list_revoke(db: str) -> None:
    code, out = invoke(
        "add", "role:sales-rep", "-c", "read", "--connector", "crm", "--id", "reps.crm", "--db", db, "--by", "alice"
    )
    assert code == 0 and "added reps.crm: role:sales-rep may read" in out
    code, out = invoke(
        "add", "subagent:helper@planner", "-c", "read", "-c", "modify", "--tool", "crm.*", "--ttl", "8h", "--db", db, "--json"
    )
    assert code == 0
    added = json.loads(out)["added"]
    assert added["principal"] == "subagent:helper@planner" and added["expires"] and added["id"].startswith("g-")
    code, out = invoke("list", "--db", db, "--json")
    assert code == 0 and [g["id"] for g in json.loads(out)["grants"]] == sorted(["reps.crm", added["id"]])
    code, out = invoke("revoke", "reps.crm", "--reason", "re-org", "--db", db, "--by", "bob")
    assert code == 0 and "revoked reps.crm (re-org)" in out
    got = GrantStore(db).get("reps.crm")
    assert got is not None and got.revoked_by == "bob" and got.revoke_reason == "re-org" and got.created_by == "alice"
    code, out = invoke("list", "--db", db, "--json")
    assert [g["id"] for g in json.loads(out)["grants"]] == [added["id"]]
    code, out = invoke("list", "--all", "--db", db, "--json")
    assert {g["id"]: g["state"] for g in json.loads(out)["grants"]}["reps.crm"] == "revoked"
    code, out = invoke("list", "--db", db)
    assert code == 0 and "grants (1)" in out


def test_exit_codes(db: str) -> None:
    assert invoke("add", "user:rep-1", "-c", "read", "--tool", "*", "--id", "x", "--db", db)[0] == 0
    assert invoke("add", "user:rep-1", "-c", "read", "--tool", "*", "--id", "x", "--db", db)[0] == 1  # id taken
    assert invoke("revoke", "ghost", "--db", db)[0] == 1
    assert invoke("revoke", "x", "--db", db)[0] == 0
    assert invoke("revoke", "x", "--db", db)[0] == 1  # already revoked
    assert invoke("add", "rep-1", "-c", "read", "--tool", "*", "--db", db)[0] == 2  # bad principal
    assert invoke("add", "user:rep-1", "-c", "write", "--tool", "*", "--db", db)[0] == 2  # bad class
    assert invoke("add", "user:rep-1", "-c", "read", "--db", db)[0] == 2  # unscoped
    assert (
        invoke("add", "user:rep-1", "-c", "read", "--tool", "*", "--expires", "2030-01-01T00:00:00", "--db", db)[0] == 2
    )  # naive
    assert invoke("add", "user:rep-1", "-c", "read", "--tool", "*", "--ttl", "soon", "--db", db)[0] == 2
    assert invoke("add", "user:rep-1", "-c", "read", "--tool", "*", "--when", "args.x ==", "--db", db)[0] == 2
    assert invoke("list", "--db", "sqlite:////proc/no/such/dir.db")[0] == 2


def test_user_data_is_printed_literally(db: str) -> None:
    code, _ = invoke("add", "user:[bold red]mallory", "-c", "read", "--tool", "*", "--id", "m", "--db", db)
    assert code == 0
    result = runner.invoke(app, ["grants", "list", "--db", db], env={"COLUMNS": "250"})
    assert "user:[bold red]mallory" in result.output


def test_keygen(tmp_path: Path) -> None:
    key = tmp_path / "root.key"
    code, out = invoke("keygen", str(key), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["public_key"].startswith("ed25519/") and str(load_root_key(file=key).public_key) == data["public_key"]
    assert invoke("keygen", str(key))[0] == 1
    assert invoke("keygen", str(key), "--force")[0] == 0
