"""The compiled decision (``ReasoningPlane.settle`` + the plan's prebuilt fields) decides exactly as
the full judgement does.

Generated packs (rules with roles, agents, conditions, sequence rules, warn/shadow modes, approvals,
every verdict; defaults; agents with and without declared purposes) and generated runs of actions
(catalogued and unknown tools, known and unknown agents, arguments of every kind) are decided twice:
with every shortcut of the hot path, and with all of them switched off (no settle, no fast combine,
no CEL closures or projection). Decisions, session counts and step verdicts must be the same.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fiveplane import Action, Decision, Governor, MediationPoint
from fiveplane._planes import _reasoning

from ._shortcuts import without_shortcuts

TOOLS = [("t0", "c0", "read"), ("t1", "c0", "invoke"), ("t2", "c1", "modify"), ("t3", "c1", "read")]
CONDITIONS = [
    "args.amount < 1000",
    "args.amount >= 10",
    'args.memo == "x"',
    'args.memo != "y" && args.amount < 50',
    "size(args) > 1",
    "session.steps > 1",
    'user.id == "u1"',
    '"c0" == tool.connector',
    "args.amount < 10 || args.missing == 1",
]
VERDICTS = ["allow", "block", "modify", "narrow", "defer", "require_approval"]

rule = st.fixed_dictionaries(
    {
        "verdict": st.sampled_from(VERDICTS),
        "tools": st.lists(st.sampled_from([t[0] for t in TOOLS] + ["t*"]), max_size=2),
        "classes": st.lists(st.sampled_from(["read", "invoke", "modify"]), max_size=1),
        "roles": st.lists(st.sampled_from(["r1", "r2"]), max_size=1),
        "agents": st.lists(st.sampled_from(["a1", "a2"]), max_size=1),
        "when": st.one_of(st.none(), st.sampled_from(CONDITIONS)),
        "mode": st.sampled_from([None, None, None, "warn", "shadow"]),
        "after": st.one_of(st.none(), st.sampled_from(["t0", "t1"])),
        "within": st.one_of(st.none(), st.integers(1, 3)),
    }
)
pack = st.fixed_dictionaries(
    {
        "rules": st.lists(rule, max_size=6),
        "mode": st.sampled_from(["enforce", "enforce", "warn"]),
        "no_match": st.sampled_from(["allow", "block", "require_approval"]),
        "unknown_agent": st.sampled_from(["allow", "block"]),
        "approver": st.booleans(),
        "purposes": st.sampled_from([(), ("support",)]),
        "agent_tools": st.sampled_from([("t*",), ("t0", "t1")]),
    }
)
argument = st.one_of(
    st.integers(-5, 2000), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3), st.none(), st.booleans()
)
action = st.fixed_dictionaries(
    {
        "point": st.sampled_from(["tool_call"] * 5 + ["input", "model_output"]),
        "tool": st.sampled_from([t[0] for t in TOOLS] + ["tx"]),
        "args": st.dictionaries(st.sampled_from(["amount", "memo", "other"]), argument, max_size=3),
        "user": st.sampled_from(["u1", "u2"]),
        "roles": st.lists(st.sampled_from(["r1", "r2"]), max_size=2, unique=True),
        "agent": st.sampled_from(["a1", "a1", "a2", "zz"]),
        "purpose": st.sampled_from([None, "support", "other"]),
    }
)


def _pack_yaml(p: dict[str, Any]) -> dict[str, Any]:
    rules = []
    for i, r in enumerate(p["rules"]):
        match: dict[str, Any] = {}
        for key in ("tools", "classes", "roles", "agents"):
            if r[key]:
                match[key] = r[key]
        if r["after"]:
            match["after"] = {"tools": [r["after"]], **({"within": r["within"]} if r["within"] else {})}
        spec: dict[str, Any] = {"id": f"r{i}", "match": match, "verdict": r["verdict"]}
        if r["when"]:
            spec["when"] = r["when"]
        if r["mode"]:
            spec["mode"] = r["mode"]
        if r["verdict"] == "require_approval":
            spec["approval"] = {"role": "manager"}
        rules.append(spec)
    defaults: dict[str, Any] = {"no_match": p["no_match"], "unknown_agent": p["unknown_agent"]}
    if p["approver"]:
        defaults["approval"] = {"role": "lead"}
    agents = [{"name": "a1", "purpose": "support work", "tools": list(p["agent_tools"])}, {"name": "a2", "purpose": "other"}]
    if p["purposes"]:
        agents[0]["purposes"] = list(p["purposes"])
    return {
        "name": "generated",
        "unsafe_empty": True,
        "mode": p["mode"],
        "defaults": defaults,
        "connectors": [{"name": "c0"}, {"name": "c1"}],
        "tools": [{"name": n, "connector": c, "class": k} for n, c, k in TOOLS],
        "agents": agents,
        "rules": rules,
    }


def _action(a: dict[str, Any], i: int) -> Action:
    point = MediationPoint(a["point"])
    return Action(
        point=point,
        tool=a["tool"] if point is MediationPoint.TOOL_CALL else None,
        arguments=a["args"] if point is MediationPoint.TOOL_CALL else {},
        content="hello" if point is not MediationPoint.TOOL_CALL else None,
        principal=({"kind": "user", "id": a["user"], "roles": a["roles"]}, {"kind": "agent", "id": a["agent"]}),  # type: ignore[arg-type]
        session_id="s",
        purpose=a["purpose"],
        action_id=f"act{i}",
    )


def _run(path: Path, actions: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    gov = Governor(path)
    decisions = []
    for i, a in enumerate(actions):
        d: Decision = gov.decide(_action(a, i))
        decisions.append(d.model_dump(mode="json", exclude={"evaluated_at", "duration_us"}))
    state = gov.sessions.get("s")
    return decisions, {"counts": dict(state.counts), "verdicts": [s.verdict for s in state.steps]}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=pack, actions=st.lists(action, min_size=1, max_size=5))
def test_the_compiled_decision_is_the_full_judgement(p: dict[str, Any], actions: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pack.yaml"
        path.write_text(yaml.safe_dump(_pack_yaml(p), sort_keys=False))
        fast = _run(path, actions)
        with pytest.MonkeyPatch.context() as mp:
            without_shortcuts(mp)
            slow = _run(path, actions)
    assert fast == slow


def _rule(verdict: str, tool: str, *, when: str | None = None, mode: str | None = None) -> dict[str, Any]:
    return {"verdict": verdict, "tools": [tool], "classes": [], "roles": [], "agents": [], "when": when, "mode": mode} | {
        "after": None,
        "within": None,
    }


def _written(tmp_path: Path, *rules: dict[str, Any]) -> Path:
    """A pack of these rules (enforce mode, block by default, agent a1 serving every tool)."""
    p = {
        "rules": list(rules),
        "mode": "enforce",
        "no_match": "block",
        "unknown_agent": "block",
        "approver": False,
        "purposes": (),
        "agent_tools": ("t*",),
    }
    path = tmp_path / "pack.yaml"
    path.write_text(yaml.safe_dump(_pack_yaml(p), sort_keys=False))
    return path


def test_settle_takes_the_common_case_and_leaves_the_rest(tmp_path: Path) -> None:
    """Not vacuous: the shortcut decides a plain allowed call, and declines a tie and a warn rule."""
    path = _written(
        tmp_path,
        _rule("allow", "t0", when="args.amount < 1000"),
        _rule("block", "t1"),
        _rule("block", "t1"),
        _rule("block", "t3", mode="warn"),
    )
    gov = Governor(path)
    calls: list[Any] = []
    original = _reasoning.ReasoningPlane.settle

    def spy(self: Any, *args: Any) -> Any:
        calls.append(original(self, *args))
        return calls[-1]

    base = {"point": "tool_call", "user": "u1", "roles": [], "agent": "a1", "purpose": None}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_reasoning.ReasoningPlane, "settle", spy)
        allowed = gov.decide(_action({**base, "tool": "t0", "args": {"amount": 5}}, 0))
        tied = gov.decide(_action({**base, "tool": "t1", "args": {}}, 1))
        warned = gov.decide(_action({**base, "tool": "t3", "args": {}}, 2))
    assert allowed.verdict == "allow" and allowed.rule_ids == ("r0",)
    assert calls[0] is not None and calls[0].rule_ids == ("r0",)
    assert tied.verdict == "block" and tied.rule_ids == ("r1", "r2") and calls[1] is None
    assert warned.verdict == "block" and calls[2] is None  # warn rule: the full judgement (defaults.no_match)


@pytest.mark.parametrize("evidence", [False, True], ids=["no-evidence", "evidence"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_step_the_session_cannot_keep_does_not_run(tmp_path: Path, mode: str, evidence: bool) -> None:
    """The in-place path (no planes, approvals or evidence) and the effect-driven one alike: a
    session commit that fails turns the decision into a block naming the sessions."""
    import asyncio

    from fiveplane._ledger import open_ledger
    from fiveplane._session import _MemoryTx

    path = _written(tmp_path, _rule("allow", "t0"))
    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", origin="test.local/settle") if evidence else None
    gov = Governor(path, evidence=ledger)
    act = _action({"point": "tool_call", "tool": "t0", "args": {}, "user": "u1", "roles": [], "agent": "a1", "purpose": None}, 0)
    assert gov.decide(act).verdict == "allow"

    def broken(self: Any, change: Any) -> None:
        raise RuntimeError("disk full")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_MemoryTx, "commit", broken)
        d = gov.decide(act) if mode == "sync" else asyncio.run(gov.adecide(act))
    assert d.verdict == "block" and d.rule_ids == ("sessions.error",)
    assert "disk full" in d.errors[0]
    assert len(gov.sessions.get("s").steps) == 1  # only the step that was kept
    if ledger is not None:  # the evidence says the allowed-then-vetoed step did not run
        verdicts = [r.payload["decision"]["verdict"] for r in ledger.records(act.action_id) if r.kind == "decision"]
        ledger.close()
        assert verdicts[-2:] == ["allow", "block"]
