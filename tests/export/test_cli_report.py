"""``fiveplane export`` and ``fiveplane report nist`` (exit codes, output), the sinks file, and leaks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fiveplane._cli._export import app as export_app
from fiveplane._cli._report import app as report_app
from fiveplane._demo import DEMO_NOTE
from fiveplane._export import ExportConfigError, SinkConfig, build_nist_report, build_sink, load_export_config, load_nist_mapping
from fiveplane._export._read import open_for_export

from .conftest import fill
from .receivers import HecReceiver

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "policies" / "examples" / "sales-support.yaml"

cli = typer.Typer()
cli.add_typer(export_app, name="export")
cli.add_typer(report_app, name="report")
runner = CliRunner()


def _run(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(cli, list(args), env=env, catch_exceptions=False)


# ---- the sinks file ------------------------------------------------------------------------------


def test_secrets_never_come_from_the_sinks_file(tmp_path: Path) -> None:
    f = tmp_path / "sinks.yaml"
    f.write_text("sinks:\n  - {name: s, type: hec, endpoint: 'https://h:8088', token: abc}\n")
    with pytest.raises(ExportConfigError, match=r"looks like a secret.*environment"):
        load_export_config(f)
    f.write_text("sinks:\n  - {name: s, type: webhook, endpoint: 'https://h/x', hmac_secret: abc}\n")
    with pytest.raises(ExportConfigError, match="secret_env"):
        load_export_config(f)


def test_sinks_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    f = tmp_path / "sinks.yaml"
    f.write_text("sinks:\n  - {name: s, type: syslog, endpoint: 'http://siem:514'}\n  - {name: s, type: jsonl, path: x}\n")
    with pytest.raises(ExportConfigError) as info:
        load_export_config(f)
    assert str(f) in str(info.value) and "udp://, tcp:// or tls://" in str(info.value)


def test_hec_token_comes_from_the_environment() -> None:
    cfg = SinkConfig(name="splunk", type="hec", endpoint="https://splunk.example:8088", token_env="MY_HEC")
    with pytest.raises(ExportConfigError, match=r"\$MY_HEC"):
        build_sink(cfg, {})
    sink = build_sink(cfg, {"MY_HEC": "t0k"})
    assert sink.type == "hec" and sink.formatter.name == "ocsf"
    sink.close()


def test_default_formats_per_sink_type(tmp_path: Path) -> None:
    assert build_sink(SinkConfig(name="f", type="jsonl", path=str(tmp_path / "x"))).formatter.name == "native"
    assert build_sink(SinkConfig(name="s", type="syslog", endpoint="tcp://127.0.0.1:6514")).formatter.name == "cef"
    assert build_sink(SinkConfig(name="o", type="otel", protocol="console")).formatter.name == "otel"


# ---- fiveplane export ------------------------------------------------------------------------------


def test_export_run_status_and_resume(synthetic: Any, tmp_path: Path) -> None:
    url, ledger = synthetic
    fill(ledger, 10)
    cfg = tmp_path / "sinks.yaml"
    out = tmp_path / "ocsf.jsonl"
    cfg.write_text(f"sinks:\n  - name: audit\n    type: jsonl\n    path: {out}\n    format: ocsf\n")
    r = _run("export", "run", "--sink", "audit", "--db", url, "--config", str(cfg), "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert (report["records"], report["events"], report["lag"]) == (10, 10, 0)
    fill(ledger, 5, start=10)
    r = _run("export", "status", "--db", url, "--config", str(cfg), "--json")
    status = json.loads(r.stdout)
    assert r.exit_code == 0 and status["sinks"][0]["lag"] == 5 and status["sinks"][0]["cursor"] == 9
    r = _run("export", "run", "--sink", "audit", "--db", url, "--config", str(cfg))
    assert r.exit_code == 0 and "9 → 14" in r.stdout
    assert [json.loads(line)["metadata"]["sequence"] for line in out.read_text().splitlines()] == list(range(15))
    r = _run("export", "status", "--db", url, "--config", str(cfg))
    assert r.exit_code == 0 and "audit" in r.stdout


def test_export_exit_codes(synthetic: Any, tmp_path: Path) -> None:
    url, ledger = synthetic
    fill(ledger, 6)
    # 2: bad input
    assert _run("export", "run", "--sink", "nope", "--db", url).exit_code == 2
    assert (
        _run(
            "export",
            "run",
            "--sink",
            "x",
            "--type",
            "hec",
            "--endpoint",
            "https://h:8088",
            "--db",
            url,
            env={"FIVEPLANE_HEC_TOKEN": ""},
        ).exit_code
        == 2
    )
    assert (
        _run(
            "export",
            "run",
            "--sink",
            "x",
            "--type",
            "jsonl",
            "--path",
            str(tmp_path / "a"),
            "--db",
            f"sqlite:///{tmp_path}/missing.db",
        ).exit_code
        == 2
    )
    # 1: delivery failed (receiver down past the retry budget), then dead letters
    rx = HecReceiver()
    rx.down()
    try:
        r = _run(
            "export",
            "run",
            "--sink",
            "hec",
            "--type",
            "hec",
            "--endpoint",
            rx.url,
            "--db",
            url,
            "--give-up-after",
            "0.2",
            env={"FIVEPLANE_HEC_TOKEN": rx.token},
        )
        assert r.exit_code == 1 and "FAILED" in r.stderr
        rx.up()
        rx.reject = {f"{ledger.origin}:2"}
        r = _run(
            "export",
            "run",
            "--sink",
            "hec",
            "--type",
            "hec",
            "--endpoint",
            rx.url,
            "--db",
            url,
            env={"FIVEPLANE_HEC_TOKEN": rx.token},
        )
        assert r.exit_code == 1 and "rejected" in r.stderr
        assert len(rx.events) == 5
    finally:
        rx.close()
    r = _run("export", "dead-letters", "--db", url, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout.splitlines()[0])["uid"] == f"{ledger.origin}:2"
    r = _run("export", "status", "--db", url)
    assert r.exit_code == 1  # a sink with dead letters needs attention


# ---- fiveplane report nist -------------------------------------------------------------------------


def test_nist_report_on_the_demo_ledger(sample_url: str, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    r = _run("report", "nist", "--db", sample_url, "--policy", str(PACK), "--html", str(html))
    assert r.exit_code == 0, r.output
    md = r.stdout
    for heading in (
        "## Ledger verification",
        "## Controls in force (policy)",
        "## Evidence per function and category",
        "## Blocked, paused and approved actions",
        "## Open approvals",
        "## Shadow and warn divergences",
    ):
        assert heading in md
    assert "**OK**" in md and "Latest signed checkpoint: size 76" in md
    assert "| `contracts.update-needs-manager` | require_approval | enforce |" in md
    assert re.search(r"\| MEASURE 2\.7 \| \d+ \|", md) and "| GOVERN | " in md
    assert "`trial.notes-need-approval`" in md  # the shadow divergence
    assert "email.send" in md.split("Blocked:")[1].split("Paused")[0]
    page = html.read_text()
    assert page.startswith("<!doctype html>") and '<span class="ok">OK</span>' in page and "<table>" in page


def test_nist_report_summary_and_failed_verification(sample_url: str) -> None:
    r = _run("report", "nist", "--db", sample_url, "--json")
    summary = json.loads(r.stdout)
    assert r.exit_code == 0
    assert summary["blocked"] == 2 and summary["paused_for_approval"] == 2 and summary["approvals_approved"] == 2
    assert summary["open_approvals"] == 0 and summary["divergences"] >= 1 and summary["verified"] is True
    assert set(summary["functions"]) == {"GOVERN", "MAP", "MEASURE", "MANAGE"} and all(summary["functions"].values())
    # tamper with a payload: the report is still written, and the exit code says the ledger fails
    import sqlite3

    db = sample_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE ledger_payloads SET body = CAST('{\"x\":1}' AS BLOB) WHERE seq = 5")
    r = _run("report", "nist", "--db", sample_url)
    assert r.exit_code == 1 and "**FAILED**" in r.stdout


def test_open_approvals_are_listed(synthetic: Any) -> None:
    url, ledger = synthetic
    meta = {
        "approval_id": "apr-1",
        "tool": "contracts.update_status",
        "requester": "rep-1",
        "role": "sales-manager",
        "status": "pending",
        "expires_at": "2999-01-01T00:00:00+00:00",
    }
    ledger.record_event("approval.requested", meta, {"reason": None}, action_id="a1", session_id="s")
    ledger.record_event(
        "approval.requested",
        {**meta, "approval_id": "apr-2", "expires_at": "2000-01-01T00:00:00+00:00"},
        None,
        action_id="a2",
        session_id="s",
    )
    reader = open_for_export(url)
    try:
        report = build_nist_report(reader)
    finally:
        reader.close()
    md = report.markdown()
    assert report.summary["open_approvals"] == 1
    assert "| apr-1 |" in md and "| pending |" in md and "expired without a decision" in md


def test_the_mapping_file_cites_real_categories() -> None:
    m = load_nist_mapping()
    assert set(m.functions) == {"GOVERN", "MAP", "MEASURE", "MANAGE"}
    for cat in ("GOVERN 1.1", "MAP 4.1", "MEASURE 2.7", "MANAGE 2.4"):
        assert m.title(cat)
    assert m.tags("decision", {"verdict": "block", "rule_ids": ["flow.x"], "planes": {"data": "high"}}).functions == (
        "GOVERN",
        "MAP",
        "MEASURE",
        "MANAGE",
    )
    assert "MEASURE 2.13" in m.tags("decision", {"verdict": "allow", "policy_verdict": "block", "mode": "shadow"}).categories


# ---- nothing the ledger redacted leaves it -----------------------------------------------------


def test_exports_never_contain_what_the_ledger_redacted(sample_url: str, tmp_path: Path) -> None:
    secrets = ["jane.roe@globex.example", "415 555 0134", "Jane Roe"]
    assert all(s in DEMO_NOTE for s in secrets)
    outputs = []
    for fmt in ("native", "ocsf", "cef"):
        out = tmp_path / f"{fmt}.jsonl"
        r = _run(
            "export", "run", "--sink", f"leak-{fmt}", "--type", "jsonl", "--path", str(out), "--format", fmt, "--db", sample_url
        )
        assert r.exit_code == 0, r.output
        outputs.append(out.read_text())
    r = _run("report", "nist", "--db", sample_url, "--policy", str(PACK))
    outputs.append(r.stdout)
    blob = "\n".join(outputs)
    assert "procurement-review@evil.example" in blob  # the injected address was stored as evidence (not PII of the customer)
    for s in secrets:
        assert s not in blob
