"""Notebook views of the ledger: pandas frames in the shape trace-tool users know, and plots.

``to_dataframe`` gives one row per judged step (a decision record), indexed by ``decision_id``, with
OTel-compatible ``trace_id`` / ``span_id`` / ``parent_id`` (the same ids the OpenTelemetry export
uses, so rows join with Phoenix, Langfuse or LangSmith exports of the same run), the verdict
(``effect``), rule ids, planes, latency and the outcome — like LangSmith's runs or Phoenix's
``get_spans_dataframe``. ``findings_dataframe`` has one row per plane finding, ``records_dataframe``
one per ledger record. pandas and matplotlib are imported lazily: ``pip install 'fiveplane[notebooks]'``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._ledger import EvidenceRecord, Ledger
from ._read import ActionIndex, open_for_export, parse_time, read_range, span_id_for, trace_id_for
from ._step import Step, step_for

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped,import-not-found,unused-ignore]

__all__ = [
    "LedgerSteps",
    "findings_dataframe",
    "load_steps",
    "plot_findings",
    "plot_latency",
    "plot_rule_hits",
    "plot_timeline",
    "plot_verdicts",
    "print_trace_tree",
    "records_dataframe",
    "to_dataframe",
    "trace_tree",
]

_FIX = "pip install 'fiveplane[notebooks]'"

_SPAN_KIND = {
    "input": "CHAIN",
    "model_output": "LLM",
    "final_output": "LLM",
    "tool_call": "TOOL",
    "tool_result": "TOOL",
    "retrieval": "RETRIEVER",
    "delegation": "AGENT",
}
_VERDICT_COLOR = {
    "allow": "#2e7d32",
    "modify": "#0288d1",
    "narrow": "#00838f",
    "defer": "#f9a825",
    "require_approval": "#ef6c00",
    "block": "#c62828",
}
_ENTITY = re.compile(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b|\bPERSON\b|\bLOCATION\b|\bNRP\b|\bURL\b|\bIBAN_CODE\b")


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise ImportError(f"the notebook views need pandas: {_FIX}") from exc
    return pandas


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"the plotting helpers need matplotlib: {_FIX}") from exc
    return plt


@dataclass
class LedgerSteps:
    """Everything the frames are built from: the records and the step of each decision."""

    origin: str
    records: list[EvidenceRecord] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    outcomes: dict[str, list[EvidenceRecord]] = field(default_factory=dict)
    approvals: dict[str, list[EvidenceRecord]] = field(default_factory=dict)


def _iter_records(ledger: Ledger, batch: int = 2000) -> Iterator[EvidenceRecord]:
    start = 0
    while True:
        recs = read_range(ledger, start, batch)
        if not recs:
            return
        yield from recs
        start = recs[-1].seq + 1


def _open(source: Ledger | str | Path) -> tuple[Ledger, bool]:
    if isinstance(source, Ledger):
        return source, False
    url = str(source)
    if "://" not in url:
        url = f"sqlite:///{Path(url).resolve()}"
    return open_for_export(url), True


def load_steps(source: Ledger | str | Path) -> LedgerSteps:
    """Read a whole ledger (a :class:`Ledger`, a database URL or a SQLite file path)."""
    ledger, owned = _open(source)
    try:
        index = ActionIndex(None)
        out = LedgerSteps(ledger.origin)
        for rec in _iter_records(ledger):
            index.observe(rec)
            out.records.append(rec)
            if rec.kind == "decision":
                out.steps.append(step_for(rec, index))
            elif rec.kind == "outcome" and rec.action_id:
                out.outcomes.setdefault(rec.action_id, []).append(rec)
            elif rec.kind.startswith("approval.") and rec.action_id:
                out.approvals.setdefault(rec.action_id, []).append(rec)
        return out
    finally:
        if owned:
            ledger.close()


def _ts(value: Any) -> datetime | None:
    return parse_time(value)


def _outcome_of(data: LedgerSteps, step: Step) -> EvidenceRecord | None:
    for rec in data.outcomes.get(step.record.action_id or "", []):
        if rec.seq > step.record.seq:
            return rec
    return None


def _row(data: LedgerSteps, step: Step) -> dict[str, Any]:
    rec = step.record
    out = _outcome_of(data, step)
    out_payload = (
        out.payload.get("outcome", {}) if out is not None and out.payload_status == "ok" and isinstance(out.payload, dict) else {}
    )
    approvals = data.approvals.get(rec.action_id or "", [])
    approval_id = step.approval_id or next((a.meta.get("approval_id") for a in approvals), None)
    decided = next((a for a in approvals if a.kind in ("approval.approved", "approval.denied")), None)
    requested = next((a for a in approvals if a.kind == "approval.requested"), None)
    latency_s = None
    if decided is not None and requested is not None:
        t0, t1 = _ts(requested.time), _ts(decided.time)
        if t0 and t1:
            latency_s = (t1 - t0).total_seconds()
    # an approval granted for an earlier, identical action: its id is in the decision's findings/rules
    if approval_id is None and "approval.granted" in step.rule_ids:
        m = re.search(r"apr-[0-9a-f]+", step.explanation or "")
        approval_id = m.group(0) if m else None
    approver = decided.meta.get("decided_by") if decided is not None else None
    if approver is None and "approval.granted" in step.rule_ids:
        m = re.search(r"approved by ([\w.@-]+)", step.explanation or "")
        approver = m.group(1) if m else None
    findings = step.findings
    planes = sorted({str(f.get("plane")) for f in findings} | set(step.planes))
    strongest = max(
        findings,
        key=lambda f: (
            f.get("verdict") is not None,
            ["info", "warning", "high", "critical", "error"].index(str(f.get("severity", "info")))
            if str(f.get("severity", "info")) in ["info", "warning", "high", "critical", "error"]
            else 0,
        ),
        default=None,
    )
    ts_start = _ts(step.started_at)
    ts_end = _ts(out.time) if out is not None else _ts(step.evaluated_at)
    cap = step.capability or {}
    errors = step.errors
    return {
        "decision_id": rec.action_id or f"seq-{rec.seq}",
        "seq": rec.seq,
        "trace_id": trace_id_for(rec.session_id, rec.action_id),
        "span_id": span_id_for(rec.action_id),
        "parent_id": span_id_for(rec.parent_id) if rec.parent_id else None,
        "action_id": rec.action_id,
        "parent_action_id": rec.parent_id,
        "session_id": rec.session_id,
        "agent_name": step.agent,
        "framework": None,
        "hook": step.point,
        "span_kind": _SPAN_KIND.get(step.point or "", "UNKNOWN"),
        "action": step.tool or step.point,
        "tool": step.tool,
        "connector": step.connector,
        "action_class": step.action_class,
        "resource": cap.get("resource"),
        "principal": step.principal_text,
        "user_id": str(step.user.get("id")) if step.user else None,
        "roles": list(step.user.get("roles") or []) if step.user else [],
        "effect": step.verdict,
        "policy_verdict": step.policy_verdict,
        "mode": step.mode,
        "divergent": step.policy_verdict is not None and step.policy_verdict != step.verdict,
        "rule_ids": step.rule_ids,
        "reason": step.explanation,
        "plane": str(strongest.get("plane")) if strongest else ("reasoning" if step.rule_ids else None),
        "planes": planes,
        "n_findings": len(findings),
        "obligations": sorted({str(o.get("kind")) for o in step.obligations}),
        "labels": step.labels,
        "redacted": step.redacted_entities,
        "token_id": cap.get("token_id"),
        "approval_id": approval_id,
        "approver": approver,
        "approval_latency_s": latency_s,
        "latency_ms": step.latency_ms,
        "error": "; ".join(str(e) for e in errors) if errors else None,
        "outcome": out_payload.get("status") or (out.meta.get("status") if out is not None else None),
        "duration_ms": out_payload.get("duration_ms")
        if out_payload
        else (out.meta.get("duration_ms") if out is not None else None),
        "result_digest": out_payload.get("result_digest"),
        "policy_hash": step.policy_hash,
        "policy_version": step.policy_version,
        "intent": step.action.get("intent"),
        "purpose": step.action.get("purpose"),
        "arguments": step.action.get("arguments"),
        "payload_status": "erased" if step.erased else rec.payload_status,
        "ts_start": ts_start,
        "ts_end": ts_end if ts_end and ts_start and ts_end >= ts_start else ts_start,
        "time": _ts(rec.time),
    }


def to_dataframe(
    source: Ledger | str | Path | LedgerSteps,
    *,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    session_id: str | None = None,
    plane: str | None = None,
    effect: str | None = None,
) -> pd.DataFrame:
    """One row per judged step, indexed by ``decision_id`` (the action id), oldest first.

    Columns: ``trace_id``, ``span_id``, ``parent_id`` (OTel ids, as in the OpenTelemetry export),
    ``session_id``, ``agent_name``, ``hook`` (mediation point), ``span_kind`` (OpenInference kind),
    ``action``/``tool``/``connector``/``action_class``/``resource``, ``principal``, ``effect``
    (verdict), ``policy_verdict``, ``mode``, ``divergent`` (shadow/warn: the policy disagreed),
    ``rule_ids``, ``reason``, ``plane``/``planes``/``n_findings``, ``obligations``, ``labels``,
    ``redacted`` (entity counts), ``approval_id``, ``approver``, ``approval_latency_s``,
    ``latency_ms`` (decision time), ``error``, ``outcome``, ``duration_ms`` (tool time),
    ``arguments`` (as stored, after redaction), ``payload_status``, ``ts_start``/``ts_end`` (UTC).

    Filters: ``start``/``end`` (on ``ts_start``), ``session_id``, ``plane`` (any plane with findings,
    or ``reasoning``), ``effect`` (verdict).
    """
    pd = _pandas()
    data = source if isinstance(source, LedgerSteps) else load_steps(source)
    rows = [_row(data, s) for s in data.steps]
    columns = list(_row(LedgerSteps(""), Step(EvidenceRecord(seq=0, kind="decision", time=""))).keys())
    df = pd.DataFrame(rows, columns=columns)
    for col in ("ts_start", "ts_end", "time"):
        df[col] = pd.to_datetime(df[col], utc=True)
    if df["decision_id"].duplicated().any():
        dup = df["decision_id"].duplicated(keep=False)
        df.loc[dup, "decision_id"] = df.loc[dup, "decision_id"] + ":" + df.loc[dup, "seq"].astype(str)
    df = df.set_index("decision_id")
    if session_id is not None:
        df = df[df["session_id"] == session_id]
    if effect is not None:
        df = df[df["effect"] == effect]
    if plane is not None:
        df = df[df["planes"].apply(lambda ps: plane in ps) | (df["plane"] == plane)]
    if start is not None:
        df = df[
            df["ts_start"] >= pd.Timestamp(start, tz="UTC") if isinstance(start, str) else df["ts_start"] >= pd.Timestamp(start)
        ]
    if end is not None:
        df = df[df["ts_start"] < pd.Timestamp(end, tz="UTC") if isinstance(end, str) else df["ts_start"] < pd.Timestamp(end)]
    return df


def findings_dataframe(source: Ledger | str | Path | LedgerSteps) -> pd.DataFrame:
    """One row per plane finding: ``decision_id``, ``seq``, ``time``, ``session_id``, ``hook``, ``tool``,
    ``plane``, ``code``, ``severity``, ``rule_id``, ``finding_verdict``, ``effect`` (the decision's
    verdict), ``entities`` (entity types named by a data-plane finding), ``message``."""
    pd = _pandas()
    data = source if isinstance(source, LedgerSteps) else load_steps(source)
    rows = []
    for step in data.steps:
        for f in step.findings:
            msg = str(f.get("message") or "")
            entities = sorted(set(_ENTITY.findall(msg))) if f.get("plane") == "data" else []
            rows.append(
                {
                    "decision_id": step.record.action_id,
                    "seq": step.record.seq,
                    "time": _ts(step.record.time),
                    "session_id": step.record.session_id,
                    "hook": step.point,
                    "tool": step.tool,
                    "plane": f.get("plane"),
                    "code": f.get("code"),
                    "severity": f.get("severity"),
                    "rule_id": f.get("rule_id"),
                    "finding_verdict": f.get("verdict"),
                    "effect": step.verdict,
                    "mode": step.mode,
                    "entities": entities,
                    "message": msg,
                }
            )
    cols = [
        "decision_id",
        "seq",
        "time",
        "session_id",
        "hook",
        "tool",
        "plane",
        "code",
        "severity",
        "rule_id",
        "finding_verdict",
        "effect",
        "mode",
        "entities",
        "message",
    ]
    df = pd.DataFrame(rows, columns=cols)
    df["time"] = pd.to_datetime(df["time"], utc=True)
    return df


def records_dataframe(source: Ledger | str | Path | LedgerSteps) -> pd.DataFrame:
    """One row per ledger record (``seq`` index): kind, time, ids, payload status and ``meta.*`` columns."""
    pd = _pandas()
    data = source if isinstance(source, LedgerSteps) else load_steps(source)
    rows = [
        {
            "seq": r.seq,
            "kind": r.kind,
            "time": _ts(r.time),
            "action_id": r.action_id,
            "parent_id": r.parent_id,
            "session_id": r.session_id,
            "payload_status": r.payload_status,
            **{f"meta.{k}": v for k, v in r.meta.items()},
        }
        for r in data.records
    ]
    df = pd.DataFrame(rows)
    if not df.empty:
        df["time"] = pd.to_datetime(df["time"], utc=True)
        df = df.set_index("seq")
    return df


def trace_tree(df: pd.DataFrame, trace_id: str | None = None, *, session_id: str | None = None) -> pd.DataFrame:
    """The steps of one trace (or session) in parent → child order, with a ``depth`` column.

    Tool results hang under their tool call; everything else is a root, in time order.
    """
    pd = _pandas()
    sub = df
    if trace_id is not None:
        sub = sub[sub["trace_id"] == trace_id]
    if session_id is not None:
        sub = sub[sub["session_id"] == session_id]
    sub = sub.sort_values(["ts_start", "seq"])
    children: dict[str, list[Any]] = {}
    roots: list[Any] = []
    spans = set(sub["span_id"])
    for idx, row in sub.iterrows():
        parent = row["parent_id"]
        if isinstance(parent, str) and parent in spans:
            children.setdefault(parent, []).append(idx)
        else:
            roots.append(idx)
    order: list[tuple[Any, int]] = []

    def walk(idx: Any, depth: int) -> None:
        order.append((idx, depth))
        for child in children.get(sub.loc[idx, "span_id"], []):
            walk(child, depth + 1)

    for r in roots:
        walk(r, 0)
    out = sub.loc[[i for i, _ in order]].copy()
    out.insert(0, "depth", [d for _, d in order])
    return out if len(out) else pd.DataFrame(columns=["depth", *df.columns])


def print_trace_tree(df: pd.DataFrame, trace_id: str | None = None, *, session_id: str | None = None) -> str:
    """A text tree of one trace: ``hook tool → effect [rule ids] (latency)`` per step; also printed."""
    tree = trace_tree(df, trace_id, session_id=session_id)
    lines = []
    for _, row in tree.iterrows():
        pad = "    " * int(row["depth"]) + ("└── " if row["depth"] else "")
        rules = ", ".join(row["rule_ids"])
        lat = f" {row['latency_ms']:.1f} ms" if isinstance(row["latency_ms"], float) else ""
        div = f" (policy: {row['policy_verdict']}, {row['mode']})" if row["divergent"] else ""
        out = f" → {row['outcome']}" if isinstance(row["outcome"], str) else ""
        tool = row["tool"] if isinstance(row["tool"], str) else ""
        lines.append(f"{pad}{row['hook']} {tool}".rstrip() + f": {row['effect']}{div} [{rules}]{lat}{out}")
    text = "\n".join(lines)
    print(text)
    return text


# ---- plots --------------------------------------------------------------------------------------


def plot_timeline(df: pd.DataFrame, *, session_id: str | None = None, ax: Any = None) -> Any:
    """A session's steps over time: one marker per step, coloured by verdict, labelled by tool."""
    plt = _pyplot()
    sub = df if session_id is None else df[df["session_id"] == session_id]
    sub = sub.sort_values(["ts_start", "seq"])
    if ax is None:
        _, ax = plt.subplots(figsize=(10, max(3.0, 0.35 * len(sub) + 1)))
    labels = [f"{h} {t if isinstance(t, str) else ''}".strip() for h, t in zip(sub["hook"], sub["tool"], strict=True)]
    y = list(range(len(sub)))[::-1]
    for yy, (_, row) in zip(y, sub.iterrows(), strict=True):
        color = _VERDICT_COLOR.get(str(row["effect"]), "grey")
        start, endt = row["ts_start"], row["ts_end"]
        ax.plot([start, endt], [yy, yy], color=color, linewidth=4, solid_capstyle="round")
        ax.scatter([start], [yy], color=color, s=40, zorder=3, marker="s" if row["divergent"] else "o")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("time (UTC)")
    ax.set_title(f"session {session_id}" if session_id else "steps over time")
    handles = [plt.Line2D([0], [0], color=c, lw=4, label=v) for v, c in _VERDICT_COLOR.items() if v in set(sub["effect"])]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    from matplotlib.dates import DateFormatter

    ax.xaxis.set_major_formatter(DateFormatter("%H:%M:%S.%f"))  # type: ignore[no-untyped-call,unused-ignore]
    ax.figure.autofmt_xdate()
    return ax


def plot_verdicts(df: pd.DataFrame, *, by: str = "action", ax: Any = None) -> Any:
    """Stacked bars: how many steps of each ``by`` value (tool by default) got each verdict."""
    plt = _pyplot()
    pd = _pandas()
    table = pd.crosstab(df[by].fillna("(none)"), df["effect"])
    table = table[[v for v in _VERDICT_COLOR if v in table.columns]]
    if ax is None:
        _, ax = plt.subplots(figsize=(9, max(3.0, 0.4 * len(table) + 1)))
    table.plot.barh(stacked=True, ax=ax, color=[_VERDICT_COLOR[c] for c in table.columns])
    ax.set_xlabel("steps")
    ax.set_title(f"verdicts by {by}")
    return ax


def plot_latency(df: pd.DataFrame, *, by: str = "hook", ax: Any = None) -> Any:
    """Decision latency per ``by`` (mediation point by default): box plot with p50 / p95 in the labels."""
    plt = _pyplot()
    sub = df.dropna(subset=["latency_ms"])
    groups = [(str(k), g["latency_ms"].astype(float)) for k, g in sub.groupby(by)]
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4))
    if groups:
        try:
            ax.boxplot([g.values for _, g in groups], orientation="horizontal")
        except TypeError:  # matplotlib < 3.10
            ax.boxplot([g.values for _, g in groups], vert=False)
        ax.set_yticks(range(1, len(groups) + 1))
        ax.set_yticklabels([f"{k} (p50 {g.quantile(0.5):.1f}, p95 {g.quantile(0.95):.1f})" for k, g in groups], fontsize=8)
        ax.set_xscale("log")
    ax.set_xlabel("decision latency (ms, log scale)")
    ax.set_title(f"decision latency by {by}")
    return ax


def plot_rule_hits(df: pd.DataFrame, *, top: int = 20, ax: Any = None) -> Any:
    """Which rules fire: hits per rule id, split into enforced and shadow/warn divergences."""
    plt = _pyplot()
    pd = _pandas()
    rows = [
        {"rule_id": r, "kind": "divergent (shadow/warn)" if row.divergent else "as enforced"}
        for row in df.itertuples()
        for r in row.rule_ids
    ]
    table = (
        pd.crosstab(pd.Series([r["rule_id"] for r in rows], name="rule"), pd.Series([r["kind"] for r in rows], name="kind"))
        if rows
        else pd.DataFrame()
    )
    if ax is None:
        _, ax = plt.subplots(figsize=(9, max(3.0, 0.35 * min(top, len(table)) + 1)))
    if not table.empty:
        table = table.loc[table.sum(axis=1).sort_values(ascending=True).index[-top:]]
        colors = {"as enforced": "#546e7a", "divergent (shadow/warn)": "#ef6c00"}
        table.plot.barh(stacked=True, ax=ax, color=[colors[c] for c in table.columns])
    ax.set_xlabel("decisions")
    ax.set_title("rule hits")
    return ax


def plot_findings(findings: pd.DataFrame, *, by: str = "plane", ax: Any = None) -> Any:
    """Findings per plane (or ``by="entities"`` for the PII entity types named by the data plane)."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    if by == "entities":
        series = findings.explode("entities")["entities"].dropna().value_counts()
    else:
        series = findings.groupby([by, "severity"]).size().unstack(fill_value=0) if len(findings) else findings
    if len(series):
        series.plot.barh(ax=ax, stacked=by != "entities")
    ax.set_xlabel("findings")
    ax.set_title(f"findings by {by}")
    return ax
