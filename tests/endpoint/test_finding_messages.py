"""Endpoint findings refer to refused values (paths, enum values, command words, unexpected keys
that are data) by kind and short digest; what the pack declares (roots, executables, enum values,
field names) stays readable; the same facts are in structured ``fields``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fiveplane import Action, Governor, MediationPoint, Principal, PrincipalKind, Verdict
from fiveplane._decisions import short_digest, value_digest
from fiveplane._planes._endpoint import EndpointPlane
from fiveplane._planes._network import NetworkPlane

OPS = Path(__file__).resolve().parents[2] / "policies" / "examples" / "ops-assistant.yaml"
SRE = (Principal(kind=PrincipalKind.USER, id="sre-1", roles=("sre",)), Principal(kind=PrincipalKind.AGENT, id="ops-assistant"))
SECRET_PATH = "/home/jane.roe/secrets.txt"


@pytest.fixture(scope="module")
def gov() -> Governor:
    return Governor(OPS, planes=[NetworkPlane(resolver=lambda h: ["93.184.216.34"]), EndpointPlane(database_url="sqlite://")])


def decide(gov: Governor, tool: str, **arguments: Any) -> Any:
    return gov.decide(
        Action(
            point=MediationPoint.TOOL_CALL, tool=tool, arguments=arguments, principal=SRE, session_id="s", purpose="operations"
        )
    )


def endpoint(decision: Any) -> Any:
    found = [f for f in decision.findings if f.plane == "endpoint" and f.verdict is Verdict.BLOCK]
    assert found, decision.explanation
    return found[0]


def test_a_refused_path_is_a_digest(gov: Governor) -> None:
    d = decide(gov, "files.read", path=SECRET_PATH)
    f = endpoint(d)
    for text in (f.message, d.explanation, str(d.to_json()["findings"])):
        assert "jane.roe" not in text and "secrets.txt" not in text
    assert f"[path {short_digest(SECRET_PATH)}]" in f.message
    assert "/srv/ops/workspace" in f.message  # the pack's roots stay readable
    assert f.fields == {
        "tool": "files.read",
        "argument": "path",
        "access": "read",
        "path": value_digest(SECRET_PATH),
        "values": [value_digest(SECRET_PATH)],
    }


@pytest.mark.parametrize(
    "path",
    [
        "/srv/ops/workspace/../../../home/jane.roe/secrets.txt",  # a '..' segment
        "/srv/ops/workspace/jane.roe/id_rsa.pem",  # a denied pattern (resolved path in parentheses)
        "~jane.roe/secrets.txt",
        "/home/jane.roe/%73ecrets.txt",
    ],
)
def test_every_path_refusal_hides_the_path(gov: Governor, path: str) -> None:
    f = endpoint(decide(gov, "files.read", path=path))
    assert "jane.roe" not in f.message and "ecrets" not in f.message, f.message
    assert f.fields["path"] == value_digest(path)


def test_shell_paths_and_words_are_digests(gov: Governor) -> None:
    f = endpoint(decide(gov, "shell.run", command=f"cat {SECRET_PATH}"))
    assert "jane.roe" not in f.message and "cat" in f.message and "ops.shell" in f.message
    assert f.fields["command"] == value_digest(f"cat {SECRET_PATH}")
    g = endpoint(decide(gov, "shell.run", command="systemctl restart jane-roe-vpn"))
    assert "restart" not in g.message and "allowed: status, is-active, list-units" in g.message


def test_an_enum_value_is_a_digest_and_the_allowed_values_are_shown(gov: Governor) -> None:
    f = endpoint(decide(gov, "deploy.restart_service", service="jane.roe@globex.example", reason="x"))
    assert "jane.roe" not in f.message and "globex" not in f.message
    assert "'api'" in f.message and "'worker'" in f.message  # the schema's enum values stay readable
    assert f.fields["tool"] == "deploy.restart_service" and f.fields["values"] == [value_digest("jane.roe@globex.example")]


def test_unexpected_keys_that_are_field_names_stay_readable(gov: Governor) -> None:
    f = endpoint(decide(gov, "files.read", path="/var/log/ops/api.log", follow=True))
    assert "unexpected field 'follow'" in f.message
    g = endpoint(decide(gov, "files.read", path="/var/log/ops/api.log", **{"jane.roe@globex.example": 1}))
    assert "jane.roe" not in g.message and "sha256:" in g.message
