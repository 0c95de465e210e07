"""The policy CLI: exit codes and output of check / test / explain, and the demo."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fiveplane._cli import app
from tests.conftest import POLICIES, SALES_PACK

runner = CliRunner()


def test_check_ok_and_json() -> None:
    result = runner.invoke(app, ["policy", "check", str(POLICIES)])
    assert result.exit_code == 0, result.output
    assert "sales-support.yaml" in result.output
    result = runner.invoke(app, ["policy", "check", "--json", str(SALES_PACK)])
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["packs"][0]["rules"] == 7


def test_check_reports_file_line_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nrules:\n  - id: r\n    verdict: allow\n    colour: red\n")
    result = runner.invoke(app, ["policy", "check", str(bad)])
    assert result.exit_code == 1
    assert f"{bad.resolve()}:5: rules.0: unknown key 'colour'" in result.output


def test_check_missing_file_is_bad_input(tmp_path: Path) -> None:
    assert runner.invoke(app, ["policy", "check", str(tmp_path / "none.yaml")]).exit_code == 2


def test_policy_test_passes_shipped_cases() -> None:
    result = runner.invoke(app, ["policy", "test", str(POLICIES)])
    assert result.exit_code == 0, result.output
    assert " 0 failed" in result.output


def test_policy_test_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    t = tmp_path / "x.tests.yaml"
    t.write_text(
        f"policy: {SALES_PACK}\ncases:\n  - name: wrong\n    user: {{id: r, roles: [sales-rep]}}\n    agent: sales-assistant\n"
        "    purpose: sales-support\n    steps:\n      - tool: email.send\n        arguments: {to: a@evil.example, subject: s, body: b}\n"
        "        expect: {verdict: allow}\n"
    )
    result = runner.invoke(app, ["policy", "test", "--json", str(t)])
    assert result.exit_code == 1
    case = json.loads(result.stdout)["cases"][0]
    assert case["passed"] is False and "expected allow" in case["failures"][0]


def test_explain_prints_one_decision_per_line(tmp_path: Path) -> None:
    chain = [{"kind": "user", "id": "rep-1", "roles": ["sales-rep"]}, {"kind": "agent", "id": "sales-assistant"}]
    lines = [
        {
            "point": "tool_call",
            "tool": "crm.get_account_notes",
            "arguments": {"account_id": "A"},
            "principal": chain,
            "session_id": "s",
            "purpose": "sales-support",
        },
        {
            "point": "tool_call",
            "tool": "contracts.update_status",
            "arguments": {"contract_id": "C", "status": "cancelled"},
            "principal": chain,
            "session_id": "s",
            "purpose": "sales-support",
        },
    ]
    f = tmp_path / "a.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    result = runner.invoke(app, ["policy", "explain", "--policy", str(SALES_PACK), "--actions", str(f)])
    assert result.exit_code == 0, result.output
    out = [json.loads(x) for x in result.stdout.splitlines()]
    assert [o["verdict"] for o in out] == ["allow", "block"]  # one session: the sequence rule fires
    assert out[1]["rule_ids"] == ["contracts.no-cancel-after-crm-notes"]
    assert all({"verdict", "rule_ids", "findings", "explanation"} <= o.keys() for o in out)
    text = runner.invoke(app, ["policy", "explain", "-p", str(SALES_PACK), "-a", str(f), "--format", "text"])
    assert text.exit_code == 0 and "block" in text.stdout


def test_explain_bad_input_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_text('{"point": "tool_call", "tool": "x", "principal": [{"kind":"agent","id":"a"}], "session_id": "s"}\n{not json\n')
    result = runner.invoke(app, ["policy", "explain", "--policy", str(SALES_PACK), "--actions", str(f)])
    assert result.exit_code == 2 and f"{f}:2: not JSON" in result.output
    f.write_text('{"point": "tool_call", "principal": [{"kind":"agent","id":"a"}], "session_id": "s"}\n')
    result = runner.invoke(app, ["policy", "explain", "--policy", str(SALES_PACK), "--actions", str(f)])
    assert result.exit_code == 2 and f"{f}:1: invalid action" in result.output


def test_demo_runs_the_reference_scenario(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--framework", "core", "--json", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    steps = [json.loads(x) for x in result.stdout.splitlines()]
    by_title = {s["title"]: s for s in steps}
    assert by_title["search the CRM"]["verdict"] == "allow"
    assert by_title["mark contract C-7 signed"]["verdict"] == "require_approval"
    assert by_title["e-mail the contract outside (injected)"]["verdict"] == "block"
    assert by_title["e-mail the contract outside (injected)"]["outcome"].startswith("did not run")
    assert by_title["e-mail a colleague"]["verdict"] == "allow"
    # two separate capability tokens: a read token for the CRM, a write token (bound to its
    # arguments) for the approved contract change
    read = by_title["read account notes"]["token"]
    write = by_title["mark contract C-7 signed (after manager-1 approved)"]["token"]
    assert read["operation"] == "read" and read["resource"] == "accounts/ACC-1"
    assert write["operation"] == "modify" and write["resource"] == "contracts/C-7" and write["arguments_bound"] is True
    assert read["token_id"] != write["token_id"]
    assert by_title["mark contract C-7 signed (after manager-1 approved)"]["outcome"] == "ran"
    # the evidence: a verified ledger and a receipt that verifies offline
    receipt = tmp_path / "demo-receipt.tlog-proof"
    check = runner.invoke(app, ["audit", "verify-receipt", str(receipt), "--key", str(tmp_path / "demo.key.pub")])
    assert check.exit_code == 0, check.output
    assert runner.invoke(app, ["audit", "verify", "--db", f"sqlite:///{tmp_path / 'demo.db'}"]).exit_code == 0
