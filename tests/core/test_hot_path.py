"""The hot path's shortcuts change no decision.

Every step of every shipped pack's test cases is decided twice — through the compiled plan with
the compiled decision (``settle``), the fast combine, CEL closures and field projection, and with all
of them switched off (the full judgement, the generic combine, CEL on whole variables) — and the two decisions must be the same in everything but time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from fiveplane import Decision, Verdict
from fiveplane._planes._plan import plan_for
from fiveplane._policy._testing import discover_tests, run_test_file

from ._shortcuts import without_shortcuts

ROOT = Path(__file__).resolve().parents[2]
CASES = discover_tests([ROOT / "policies"])


def _comparable(d: Decision) -> dict[str, Any]:
    data = d.model_dump(mode="json", exclude={"evaluated_at", "duration_us", "action_id"})
    # a capability token names its own id, session and action: compare what was asked for
    data["obligations"] = [
        {**o, "params": {k: (sorted(v) if k == "capability" else v) for k, v in o["params"].items()}} for o in data["obligations"]
    ]
    # ids of actions, sessions and requests differ from run to run (content digests do not)
    # (nor do pseudonyms: without $FIVEPLANE_PSEUDONYM_KEY each data plane draws its own key)
    text = _PSEUDONYM.sub(r"<\1#>", json.dumps(data, sort_keys=True))
    return json.loads(_ID.sub("<id>", text))


_PSEUDONYM = re.compile(r"<([A-Z_]+)#[A-Za-z0-9_-]+>")
_ID = re.compile(r"(?<![0-9a-f:])[0-9a-f]{12}(?:[0-9a-f]{20})?(?![0-9a-f])")


def _decisions(path: Path) -> list[dict[str, Any]]:
    out = []
    for case in run_test_file(path):
        for step in case.steps:
            assert step.decision is not None, f"{case.name}: {step.step}"
            d = _comparable(step.decision)
            # action ids differ between runs; explanations may name request ids: strip both
            d["explanation"] = d["explanation"].split(" (request ")[0]
            out.append({"case": case.name, "passed": case.passed, **d})
    return out


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_shipped_cases_decide_the_same_without_the_shortcuts(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _decisions(path)
    without_shortcuts(monkeypatch)
    slow = _decisions(path)
    assert len(fast) == len(slow) > 0
    for a, b in zip(fast, slow, strict=True):
        assert a == b, a["case"]


def test_trusted_decision_equals_the_validated_one() -> None:
    from datetime import UTC, datetime

    values: dict[str, Any] = {
        "action_id": "a1",
        "verdict": Verdict.ALLOW,
        "policy_verdict": Verdict.ALLOW,
        "mode": "enforce",
        "rule_ids": ("r1",),
        "findings": (),
        "obligations": (),
        "explanation": "Allowed x.",
        "policy_hash": "h",
        "policy_version": "p@1",
        "evaluated_at": datetime(2026, 1, 1, tzinfo=UTC),
        "duration_us": 1.0,
        "errors": (),
        "modified_arguments": None,
        "modified_content": None,
    }
    from fiveplane import Mode

    values["mode"] = Mode.ENFORCE
    fast, checked = Decision.trusted(**values), Decision(**values)
    assert fast == checked
    assert fast.model_dump(mode="json") == checked.model_dump(mode="json")
    assert fast.model_copy(update={"verdict": Verdict.BLOCK}).verdict is Verdict.BLOCK
    with pytest.raises(TypeError, match="exactly its fields"):
        Decision.trusted(**{k: v for k, v in values.items() if k != "errors"})
    # the compiled plan's form: the fields once, the per-action three on every decision
    per_action = ("action_id", "evaluated_at", "duration_us")
    fields = Decision.settled_fields(**{k: v for k, v in values.items() if k not in per_action})
    settled = Decision.settled(fields, "a1", values["evaluated_at"], 1.0)
    assert settled == checked and settled.model_dump(mode="json") == checked.model_dump(mode="json")
    assert settled.model_fields_set == checked.model_fields_set
    with pytest.raises(TypeError, match="missing \\['errors'\\]"):
        Decision.settled_fields(**{k: v for k, v in values.items() if k not in (*per_action, "errors")})
    with pytest.raises(TypeError):
        Decision.settled_fields(**{k: v for k, v in values.items() if k != "errors"})  # per-action ones given


def test_plans_are_cached_per_static_key_and_carry_the_catalog_corrections() -> None:
    from fiveplane import ActionClass, MediationPoint
    from fiveplane._policy._load import load_policy

    policy = load_policy(ROOT / "policies" / "examples" / "sales-support.yaml")
    tool = next(iter(policy.tools.values()))
    a = plan_for(policy, MediationPoint.TOOL_CALL, tool.name, None, None)
    assert plan_for(policy, MediationPoint.TOOL_CALL, tool.name, None, None) is a
    assert a.updates["action_class"] is tool.action_class and not a.notes
    wrong = next(c for c in ActionClass if c is not tool.action_class)
    b = plan_for(policy, MediationPoint.TOOL_CALL, tool.name, None, wrong)
    assert b is not a and b.updates["action_class"] is tool.action_class
    assert [n.code for n in b.notes] == ["class_from_catalog"]
