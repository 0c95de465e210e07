"""Core adjudication benchmarks (issue: governance core).

``adjudication_1000_rules``: a pack of 1,000 rules over 200 tools; the action matches a rule with one
CEL condition. ``adjudication_no_condition``: the same pack shape, the matching rule has no condition.
Each: 2,000 warm-up decisions, then 20,000 timed with ``perf_counter_ns`` per decision.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from fiveplane import Action, Governor, MediationPoint, Verdict

TOOLS = 200
RULES = 1000
WARMUP = 2_000
N = 20_000


def _pack(condition: bool) -> dict[str, Any]:
    tools = [
        {"name": f"svc{i % 20}.op{i}", "connector": f"svc{i % 20}", "class": ["read", "invoke", "modify"][i % 3]}
        for i in range(TOOLS)
    ]
    rules = []
    for r in range(RULES):
        tool = tools[r % TOOLS]["name"]
        slot = r // TOOLS  # 5 rules per tool
        rule: dict[str, Any] = {"id": f"r{r}", "match": {"tools": [tool]}, "verdict": "allow"}
        if slot < 4:
            rule["match"]["roles"] = [f"role-{slot}"]  # roles the bench user does not hold
            rule["verdict"] = "block"
        elif condition:
            rule["when"] = "args.amount < 1000"
        rules.append(rule)
    return {
        "name": "bench",
        "connectors": [{"name": f"svc{i}"} for i in range(20)],
        "tools": tools,
        "agents": [{"name": "bench-agent", "purpose": "benchmark", "tools": ["svc*"]}],
        "rules": rules,
    }


def _run(condition: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.yaml"
        path.write_text(yaml.safe_dump(_pack(condition), sort_keys=False))
        t0 = time.perf_counter()
        gov = Governor(path)
        load_ms = (time.perf_counter() - t0) * 1000
    tool = "svc3.op23"  # an invoke tool
    action = Action(
        point=MediationPoint.TOOL_CALL,
        tool=tool,
        arguments={"amount": 10, "memo": "x"},
        principal=({"kind": "user", "id": "u", "roles": ["analyst"]}, {"kind": "agent", "id": "bench-agent"}),  # type: ignore[arg-type]
        session_id="bench",
    )
    decide = gov.decide
    for _ in range(WARMUP):
        decide(action)
    assert decide(action).verdict is Verdict.ALLOW
    samples = []
    clock = time.perf_counter_ns
    for _ in range(N):
        t = clock()
        decide(action)
        samples.append(clock() - t)
    samples.sort()
    return {
        "decisions": N,
        "p50_us": round(samples[N // 2] / 1000, 2),
        "p99_us": round(samples[int(N * 0.99)] / 1000, 2),
        "mean_us": round(statistics.fmean(samples) / 1000, 2),
        "rules": RULES,
        "tools": TOOLS,
        "pack_load_ms": round(load_ms, 1),
    }


BENCHMARKS = {
    "adjudication_1000_rules": lambda: _run(condition=True),
    "adjudication_no_condition": lambda: _run(condition=False),
}
