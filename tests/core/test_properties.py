"""Property tests: whatever the action or the pack, the engine gives a decision or a validation error.

No exception escapes ``decide`` as anything but a (blocking) decision; a pack is either loaded or
rejected with :class:`PolicyError`; deny-overrides holds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fiveplane import Action, Governor, MediationPoint, PolicyError, Verdict, load_policy, strongest
from tests.conftest import SALES_PACK

GOV = Governor(SALES_PACK)

json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30)
)
json_value = st.recursive(
    json_scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12
)
tools = st.sampled_from(
    ["crm.search_accounts", "crm.get_account_notes", "contracts.update_status", "email.send", "web.fetch", "shell.run", "x"]
)
principal = st.lists(
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["user", "agent", "connector", "service"]),
            "id": st.sampled_from(["rep-1", "sales-assistant", "mgr", "crm", "?"]),
            "roles": st.lists(st.sampled_from(["sales-rep", "sales-manager", "intern"]), max_size=2),
        }
    ),
    min_size=1,
    max_size=4,
)


@st.composite
def actions(draw: st.DrawFn) -> dict[str, Any]:
    point = draw(st.sampled_from(list(MediationPoint)))
    data: dict[str, Any] = {
        "point": point.value,
        "tool": draw(st.one_of(st.none(), tools)),
        "arguments": draw(
            st.dictionaries(st.sampled_from(["to", "query", "status", "url", "contract_id", "amount"]), json_value, max_size=4)
        ),
        "content": draw(json_value),
        "principal": draw(principal),
        "session_id": draw(st.sampled_from(["s1", "s2"])),
        "purpose": draw(st.sampled_from([None, "sales-support", "other"])),
    }
    if draw(st.booleans()):
        data["action_class"] = draw(st.sampled_from(["read", "invoke", "modify"]))
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions())
def test_any_action_gets_a_decision_or_a_validation_error(data: dict[str, Any]) -> None:
    try:
        action = Action.model_validate(data)
    except ValueError:
        return  # rejected at the boundary with a validation error
    decision = GOV.decide(action)
    assert decision.verdict in Verdict
    assert decision.explanation
    if decision.errors:
        assert decision.verdict is Verdict.BLOCK
    if action.tool not in GOV.policy.tools and action.point in (MediationPoint.TOOL_CALL, MediationPoint.TOOL_RESULT):
        assert decision.verdict is Verdict.BLOCK


rule = st.fixed_dictionaries(
    {
        "id": st.from_regex(r"[a-z][a-z0-9.-]{0,8}", fullmatch=True),
        "match": st.fixed_dictionaries(
            {},
            optional={
                "tools": st.lists(st.sampled_from(["t.a", "t.b", "t.*", "nope", "*"]), max_size=2),
                "points": st.lists(
                    st.sampled_from(["tool_call", "tool_result", "input", "final_output", "bogus"]), min_size=1, max_size=2
                ),
                "classes": st.lists(st.sampled_from(["read", "modify", "write"]), max_size=2),
                "roles": st.lists(st.sampled_from(["r1", "r2"]), max_size=2),
            },
        ),
        "verdict": st.sampled_from(["allow", "block", "modify", "narrow", "defer", "require_approval", "permit"]),
    },
    optional={
        "when": st.sampled_from(
            [
                "true",
                "args.x > 1",
                "has(args.y) && args.y == 'a'",
                "size(args)",
                "args.",
                "user.roles.exists(r, r == 'r1')",
                "content.contains('z')",
            ]
        ),
        "approval": st.fixed_dictionaries({"role": st.sampled_from(["mgr", ""])}),
        "surprise": st.just(1),
    },
)
packs = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["p", "bad name!"]),
        "connectors": st.just([{"name": "t"}]),
        "tools": st.just(
            [{"name": "t.a", "connector": "t", "class": "read"}, {"name": "t.b", "connector": "t", "class": "modify"}]
        ),
        "agents": st.just([{"name": "ag", "purpose": "testing"}]),
        "rules": st.lists(rule, max_size=6),
    },
    optional={
        "mode": st.sampled_from(["enforce", "warn", "shadow", "loud"]),
        "defaults": st.fixed_dictionaries({}, optional={"no_match": st.sampled_from(["allow", "block", "maybe"])}),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packs, st.lists(actions(), min_size=1, max_size=4))
def test_random_packs_load_or_fail_cleanly_and_decide_safely(pack: dict[str, Any], acts: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pack.yaml"
        path.write_text(yaml.safe_dump(pack))
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            assert exc.errors and all(
                e.startswith(str(path.resolve()) + ":") or e.startswith(str(path) + ":") for e in exc.errors
            ), exc.errors
            return
        gov = Governor(policy)
        for data in acts:
            data = {
                **data,
                "tool": data["tool"]
                and data["tool"].replace("crm.search_accounts", "t.a").replace("contracts.update_status", "t.b"),
            }
            try:
                action = Action.model_validate(data)
            except ValueError:
                continue
            decision = gov.decide(action)
            assert decision.verdict in Verdict
            if decision.errors:
                assert decision.verdict is Verdict.BLOCK
            if action.point is MediationPoint.TOOL_CALL and action.tool not in policy.tools:
                assert decision.verdict is Verdict.BLOCK


@given(st.lists(st.sampled_from(list(Verdict)), min_size=1))
def test_strongest_is_deny_overrides(verdicts: list[Verdict]) -> None:
    s = strongest(verdicts)
    assert s in verdicts
    assert all(v.rank <= s.rank for v in verdicts)
    if Verdict.BLOCK in verdicts:
        assert s is Verdict.BLOCK


def test_strongest_of_nothing_is_an_error_not_allow() -> None:
    try:
        strongest([])
    except ValueError:
        return
    raise AssertionError("strongest([]) must raise")


# ---- fail-closed edges at the Action boundary -----------------------------------------------------

BASE: dict[str, Any] = {"point": "tool_call", "tool": "email.send", "principal": [{"kind": "user", "id": "u"}], "session_id": "s"}
non_finite = st.sampled_from([float("nan"), float("inf"), float("-inf")])


@st.composite
def with_non_finite(draw: st.DrawFn) -> tuple[Any, str]:
    """A JSON value with one NaN / ±Infinity planted somewhere in it; the path to it."""
    bad = draw(non_finite)
    path: list[str] = []
    value: Any = bad
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            key = draw(st.sampled_from(["a", "amount", "rows", "x"]))
            value = {**draw(st.dictionaries(st.sampled_from(["b", "c"]), json_scalar, max_size=2)), key: value}
            path.append(f".{key}")
        else:
            before = draw(st.lists(json_scalar, max_size=2))
            value = [*before, value]
            path.append(f"[{len(before)}]")
    return value, "".join(reversed(path))


@settings(max_examples=200, deadline=None)
@given(with_non_finite(), st.sampled_from(["arguments", "content"]))
def test_non_finite_numbers_are_rejected_at_the_boundary(planted: tuple[Any, str], where: str) -> None:
    value, path = planted
    if where == "arguments":
        value, path = {"amount": value}, ".amount" + path
    try:
        Action.model_validate({**BASE, where: value})
    except ValueError as exc:
        assert "not a finite number" in str(exc)
        assert f"{where}{path}:" in str(exc) or "…" in str(exc)
    else:
        raise AssertionError("a non-finite number passed the Action boundary")


def test_decimal_non_finite_and_finite_values() -> None:
    from decimal import Decimal

    for bad in (Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")):
        try:
            Action.model_validate({**BASE, "arguments": {"amount": bad}})
        except ValueError as exc:
            assert "arguments.amount" in str(exc)
        else:
            raise AssertionError(bad)
    ok = Action.model_validate({**BASE, "arguments": {"amount": Decimal("1.5"), "x": 1e308, "y": -0.0}})
    assert ok.arguments["x"] == 1e308


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 400))
def test_nesting_over_the_limit_is_a_validation_error(depth: int) -> None:
    from fiveplane._actions import MAX_PAYLOAD_DEPTH

    data = {**BASE, "content": _nested(depth)}
    if depth <= MAX_PAYLOAD_DEPTH:
        assert Action.model_validate(data).content == data["content"]
        return
    try:
        Action.model_validate(data)
    except ValueError as exc:
        assert f"nested deeper than {MAX_PAYLOAD_DEPTH} levels" in str(exc)
    else:
        raise AssertionError(f"depth {depth} passed")


def test_hostile_nesting_and_cycles_do_not_recurse() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    for value in (deep, cyclic):
        try:
            Action.model_validate({**BASE, "content": value})
        except ValueError as exc:
            assert "nested deeper than" in str(exc)
        else:
            raise AssertionError("accepted")


def test_oversized_payloads_are_rejected() -> None:
    from fiveplane._actions import MAX_PAYLOAD_CHARS

    for data in (
        {"content": "x" * (MAX_PAYLOAD_CHARS + 1)},
        {"arguments": {"rows": ["y" * 1024] * (MAX_PAYLOAD_CHARS // 1024 + 1)}},
    ):
        try:
            Action.model_validate({**BASE, **data})
        except ValueError as exc:
            assert "larger than 16 MB" in str(exc)
        else:
            raise AssertionError("accepted")
    Action.model_validate({**BASE, "content": "x" * (MAX_PAYLOAD_CHARS // 2)})


def test_finding_fields_are_json_and_in_the_decisions_json() -> None:
    from fiveplane import Finding

    f = Finding(plane="p", code="c", message="m", fields={"host": "acme.example", "n": [1, 2.5, None]})
    assert f.model_dump(mode="json")["fields"] == {"host": "acme.example", "n": [1, 2.5, None]}
    assert Finding.model_validate({"plane": "p", "code": "c", "message": "m"}).fields == {}  # records written before
    for bad in ({"x": float("nan")}, {"x": object()}, {"x": {1: "a"}}):
        try:
            Finding(plane="p", code="c", message="m", fields=bad)
        except ValueError:
            continue
        raise AssertionError(bad)
    decision = GOV.decide(Action.model_validate({**BASE, "tool": "web.fetch", "arguments": {"url": "https://evil.example/?q=1"}}))
    assert all("fields" in f for f in decision.to_json()["findings"])


# ---- the CLI's JSON input -------------------------------------------------------------------------


def _explain(tmp_path: Path, line: str) -> Any:
    from typer.testing import CliRunner

    from fiveplane._cli import app

    f = tmp_path / "a.jsonl"
    f.write_text(line + "\n")
    return CliRunner().invoke(app, ["policy", "explain", "--policy", str(SALES_PACK), "--actions", str(f)])


def test_cli_rejects_nan_literals(tmp_path: Path) -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        head = '{"point": "input", "principal": [{"kind": "user", "id": "u"}], "session_id": "s", "content": '
        line = head + '{"x": [1, ' + literal + "]}}"
        result = _explain(tmp_path, line)
        assert result.exit_code == 2, result.output
        assert f"a.jsonl:1: not JSON: {literal} is not a JSON value" in result.output


def test_cli_rejects_hostile_nesting_with_exit_2(tmp_path: Path) -> None:
    head = '{"point": "input", "principal": [{"kind": "user", "id": "u"}], "session_id": "s", "content": '
    result = _explain(tmp_path, head + "[" * 100_000 + "]" * 100_000 + "}")
    assert result.exit_code == 2, result.output
    assert "nested too deeply" in result.output and "Traceback" not in result.output
    result = _explain(tmp_path, head + "[" * 100 + "]" * 100 + "}")
    assert result.exit_code == 2 and "nested deeper than 64 levels" in result.output
