"""The NIST AI RMF report: what the ledger proves, organised by GOVERN, MAP, MEASURE and MANAGE.

``fiveplane report nist --db URL [--policy PACK] [--html FILE]`` writes Markdown (and HTML) with:
the ledger's verification status and latest signed checkpoint; the controls in force (from the
policy pack, each with the subcategories it serves); evidence counts per function and subcategory;
blocked, paused, approved and denied actions; open approvals; shadow/warn divergences; failed
outcomes and erasures; and the mapping table itself. Everything is computed from the ledger (and
the pack, when given), offline.
"""

from __future__ import annotations

import base64
import html
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._ledger import Ledger, NoteVerifier, VerifyReport
from .._version import __version__
from ._frame import LedgerSteps, load_steps
from ._nist import FUNCTIONS, NistMapping, load_nist_mapping
from ._read import parse_time

__all__ = ["NistReport", "Section", "build_nist_report"]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    title: str
    blocks: list[str | Table] = field(default_factory=list)
    """Paragraphs and tables, in order."""

    def add(self, block: str | Table) -> None:
        self.blocks.append(block)


@dataclass
class NistReport:
    """The report as data (``sections``) plus the figures a caller may check (``summary``)."""

    title: str
    summary: dict[str, Any]
    sections: list[Section]

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for s in self.sections:
            out += [f"## {s.title}", ""]
            for t in s.blocks:
                if isinstance(t, str):
                    out += [t, ""]
                    continue
                if not t.rows:
                    continue
                out.append("| " + " | ".join(_md(h) for h in t.headers) + " |")
                out.append("|" + "|".join("---" for _ in t.headers) + "|")
                out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in t.rows]
                out.append("")
        return "\n".join(out).rstrip() + "\n"

    def html(self) -> str:
        e = html.escape
        parts = [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(self.title)}</title>",
            "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em;"
            "text-align:left;vertical-align:top}th{background:#f2f2f2}h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}"
            "code{background:#f6f6f6;padding:0 .2em}.ok{color:#2e7d32;font-weight:bold}.fail{color:#c62828;font-weight:bold}</style>",
            "</head><body>",
            f"<h1>{e(self.title)}</h1>",
        ]
        for s in self.sections:
            parts.append(f"<h2>{e(s.title)}</h2>")
            for t in s.blocks:
                if isinstance(t, str):
                    text = (
                        e(t)
                        .replace("**OK**", '<span class="ok">OK</span>')
                        .replace("**FAILED**", '<span class="fail">FAILED</span>')
                    )
                    parts.append(f"<p>{_inline_code(text)}</p>")
                    continue
                if not t.rows:
                    continue
                parts.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in t.headers) + "</tr></thead><tbody>")
                parts += ["<tr>" + "".join(f"<td>{_inline_code(e(c))}</td>" for c in row) + "</tr>" for row in t.rows]
                parts.append("</tbody></table>")
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _inline_code(text: str) -> str:
    out, inside = [], False
    for i, piece in enumerate(text.split("`")):
        if i:
            inside = not inside
            out.append("<code>" if inside else "</code>")
        out.append(piece)
    if inside:
        out.append("</code>")
    return "".join(out)


def _short(text: Any, n: int = 160) -> str:
    s = str(text or "")
    return s if len(s) <= n else s[: n - 1] + "…"


def _when(ts: Any) -> str:
    dt = parse_time(ts) if not isinstance(ts, datetime) else ts
    return dt.strftime("%Y-%m-%d %H:%M:%SZ") if dt else ""


def _controls(policy_path: str | Path, mapping: NistMapping, hashes: Counter[str]) -> Section:
    from .._policy._load import load_policy

    pol = load_policy(policy_path)
    sec = Section("Controls in force (policy)")
    seen = hashes.get(pol.hash, 0)
    total = sum(hashes.values())
    sec.add(
        f"Pack `{pol.name}@{pol.version}` (mode {pol.mode.value}), hash `{pol.hash}`, from "
        + ", ".join(f"`{p}`" for p in pol.files[:6])
        + "."
    )
    if total:
        other = {h: n for h, n in hashes.items() if h != pol.hash}
        sec.add(
            f"{seen} of {total} decisions in the ledger were made under this exact pack"
            + (
                "; others under " + ", ".join(f"`{h[:19]}…` ({n})" for h, n in sorted(other.items(), key=lambda x: -x[1])) + "."
                if other
                else "."
            )
        )
    cats = mapping.control_categories
    d = pol.defaults
    classes = Counter(t.action_class.value for t in pol.tools.values())
    untrusted = [c.name for c in pol.connectors.values() if not c.trusted]
    rows = [
        ["policy pack", f"{len(pol.rules)} rules, policy-as-code, mode {pol.mode.value}", ", ".join(cats("pack"))],
        [
            "fail-closed defaults",
            f"unknown tool {d.unknown_tool}, unknown agent {d.unknown_agent}, no match {d.no_match}, modify without rule {d.modify_without_rule}",
            ", ".join(cats("fail-closed-defaults")),
        ],
        [
            "tool catalog",
            f"{len(pol.tools)} tools ({', '.join(f'{n} {c}' for c, n in sorted(classes.items()))})",
            ", ".join(cats("tool-catalog")),
        ],
        [
            "agents and purposes",
            "; ".join(f"{a.name}: {_short(a.purpose, 80)}" for a in pol.agents.values()) or "none declared",
            ", ".join(cats("agent-purposes")),
        ],
        ["untrusted connectors", ", ".join(untrusted) or "none", ", ".join(cats("untrusted-connectors"))],
        [
            "information flow",
            f"{len(pol.flow.rules)} flow rules over classes {', '.join(c.value for c in pol.flow.classes)}"
            if pol.flow
            else "not configured",
            ", ".join(cats("information-flow")) if pol.flow else "",
        ],
    ]
    for plane in sorted(pol.planes):
        rows.append([f"{plane} plane", "configured in the pack", ", ".join(cats("planes", plane))])
    rows.append(["evidence ledger", "tamper-evident, signed checkpoints (below)", ", ".join(cats("evidence-ledger"))])
    sec.add(Table(["control", "in force", "NIST AI RMF"], rows))
    rule_rows = []
    for r in pol.rules:
        verdict = r.verdict.value
        rc = set(cats("rule-verdicts", verdict))
        if r.mode.value != "enforce":
            rc |= set(cats("rule-modes", r.mode.value))
        match = r.spec.match
        scope = ", ".join(match.tools) or ", ".join(match.connectors) or ", ".join(p.value for p in match.points)
        rule_rows.append(
            [
                f"`{r.id}`",
                verdict,
                r.mode.value,
                _short(scope, 60),
                _short(r.spec.reason or r.spec.description, 90),
                ", ".join(sorted(rc, key=lambda c: (FUNCTIONS.index(c.split()[0]), c))),
            ]
        )
    sec.add(Table(["rule", "verdict", "mode", "applies to", "reason", "NIST AI RMF"], rule_rows))
    return sec


def build_nist_report(
    ledger: Ledger,
    *,
    policy: str | Path | None = None,
    keys: Sequence[NoteVerifier] | None = None,
    mapping: NistMapping | None = None,
    now: datetime | None = None,
    verify: VerifyReport | None = None,
) -> NistReport:
    """Build the report from an open ledger (and optionally the policy pack in force)."""
    mapping = mapping or load_nist_mapping()
    now = now or datetime.now(UTC)
    data: LedgerSteps = load_steps(ledger)
    report = verify or ledger.verify(keys=keys)
    cp = ledger.latest_checkpoint()

    per_cat: Counter[str] = Counter()
    per_fn: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for rec in data.records:
        kinds[rec.kind] += 1
        tags = mapping.tags(rec.kind, rec.meta)
        per_cat.update(tags.categories)
        per_fn.update(tags.functions)
    verdicts = Counter(s.verdict for s in data.steps)
    hashes = Counter(str(s.policy_hash) for s in data.steps if s.policy_hash)
    sessions = {r.session_id for r in data.records if r.session_id}
    times = [r.time for r in data.records if r.time]

    # approvals: the last state of each approval id
    approvals: dict[str, list[Any]] = defaultdict(list)
    for rec in data.records:
        if rec.kind.startswith("approval.") and rec.meta.get("approval_id"):
            approvals[str(rec.meta["approval_id"])].append(rec)
    open_rows, decided_rows = [], []
    for aid, recs in approvals.items():
        last = recs[-1]
        status = last.kind.partition(".")[2]
        m = last.meta
        if status in ("requested", "pending"):
            exp = parse_time(m.get("expires_at"))
            state = "expired without a decision" if exp and exp < now else "pending"
            open_rows.append(
                [
                    aid,
                    _when(recs[0].time),
                    str(m.get("tool", "")),
                    str(m.get("requester", "")),
                    str(m.get("role", "")),
                    _when(m.get("expires_at")),
                    state,
                ]
            )
        else:
            decided = next((r for r in recs if r.kind in ("approval.approved", "approval.denied")), last)
            decided_rows.append(
                [
                    aid,
                    str(m.get("tool", "")),
                    str(m.get("requester", "")),
                    decided.kind.partition(".")[2],
                    str(decided.meta.get("decided_by") or ""),
                    _when(decided.time),
                    status,
                ]
            )
    n_open = sum(1 for r in open_rows if r[-1] == "pending")

    def step_row(s: Any) -> list[str]:
        return [
            _when(s.record.time),
            str(s.record.session_id or ""),
            str(s.agent or ""),
            str(s.tool or s.point or ""),
            ", ".join(f"`{r}`" for r in s.rule_ids),
            _short(s.explanation, 220),
        ]

    blocked = [s for s in data.steps if s.verdict == "block"]
    paused = [s for s in data.steps if s.verdict in ("require_approval", "defer")]
    divergent = [s for s in data.steps if s.policy_verdict and s.policy_verdict != s.verdict]
    denied = [r for r in data.records if r.kind == "approval.denied"]
    failures = [r for r in data.records if r.kind == "outcome" and r.meta.get("status") in ("error", "unknown")]
    erasures = [r for r in data.records if r.kind == "erasure"]

    summary = {
        "origin": ledger.origin,
        "entries": ledger.size(),
        "sessions": len(sessions),
        "decisions": len(data.steps),
        "verdicts": dict(verdicts),
        "blocked": len(blocked),
        "paused_for_approval": len(paused),
        "approvals_approved": sum(1 for r in decided_rows if r[3] == "approved"),
        "approvals_denied": len(denied),
        "open_approvals": n_open,
        "divergences": len(divergent),
        "failed_outcomes": len(failures),
        "erasures": len(erasures),
        "verified": report.ok,
        "latest_checkpoint": cp.size if cp else None,
        "functions": {f: per_fn.get(f, 0) for f in FUNCTIONS},
        "categories": dict(sorted(per_cat.items())),
    }

    sections: list[Section] = []
    overview = Section("Overview")
    overview.add(
        f"Evidence ledger `{ledger.origin}` at `{ledger.url}`: {ledger.size()} entries, {len(sessions)} sessions, "
        f"{len(data.steps)} judged steps"
        + (f", from {_when(min(times))} to {_when(max(times))}" if times else "")
        + f". Generated {now:%Y-%m-%d %H:%M:%SZ} by fiveplane {__version__} against {mapping.framework} ({mapping.source})."
    )
    overview.add(
        Table(
            ["verdict", "steps"],
            [[v or "?", str(n)] for v, n in sorted(verdicts.items(), key=lambda x: -x[1])],
        )
    )
    overview.add(Table(["record kind", "entries"], [[k, str(n)] for k, n in sorted(kinds.items())]))
    sections.append(overview)

    integrity = Section("Ledger verification (MEASURE 2.8, GOVERN 1.5)")
    status = "**OK**" if report.ok else "**FAILED**"
    integrity.add(
        f"{status}: every leaf recomputed from its envelope, every payload checked against its salted digest, every tree node "
        f"and checkpoint signature verified — {report.entries} entries, {report.payloads_checked} payloads verified, "
        f"{report.payloads_erased} erased, {report.checkpoints_checked} checkpoints verified."
    )
    if not report.ok:
        integrity.add(
            Table(
                ["seq", "check", "problem"],
                [[str(p.seq if p.seq is not None else ""), p.check, _short(p.detail, 200)] for p in report.problems[:10]],
            )
        )
    if cp is not None:
        root = base64.b64encode(cp.root).decode()
        signers = [line.split(" ")[1] for line in (cp.note or "").splitlines() if line.startswith("— ")]
        integrity.add(
            f"Latest signed checkpoint: size {cp.size}, root `{root}`, signed by {', '.join(f'`{s}`' for s in signers) or 'nobody'}. "
            "Keep copies of checkpoints off this machine and verify against them (`fiveplane audit verify --against`)."
        )
    else:
        integrity.add("No signed checkpoint yet: open the ledger with a signing key so checkpoints are signed.")
    integrity.add(
        "Verifier keys: "
        + (", ".join(f"`{k}`" for k in report.keys) if report.keys else "none")
        + ("" if keys else " (recorded in the database — self-asserted; pass `--key` to verify with your own copy)")
        + "."
    )
    sections.append(integrity)

    if policy is not None:
        sections.append(_controls(policy, mapping, hashes))
    else:
        ctl = Section("Controls in force (policy)")
        ctl.add("No pack given (`--policy PACK` lists its rules and what each serves). Policies seen in the ledger:")
        versions = Counter((str(s.policy_version or "?"), str(s.policy_hash or "?")) for s in data.steps)
        ctl.add(Table(["policy", "hash", "decisions"], [[v, f"`{h}`", str(n)] for (v, h), n in versions.most_common()]))
        sections.append(ctl)

    ev = Section("Evidence per function and category")
    ev.add(
        "Each ledger entry is tagged with the AI RMF subcategories it serves (mapping file `nist_ai_rmf.yaml`; "
        "the rules read the hashed envelope only, so tags survive erasure). An entry counts once per subcategory."
    )
    ev.add(Table(["function", "entries", "outcome"], [[f, str(per_fn.get(f, 0)), mapping.functions[f]] for f in FUNCTIONS]))
    ev.add(
        Table(
            ["subcategory", "entries", "statement"],
            [
                [c, str(per_cat.get(c, 0)), _short(mapping.title(c), 200)]
                for c in sorted(
                    mapping.categories,
                    key=lambda c: (FUNCTIONS.index(c.split()[0]), tuple(int(x) for x in c.split()[1].split("."))),
                )
            ],
        )
    )
    sections.append(ev)

    act = Section("Blocked, paused and approved actions (MANAGE 1.3, MANAGE 2.4, GOVERN 3.2)")
    act.add(
        f"{len(blocked)} blocked, {len(paused)} paused for a human (approval or defer), "
        f"{summary['approvals_approved']} approvals granted, {len(denied)} denied, {n_open} open."
    )
    hdr = ["time", "session", "agent", "action", "rules", "explanation"]
    if blocked:
        act.add("Blocked:")
        act.add(Table(hdr, [step_row(s) for s in blocked]))
    if paused:
        act.add("Paused for approval or deferred:")
        act.add(Table(hdr, [step_row(s) for s in paused]))
    if decided_rows:
        act.add("Approvals decided:")
        act.add(Table(["approval", "tool", "requester", "decision", "by", "when", "last state"], decided_rows))
    sections.append(act)

    op = Section("Open approvals")
    if open_rows:
        op.add(Table(["approval", "requested", "tool", "requester", "role", "expires", "state"], open_rows))
    else:
        op.add("None: every approval request in the ledger was decided.")
    sections.append(op)

    dv = Section("Shadow and warn divergences (MEASURE 2.13, MANAGE 4.2)")
    if divergent:
        dv.add("Steps where the policy (in shadow or warn mode) would have decided differently than what was enforced:")
        dv.add(
            Table(
                ["time", "session", "action", "enforced", "policy", "mode", "rules"],
                [
                    [
                        _when(s.record.time),
                        str(s.record.session_id or ""),
                        str(s.tool or s.point),
                        str(s.verdict),
                        str(s.policy_verdict),
                        str(s.mode),
                        ", ".join(f"`{r}`" for r in s.rule_ids),
                    ]
                    for s in divergent
                ],
            )
        )
    else:
        dv.add("None.")
    sections.append(dv)

    inc = Section("Failed outcomes and erasures (MANAGE 4.3, GOVERN 1.1)")
    inc.add(f"{len(failures)} tool calls failed or were abandoned; {len(erasures)} erasures (data-protection requests).")
    if failures:
        inc.add(
            Table(
                ["time", "session", "tool", "status"],
                [
                    [_when(r.time), str(r.session_id or ""), str(r.meta.get("tool", "")), str(r.meta.get("status"))]
                    for r in failures
                ],
            )
        )
    if erasures:
        inc.add(
            Table(
                ["time", "entries erased", "actions"],
                [
                    [_when(r.time), str(len(r.meta.get("erased") or [])), str(len(r.meta.get("action_ids") or []))]
                    for r in erasures
                ],
            )
        )
    sections.append(inc)

    mp = Section("Mapping")
    mp.add(f"Source: {mapping.source}. What each kind of evidence serves:")
    mp.add(
        Table(
            ["evidence", "matches", "subcategories", "why"],
            [[r.id, ", ".join(f"{k}={v}" for k, v in r.match.items()), ", ".join(r.categories), r.why] for r in mapping.rules],
        )
    )
    sections.append(mp)
    return NistReport(f"NIST AI RMF evidence report — {ledger.origin}", summary, sections)
