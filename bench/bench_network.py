"""Network and endpoint plane benchmarks (no DNS, no sockets).

* ``network_check_url``: one URL against SSRF + egress rules for a scope, 200 distinct URLs
  (parsing is cached per URL string, as in production); budget p50 <= 20 µs.
* ``network_check_url_cold``: the same with every cache cleared before each call.
* ``network_plane_evaluate``: the plane's argument check of a web.fetch tool call.
* ``network_transport_request``: one request through ``GovernedTransport`` to an
  ``httpx.MockTransport`` (fake resolver), including httpx's own request handling.
* ``endpoint_shell_check`` / ``endpoint_path_check`` / ``endpoint_plane_evaluate``: the shell
  parser+policy, the path policy and the whole endpoint plane (schemas, shell, files; no rate limit).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from fiveplane import Action, MediationPoint, Principal, PrincipalKind, load_policy
from fiveplane._net import _addr, _egress, _url
from fiveplane._net._transport import GovernedTransport
from fiveplane._planes._base import PlaneContext
from fiveplane._planes._endpoint import EndpointConfig, EndpointPlane
from fiveplane._planes._network import NetworkConfig, NetworkPlane
from fiveplane._session import SessionState

CONFIG = NetworkConfig.model_validate(
    {
        "tools": {"web.fetch": {"urls": ["url"]}},
        "egress": [
            {
                "id": "web.company",
                "tools": ["web.fetch"],
                "allow": ["https://acme.example", "https://*.acme.example", "https://*.statuspage.io"],
            },
            {
                "id": "web.partner",
                "tools": ["web.fetch"],
                "allow": ["https://partner.example:8443/api/*"],
                "deny": ["https://partner.example:8443/api/admin*"],
            },
            {
                "id": "web.internal",
                "connectors": ["internal"],
                "allow": ["https://grafana.ops.internal"],
                "networks": ["10.20.0.0/16"],
            },
        ],
    }
)
PLANE = NetworkPlane(config=CONFIG, resolver=lambda h: ["93.184.216.34"])
URLS = (
    [f"https://www.acme.example/docs/page-{i}?q={i}" for i in range(80)]
    + [f"https://evil{i}.example/x" for i in range(40)]
    + [f"http://10.0.{i}.1/" for i in range(20)]
    + [f"https://partner.example:8443/api/v{i}/items" for i in range(40)]
    + [f"http://0x7f.{i}/" for i in range(20)]
)


def _timed(fn: Callable[[int], Any], n: int) -> dict[str, Any]:
    samples = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    return {
        "n": n,
        "p50_us": round(samples[n // 2] / 1000, 2),
        "p90_us": round(samples[int(n * 0.9)] / 1000, 2),
        "p99_us": round(samples[int(n * 0.99)] / 1000, 2),
        "mean_us": round(statistics.fmean(samples) / 1000, 2),
    }


def bench_check_url() -> dict[str, Any]:
    for u in URLS:  # warm: one parse per distinct URL
        PLANE.check_url(u, tool="web.fetch")
    out = _timed(lambda i: PLANE.check_url(URLS[i % len(URLS)], tool="web.fetch"), 50_000)
    out["budget_p50_us"] = 20
    out["within_budget"] = out["p50_us"] <= 20
    return out


def _clear() -> None:
    _url._parse_cached.cache_clear()
    _url.canonical_host.cache_clear()
    _addr.classify_ip.cache_clear()
    _egress._name_reason.cache_clear()


def bench_check_url_cold() -> dict[str, Any]:
    def one(i: int) -> None:
        _clear()
        PLANE.check_url(URLS[i % len(URLS)], tool="web.fetch")

    return _timed(one, 10_000)


USER = Principal(kind=PrincipalKind.USER, id="sre-1", roles=("sre",))
AGENT = Principal(kind=PrincipalKind.AGENT, id="ops-assistant")


def _ctx(policy: Any, config: Any) -> PlaneContext:
    return PlaneContext(policy=policy, session=SessionState("bench"), now=datetime.now(UTC), config=config)


def bench_plane_evaluate() -> dict[str, Any]:
    from pathlib import Path

    policy = load_policy(Path(__file__).resolve().parent.parent / "policies" / "examples" / "ops-assistant.yaml")
    cfg = NetworkConfig.model_validate(policy.planes["network"])
    plane = NetworkPlane(config=cfg)
    ctx = _ctx(policy, cfg)
    actions = [
        Action(
            point=MediationPoint.TOOL_CALL,
            tool="web.fetch",
            connector="web",
            arguments={"url": f"https://status.acme.example/incidents/{i}"},
            principal=(USER, AGENT),
            session_id="b",
        )
        for i in range(100)
    ]
    return _timed(lambda i: plane.evaluate(actions[i % 100], ctx), 20_000)


def bench_transport() -> dict[str, Any]:
    transport = GovernedTransport(
        CONFIG.egress_policy,
        httpx.MockTransport(lambda r: httpx.Response(200)),
        tool="web.fetch",
        resolver=lambda h: ["93.184.216.34"],
    )
    client = httpx.Client(transport=transport)
    out = _timed(lambda i: client.get(URLS[i % 80]), 5_000)
    client.close()
    return out


def _endpoint() -> tuple[EndpointPlane, PlaneContext, Any]:
    from pathlib import Path

    policy = load_policy(Path(__file__).resolve().parent.parent / "policies" / "examples" / "ops-assistant.yaml")
    cfg = EndpointConfig.model_validate({k: v for k, v in policy.planes["endpoint"].items() if k != "rate_limits"})
    return EndpointPlane(database_url="sqlite://"), _ctx(policy, cfg), cfg


def bench_shell() -> dict[str, Any]:
    from fiveplane._endpoint._shell import check_command

    _, _, cfg = _endpoint()
    rule = cfg.shell[0]
    paths = cfg.files._policy.check
    commands = [
        "grep -i timeout /var/log/ops/api.log | tail -n 20",
        "systemctl status api",
        "git log --oneline -n 5",
        "ls -la /srv/ops/workspace",
    ]
    return _timed(lambda i: check_command(commands[i % 4], rule._policy, paths), 20_000)


def bench_paths() -> dict[str, Any]:
    _, _, cfg = _endpoint()
    policy = cfg.files._policy
    paths = [f"/srv/ops/workspace/out/report-{i}.md" for i in range(50)]
    return _timed(lambda i: policy.check(paths[i % 50], "write"), 20_000)


def bench_endpoint_plane() -> dict[str, Any]:
    plane, ctx, _ = _endpoint()
    actions = [
        Action(
            point=MediationPoint.TOOL_CALL,
            tool="shell.run",
            connector="shell",
            arguments={"command": f"tail -n {i} /var/log/ops/api.log"},
            principal=(USER, AGENT),
            session_id="b",
        )
        for i in range(100)
    ]
    return _timed(lambda i: plane.evaluate(actions[i % 100], ctx), 10_000)


BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "network_check_url": bench_check_url,
    "network_check_url_cold": bench_check_url_cold,
    "network_plane_evaluate": bench_plane_evaluate,
    "network_transport_request": bench_transport,
    "endpoint_shell_check": bench_shell,
    "endpoint_path_check": bench_paths,
    "endpoint_plane_evaluate": bench_endpoint_plane,
}
