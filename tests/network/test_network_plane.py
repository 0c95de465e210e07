"""The network plane under a Governor: argument checks, grants for the transport, configuration."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from fiveplane import Action, ActionBlocked, Governor, MediationPoint, PolicyError, Principal, PrincipalKind, Verdict
from fiveplane._net._transport import EgressBlocked, current_grant
from fiveplane._planes._network import NetworkConfig, NetworkPlane

SALES_PLANES = """
planes:
  network:
    tools:
      web.fetch: {urls: [url]}
    egress:
      - id: web.company-sites
        description: Web fetches only to the company's public sites.
        tools: [web.fetch]
        allow:
          - https://acme.example
          - https://www.acme.example
"""

USER = Principal(kind=PrincipalKind.USER, id="rep-1", roles=("sales-rep",))
AGENT = Principal(kind=PrincipalKind.AGENT, id="sales-assistant")
DNS = {"acme.example": ["93.184.216.34"], "www.acme.example": ["93.184.216.35"]}


def _sales_text(sales_pack: Path) -> str:
    """The shipped sales pack with an absolute `extends` and without its own `planes:` section."""
    text = sales_pack.read_text().replace(
        "extends: [../baseline/baseline.yaml]", f"extends: [{sales_pack.parent.parent / 'baseline' / 'baseline.yaml'}]"
    )
    return re.sub(r"\nplanes:\n(?:[ #].*\n|\n)*?(?=\S)", "\n", text, count=1)


@pytest.fixture
def sales_with_planes(tmp_path: Path, sales_pack: Path) -> Path:
    text = _sales_text(sales_pack)
    pack = tmp_path / "sales-support.yaml"
    pack.write_text(text + SALES_PLANES)
    return pack


def action(tool: str, **arguments: Any) -> Action:
    return Action(
        point=MediationPoint.TOOL_CALL,
        tool=tool,
        arguments=arguments,
        principal=(USER, AGENT),
        session_id="s1",
        purpose="sales-support",
    )


@pytest.fixture
def gov(sales_with_planes: Path) -> Governor:
    return Governor(sales_with_planes, planes=[NetworkPlane(resolver=lambda h: DNS[h])])


@pytest.mark.parametrize(
    ("url", "verdict", "rule"),
    [
        ("https://acme.example/pricing", Verdict.ALLOW, "web.allow-list"),
        ("https://www.acme.example/", Verdict.ALLOW, "web.allow-list"),
        ("https://evil.example/", Verdict.BLOCK, "network.egress"),
        ("http://169.254.169.254/latest/meta-data/", Verdict.BLOCK, "network.ssrf"),
        ("https://acme.example@169.254.169.254/", Verdict.BLOCK, "network.ssrf"),
        ("https://0xa9fea9fe/", Verdict.BLOCK, "network.ssrf"),
        ("not a url", Verdict.BLOCK, "network.invalid_url"),
    ],
)
def test_web_fetch_arguments(gov: Governor, url: str, verdict: Verdict, rule: str) -> None:
    decision = gov.decide(action("web.fetch", url=url))
    assert decision.verdict is verdict, decision.explanation
    assert rule in decision.rule_ids


def test_urls_in_other_tools_are_checked_for_ssrf_only(gov: Governor) -> None:
    body = "Contract attached. Internal copy: http://169.254.169.254/latest/meta-data/iam"
    decision = gov.decide(action("email.send", to="jo@acme.example", subject="x", body=body))
    assert decision.verdict is Verdict.BLOCK and "network.ssrf" in decision.rule_ids
    ok = gov.decide(action("email.send", to="jo@acme.example", subject="x", body="see https://evil.example/ and http://exa mple"))
    assert ok.verdict is Verdict.ALLOW, ok.explanation  # a public link in an e-mail is not egress


def test_findings_record_the_checked_urls(gov: Governor) -> None:
    decision = gov.decide(action("web.fetch", url="https://acme.example/"))
    checked = [f for f in decision.findings if f.plane == "network" and f.code == "checked"]
    assert checked and "web.company-sites" in checked[0].message


def _fetcher(gov: Governor, net: NetworkPlane, target: str | None = None) -> Any:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["host"])
        return httpx.Response(200, text="page")

    client = httpx.Client(transport=net.transport(gov, httpx.MockTransport(handler), tool="web.fetch"))

    def fetch(url: str) -> str:
        return client.get(target or url).text

    return gov.govern(fetch, tool="web.fetch"), seen


def test_a_governed_tool_reaches_only_what_its_arguments_showed(sales_with_planes: Path) -> None:
    net = NetworkPlane(resolver=lambda h: DNS[h])
    gov = Governor(sales_with_planes, planes=[net])
    fetch, seen = _fetcher(gov, net)
    sneaky, _ = _fetcher(gov, net, target="https://www.acme.example/other")
    with gov.run([USER, AGENT], session_id="s2", purpose="sales-support"):
        assert fetch(url="https://acme.example/pricing") == "page"
        assert seen == ["acme.example"]
        with pytest.raises(EgressBlocked) as info:
            sneaky(url="https://acme.example/")  # allowed by policy, but not what the call showed
        assert info.value.code == "not_in_arguments"
        with pytest.raises(ActionBlocked):
            fetch(url="https://evil.example/")
        assert current_grant() is None  # a blocked call leaves no grant behind


async def test_async_governed_tool(sales_with_planes: Path) -> None:
    async def aresolve(host: str) -> list[str]:
        return DNS[host]

    net = NetworkPlane(async_resolver=aresolve)
    gov = Governor(sales_with_planes, planes=[net])
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, text="async page")

    client = httpx.AsyncClient(transport=net.async_transport(gov, httpx.MockTransport(handler), tool="web.fetch"))

    async def fetch(url: str) -> str:
        return (await client.get(url)).text

    tool = gov.govern(fetch, tool="web.fetch")
    with gov.run([USER, AGENT], session_id="s3", purpose="sales-support"):
        assert await tool(url="https://www.acme.example/x") == "async page"
        with pytest.raises(ActionBlocked):
            await tool(url="http://[::ffff:127.0.0.1]/")
    assert seen == ["https://93.184.216.35/x"]
    decision = await gov.adecide(action("web.fetch", url="https://evil.example/"))
    assert decision.verdict is Verdict.BLOCK


def test_argument_dns_check_is_opt_in(tmp_path: Path, sales_pack: Path) -> None:
    text = _sales_text(sales_pack)
    pack = tmp_path / "p.yaml"
    pack.write_text(text + SALES_PLANES + "    ssrf: {resolve_arguments: true}\n")
    gov = Governor(pack, planes=[NetworkPlane(resolver=lambda h: {"acme.example": ["10.0.0.8"]}[h])])
    decision = gov.decide(action("web.fetch", url="https://acme.example/"))
    assert decision.verdict is Verdict.BLOCK and "private" in decision.explanation


def test_bad_configuration_fails_at_load_with_file_and_line(tmp_path: Path, sales_pack: Path) -> None:
    text = _sales_text(sales_pack)
    pack = tmp_path / "bad.yaml"
    pack.write_text(text + "planes:\n  network:\n    egress:\n      - id: x\n        allow: ['acme.example']\n")
    with pytest.raises(PolicyError) as info:
        Governor(pack, planes=[NetworkPlane()])
    assert "bad.yaml:" in str(info.value) and "scheme://host" in str(info.value)


@pytest.mark.parametrize(
    "config",
    [
        {"egress": [{"id": "x", "allow": ["https://*evil.example"]}]},
        {"egress": [{"id": "x", "allow": ["https://a.example:99999"]}]},
        {"egress": [{"id": "x"}]},
        {"egress": [{"id": "x", "allow": ["https://a.example"]}, {"id": "x", "allow": ["https://b.example"]}]},
        {"egress": [{"id": "x", "allow": ["https://a.example"], "networks": ["10.0.0.1/8"]}]},
        {"ssrf": {"allow_networks": ["not-a-network"]}},
        {"tools": {"web.fetch": {"urls": ["url; drop"]}}},
        {"egress": [], "unknown": 1},
        {"egress": [{"id": "x", "allow": ["gopher2://a.example"]}]},
    ],
)
def test_invalid_configs_are_rejected(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        NetworkConfig.model_validate(config)


def test_egress_patterns_ports_paths_and_wildcards() -> None:
    cfg = NetworkConfig.model_validate(
        {
            "egress": [
                {
                    "id": "a",
                    "tools": ["t"],
                    "allow": ["https://*.acme.example/docs/*", "*://api.example:8000-8099", "https://bücher.example"],
                },
                {"id": "b", "connectors": ["web"], "allow": ["https://any.example:*"], "deny": ["https://any.example:22"]},
                {"id": "c", "agents": ["bot"], "allow": ["https://bot.example"]},
            ]
        }
    )
    net = NetworkPlane(config=cfg)

    def ok(url: str, **scope: str) -> bool:
        return net.check_url(url, **scope).allowed

    assert ok("https://a.acme.example/docs/x/y", tool="t")
    assert not ok("https://acme.example/docs/x", tool="t")  # *.x is sub-domains only
    assert not ok("https://a.acme.example/docs/%2e%2e/admin", tool="t")  # ambiguous path under a path pattern
    assert not ok("https://a.acme.example/other", tool="t")
    assert ok("http://api.example:8050/", tool="t") and ok("https://api.example:8099/", tool="t")
    assert not ok("https://api.example:8100/", tool="t")
    assert ok("https://xn--bcher-kva.example/", tool="t")
    assert ok("https://any.example:4443/", tool="x", connector="web")
    assert not ok("https://any.example:22/", tool="x", connector="web")
    assert ok("https://bot.example/", agent="bot") and not ok("https://bot.example/", agent="other")
    assert not ok("https://a.acme.example/docs/x", tool="other")


def test_check_policy_cross_checks_the_catalog(sales_pack: Path) -> None:
    from fiveplane import load_policy

    policy = load_policy(sales_pack)
    cfg = NetworkConfig.model_validate(
        {"tools": {"nope.tool": {"urls": ["u"]}}, "egress": [{"id": "x", "tools": ["zzz.*"], "allow": ["https://a.example"]}]}
    )
    assert NetworkPlane().check_policy(policy) == []
    policy.planes["network"] = cfg.model_dump()
    problems = NetworkPlane().check_policy(policy)
    assert any("nope.tool" in p for p in problems) and any("zzz.*" in p for p in problems)
