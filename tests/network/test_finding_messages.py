"""Network findings name the host and a short digest of the URL, never its path or query; the same
facts are in the finding's structured ``fields`` (and in the decision's JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fiveplane import Governor, Verdict
from fiveplane._decisions import short_digest, value_digest
from fiveplane._planes._network import NetworkPlane
from tests.network.test_network_plane import DNS, action, sales_with_planes  # noqa: F401 - the fixture

PII = ("jane.roe", "globex", "email=", "/lookup", "secrets")


@pytest.fixture
def gov(sales_with_planes: Path) -> Governor:  # noqa: F811
    return Governor(sales_with_planes, planes=[NetworkPlane(resolver=lambda h: DNS.get(h, ["93.184.216.40"]))])


def _network(decision: object) -> list[object]:
    return [f for f in decision.findings if f.plane == "network"]  # type: ignore[attr-defined]


def _clean(text: str) -> None:
    for piece in PII:
        assert piece not in text, text


@pytest.mark.parametrize(
    ("url", "verdict", "host"),
    [
        ("https://evil.example/lookup?email=jane.roe@globex.example", Verdict.BLOCK, "evil.example"),
        ("https://acme.example/lookup?email=jane.roe@globex.example", Verdict.ALLOW, "acme.example"),
        ("http://169.254.169.254/latest/secrets?email=jane.roe@globex.example", Verdict.BLOCK, "169.254.169.254"),
        ("gopher://acme.example/lookup?email=jane.roe@globex.example", Verdict.BLOCK, "acme.example"),
    ],
)
def test_url_findings_quote_neither_path_nor_query(gov: Governor, url: str, verdict: Verdict, host: str) -> None:
    d = gov.decide(action("web.fetch", url=url))
    assert d.verdict is verdict, d.explanation
    found = _network(d)
    assert found
    for f in found:
        _clean(f.message)  # type: ignore[attr-defined]
    _clean(d.explanation)
    first = found[0]
    assert host in first.message and short_digest(url) in first.message  # type: ignore[attr-defined]
    fields = first.fields if first.code != "checked" else first.fields["checks"][0]  # type: ignore[attr-defined]
    assert fields["host"] == host and fields["digest"] == value_digest(url)
    # the stable JSON form carries the structured fields
    js = d.to_json()
    assert any(f["fields"] for f in js["findings"] if f["plane"] == "network")
    _clean(json.dumps([f["message"] for f in js["findings"]]))


def test_urls_in_free_text_and_invalid_urls(gov: Governor) -> None:
    body = "Internal copy: http://169.254.169.254/latest/meta-data/iam?user=jane.roe@globex.example"
    d = gov.decide(action("email.send", to="jo@acme.example", subject="x", body=body))
    assert d.verdict is Verdict.BLOCK
    for f in _network(d):
        _clean(f.message)  # type: ignore[attr-defined]
    bad = gov.decide(action("web.fetch", url="https://acme.example:99999/lookup?email=jane.roe@globex.example"))
    assert bad.verdict is Verdict.BLOCK
    msg = _network(bad)[0].message  # type: ignore[attr-defined]
    _clean(msg)
    assert "port" in msg and "sha256:" in msg


def test_host_arguments_name_the_host(tmp_path: Path) -> None:
    from fiveplane import Action, MediationPoint, Principal, PrincipalKind

    ops = Path(__file__).resolve().parents[2] / "policies" / "examples" / "ops-assistant.yaml"
    gov = Governor(ops, planes=[NetworkPlane(resolver=lambda h: ["10.0.0.5"])])
    sre = (
        Principal(kind=PrincipalKind.USER, id="sre-1", roles=("sre",)),
        Principal(kind=PrincipalKind.AGENT, id="ops-assistant"),
    )
    d = gov.decide(
        Action(
            point=MediationPoint.TOOL_CALL,
            tool="net.probe",
            arguments={"host": "jane-roe-laptop.globex.example", "port": 22},
            principal=sre,
            session_id="s",
            purpose="operations",
        )
    )
    found = [f for f in d.findings if f.plane == "network" and f.verdict is not None]
    assert found and found[0].fields["host"] == "jane-roe-laptop.globex.example"
    assert found[0].fields["digest"] == value_digest("jane-roe-laptop.globex.example")
