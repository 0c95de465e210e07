"""The endpoint plane under a Governor: the ops-assistant pack and its YAML test cases, refunds, config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fiveplane import Action, Governor, MediationPoint, PolicyError, Principal, PrincipalKind, Verdict, load_policy
from fiveplane._planes._endpoint import EndpointConfig, EndpointPlane
from fiveplane._planes._network import NetworkPlane
from fiveplane._policy._testing import run_test_file

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "policies" / "examples" / "ops-assistant.yaml"
OPS_TESTS = ROOT / "policies" / "examples" / "ops-assistant.tests.yaml"
SRE = Principal(kind=PrincipalKind.USER, id="sre-1", roles=("sre",))
AGENT = Principal(kind=PrincipalKind.AGENT, id="ops-assistant")


def factory(policy: Any) -> Governor:
    return Governor(policy, planes=[NetworkPlane(resolver=lambda h: ["93.184.216.34"]), EndpointPlane(database_url="sqlite://")])


def test_ops_assistant_yaml_cases() -> None:
    results = run_test_file(OPS_TESTS, factory)
    failures = [f"{r.name} step {s.index}: {f}" for r in results for s in r.steps for f in s.failures]
    assert not failures, "\n".join(failures)
    assert len(results) >= 7


def test_packs_cross_check_clean() -> None:
    policy = load_policy(OPS)
    assert EndpointPlane().check_policy(policy) == []
    assert NetworkPlane().check_policy(policy) == []


def call(gov: Governor, tool: str, session: str = "s1", **arguments: Any) -> Any:
    return gov.decide(
        Action(
            point=MediationPoint.TOOL_CALL,
            tool=tool,
            arguments=arguments,
            principal=(SRE, AGENT),
            session_id=session,
            purpose="operations",
        )
    )


def test_quota_is_given_back_when_the_action_does_not_run(tmp_path: Path) -> None:
    plane = EndpointPlane(database_url=f"sqlite:///{tmp_path / 'rl.db'}")
    gov = Governor(OPS, planes=[NetworkPlane(), plane])
    # a files.write blocked by the constraint plane-internally takes nothing; one blocked by the
    # reasoning plane (no sre role) takes a unit in evaluate and gets it back after the decision.
    outsider = Principal(kind=PrincipalKind.USER, id="guest", roles=("guest",))
    for _ in range(7):
        d = gov.decide(
            Action(
                point=MediationPoint.TOOL_CALL,
                tool="deploy.restart_service",
                arguments={"service": "api", "reason": "x"},
                principal=(outsider, AGENT),
                session_id="g",
                purpose="operations",
            )
        )
        assert d.verdict is Verdict.BLOCK
    assert all(call(gov, "deploy.restart_service", service="api", reason="x").verdict is Verdict.ALLOW for _ in range(5))
    assert call(gov, "deploy.restart_service", service="api", reason="x").verdict is Verdict.BLOCK


def test_limits_are_shared_by_governors_on_one_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a = Governor(OPS, planes=[NetworkPlane(), EndpointPlane(database_url=url)])
    b = Governor(OPS, planes=[NetworkPlane(), EndpointPlane(database_url=url)])
    verdicts = [
        call(g, "deploy.restart_service", session=f"s{i}", service="api", reason="x").verdict for i, g in enumerate([a, b] * 4)
    ]
    assert verdicts.count(Verdict.ALLOW) == 5 and verdicts[5:] == [Verdict.BLOCK] * 3


async def test_async_decisions(tmp_path: Path) -> None:
    gov = Governor(OPS, planes=[NetworkPlane(), EndpointPlane(database_url=f"sqlite:///{tmp_path / 'a.db'}")])
    action = Action(
        point=MediationPoint.TOOL_CALL,
        tool="shell.run",
        arguments={"command": "ls; id"},
        principal=(SRE, AGENT),
        session_id="a",
        purpose="operations",
    )
    decision = await gov.adecide(action)
    assert decision.verdict is Verdict.BLOCK and "ops.shell" in decision.rule_ids
    ok = Action(
        point=MediationPoint.TOOL_CALL,
        tool="deploy.restart_service",
        arguments={"service": "api", "reason": "x"},
        principal=(SRE, AGENT),
        session_id="a",
        purpose="operations",
    )
    assert (await gov.adecide(ok)).verdict is Verdict.ALLOW


def test_store_failure_fails_closed(tmp_path: Path) -> None:
    class Broken:
        def acquire(self, *a: Any) -> Any:
            raise RuntimeError("database is gone")

        def release(self, *a: Any) -> None:
            pass

    gov = Governor(OPS, planes=[NetworkPlane(), EndpointPlane(store=Broken())])  # type: ignore[arg-type]
    d = call(gov, "deploy.restart_service", service="api", reason="x")
    assert d.verdict is Verdict.BLOCK and "endpoint.rate_limit" in d.rule_ids and "database is gone" in d.explanation


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"shell": [{"id": "s", "tools": ["shell.run"], "executables": {"ls": {}}}]}, "no `files:` policy"),
        ({"shell": [{"id": "s", "tools": ["shell.run"], "executables": {"sh": {}}, "paths": "off"}]}, "unsafe"),
        (
            {"shell": [{"id": "s", "tools": ["shell.run"], "executables": {"ls": {}}, "paths": "off", "operators": ["$("]}]},
            "operators",
        ),
        ({"rate_limits": [{"id": "r", "limit": 5, "window": "5 fortnights"}]}, "invalid duration"),
        ({"rate_limits": [{"id": "r", "limit": 0, "window": 60}]}, "limit"),
        ({"rate_limits": [{"id": "r", "limit": 1, "window": 60, "per": ["planet"]}]}, "per"),
        ({"constraints": [{"id": "c", "when": "args.x ==="}]}, "invalid CEL"),
        ({"constraints": [{"id": "c", "when": "bogus(args.x)"}]}, "unknown CEL function"),
        ({"files": {"read": ["relative"]}}, "relative"),
        ({"rate_limits": [{"id": "r", "limit": 1, "window": 60}, {"id": "r", "limit": 2, "window": 60}]}, "duplicate"),
        ({"agents": {"a": {"connectors": "web"}}}, "connectors"),
    ],
)
def test_invalid_configs(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        EndpointConfig.model_validate(config)
    assert fragment in str(info.value)


def test_config_errors_carry_file_and_line(tmp_path: Path) -> None:
    text = OPS.read_text().replace(
        "extends: [../baseline/baseline.yaml]", f"extends: [{OPS.parent.parent / 'baseline' / 'baseline.yaml'}]"
    )
    pack = tmp_path / "ops.yaml"
    pack.write_text(text.replace("window: 1h", "window: soon"))
    with pytest.raises(PolicyError) as info:
        Governor(pack, planes=[NetworkPlane(), EndpointPlane()])
    assert "ops.yaml:" in str(info.value) and "rate_limits" in str(info.value)


def test_schema_problems_and_requirements(tmp_path: Path) -> None:
    text = OPS.read_text().replace(
        "extends: [../baseline/baseline.yaml]", f"extends: [{OPS.parent.parent / 'baseline' / 'baseline.yaml'}]"
    )
    pack = tmp_path / "ops.yaml"
    pack.write_text(text.replace("command: {type: string, maxLength: 2000}", "command: {type: string, oneOf: [{maxLength: 5}]}"))
    # a schema the plane cannot enforce is a load error at the plane's section, naming the keyword
    with pytest.raises(PolicyError) as exc:
        Governor(pack, planes=[NetworkPlane(), EndpointPlane(database_url="sqlite://")])
    assert "oneOf" in str(exc.value) and "ops.yaml:" in str(exc.value)
    # and if a Governor ran it anyway (a policy swapped under it), the call is blocked
    policy = load_policy(pack)
    assert any("oneOf" in p for p in EndpointPlane().check_policy(policy))


def test_duration_formats() -> None:
    cfg = EndpointConfig.model_validate(
        {
            "rate_limits": [
                {"id": "a", "limit": 1, "window": "90s"},
                {"id": "b", "limit": 1, "window": "15m"},
                {"id": "c", "limit": 1, "window": "1d"},
                {"id": "d", "limit": 1, "window": 30},
            ]
        }
    )
    assert [r.window for r in cfg.rate_limits] == [90, 900, 86400, 30]
