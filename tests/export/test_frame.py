"""Notebook views: ``to_dataframe`` in the trace-tool shape, findings, the trace tree, plots (Agg)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd

from fiveplane._export import (
    findings_dataframe,
    plot_findings,
    plot_latency,
    plot_rule_hits,
    plot_timeline,
    plot_verdicts,
    print_trace_tree,
    records_dataframe,
    to_dataframe,
    trace_tree,
)
from fiveplane._export._frame import load_steps


def test_one_row_per_step_in_the_trace_tool_shape(sample_url: str) -> None:
    df = to_dataframe(sample_url)
    assert df.index.name == "decision_id" and df.index.is_unique and len(df) == 24
    for col in (
        "trace_id",
        "span_id",
        "parent_id",
        "session_id",
        "agent_name",
        "hook",
        "action",
        "effect",
        "rule_ids",
        "reason",
        "planes",
        "latency_ms",
        "outcome",
        "approval_id",
        "approver",
        "ts_start",
        "ts_end",
    ):
        assert col in df.columns, col
    assert str(df["ts_start"].dtype).startswith("datetime64") and df["ts_start"].dt.tz is not None
    assert (df["ts_end"] >= df["ts_start"]).all()
    block = df[(df["effect"] == "block") & (df["session_id"] == "demo-session")].iloc[0]
    assert block["tool"] == "email.send" and block["outcome"] == "blocked" and "email.external-blocked" in block["rule_ids"]
    assert set(block["planes"]) >= {"data", "reasoning"}
    granted = df[df["rule_ids"].apply(lambda r: "approval.granted" in r)].iloc[0]
    assert granted["approver"] == "manager-1" and granted["approval_id"].startswith("apr-")
    paused = df[df["effect"] == "require_approval"].iloc[0]
    assert paused["approval_latency_s"] >= 0
    results = df[df["hook"] == "tool_result"]
    assert results["parent_id"].isin(df["span_id"]).all()
    assert df["divergent"].sum() >= 1
    assert len(to_dataframe(sample_url, session_id="tuning-trial")) == 12
    assert set(to_dataframe(sample_url, effect="block")["effect"]) == {"block"}
    assert len(to_dataframe(sample_url, plane="data")) >= 4


def test_findings_records_and_trace_tree(sample_url: str) -> None:
    data = load_steps(sample_url)
    findings = findings_dataframe(data)
    data_plane = findings[findings["plane"] == "data"]
    assert {"EMAIL_ADDRESS", "PERSON", "PHONE_NUMBER"} <= set(data_plane.explode("entities")["entities"].dropna())
    records = records_dataframe(data)
    assert len(records) == 76 and records.index.name == "seq" and "meta.verdict" in records.columns
    df = to_dataframe(data)
    tree = trace_tree(df, session_id="demo-session")
    assert len(tree) == 12 and tree["depth"].max() == 1
    first_result = tree.index.get_loc(tree[tree["hook"] == "tool_result"].index[0])
    assert tree.iloc[first_result - 1]["hook"] == "tool_call"
    text = print_trace_tree(df, session_id="demo-session")
    assert "    └── tool_result crm.search_accounts: allow" in text


def test_plots_draw(sample_url: str, tmp_path: Path) -> None:
    data = load_steps(sample_url)
    df = to_dataframe(data)
    for i, ax in enumerate(
        [
            plot_timeline(df, session_id="demo-session"),
            plot_verdicts(df),
            plot_latency(df),
            plot_rule_hits(df),
            plot_findings(findings_dataframe(data)),
            plot_findings(findings_dataframe(data), by="entities"),
        ]
    ):
        ax.figure.savefig(tmp_path / f"{i}.png")
        assert (tmp_path / f"{i}.png").stat().st_size > 1000
    assert isinstance(df, pd.DataFrame)


def test_core_imports_without_pandas_or_opentelemetry() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('pandas', 'matplotlib', 'opentelemetry', 'ocsf_json_schema', 'jsonschema'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import fiveplane, fiveplane._export, fiveplane._cli._export, fiveplane._cli._report\n"
        "try:\n"
        "    fiveplane._export.to_dataframe('sqlite:////nonexistent/x.db')\n"
        "except ImportError as exc:\n"
        "    assert \"pip install 'fiveplane[notebooks]'\" in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
