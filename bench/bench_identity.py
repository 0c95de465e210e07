"""Identity plane benchmarks (issue 4).

``token_mint_verify``: mint a per-action token, attenuate it once (a sub-agent block), verify it
connector-side (parse + signatures + authorizer with explicit limits + revocation lookup in memory);
target p50 <= 300 us. ``token_mint_verify_sqlite``: the same with revocation ids recorded in and
checked against SQLite (a temp file, WAL), as in production on one machine.
``identity_plane_decision``: the identity plane's evaluation of one tool call by a 3-link chain
(user -> agent -> delegated sub-agent) against 10,000 grants; also the whole ``Governor.decide``
including the token minted after the decision.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from biscuit_auth import KeyPair

from fiveplane import Action, ActionClass, Governor, MediationPoint, Principal, PrincipalKind, Verdict
from fiveplane._identity import (
    Attenuation,
    GrantSpec,
    GrantStore,
    MemoryRevocationStore,
    SqlRevocationStore,
    TokenService,
    attenuate,
)
from fiveplane._planes._identity import IdentityPlane

USER = Principal(kind=PrincipalKind.USER, id="u-42", roles=("role-7", "staff"))
PLANNER = Principal(kind=PrincipalKind.AGENT, id="planner")
READER = Principal(kind=PrincipalKind.AGENT, id="crm-reader")


def _stats(samples: list[int], prefix: str = "") -> dict[str, Any]:
    samples = sorted(samples)
    n = len(samples)
    return {
        f"{prefix}p50_us": round(samples[n // 2] / 1000, 1),
        f"{prefix}p99_us": round(samples[int(n * 0.99)] / 1000, 1),
        f"{prefix}mean_us": round(statistics.fmean(samples) / 1000, 1),
    }


def _time(fn: Callable[[], Any], n: int, warmup: int) -> list[int]:
    for _ in range(warmup):
        fn()
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        t = clock()
        fn()
        out.append(clock() - t)
    return out


def _mint_verify(service: TokenService, n: int, warmup: int, chain: tuple[Principal, ...] = (USER, PLANNER)) -> dict[str, Any]:
    """Mint (one block for a user → agent chain), attenuate once, verify: the issue's shape."""
    verifier = service.verifier()
    # what a sub-agent hop adds: a shorter expiry and read-only (the root already pins tool and resource)
    sub = Attenuation(expires_at=datetime.now(UTC) + timedelta(seconds=20), operations=(ActionClass.READ,), agent="crm-reader")

    def mint() -> Any:
        return service.mint(
            chain=chain,
            tool="crm.get_note",
            connector="crm",
            operation=ActionClass.READ,
            resource="notes/n1",
            session_id="bench",
            action_id="a",
            ttl=60,
        )

    def once() -> None:
        cap = attenuate(mint(), sub)
        verifier.verify(cap.token, tool="crm.get_note", operation="read", resource="notes/n1")

    total = _time(once, n, warmup)
    caps = [mint() for _ in range(200)]
    att = [attenuate(c, sub) for c in caps]
    mint_only = _time(mint, n // 2, 50)
    it = iter(att * (n // 200 + 1))
    verify_only = _time(
        lambda: verifier.verify(next(it).token, tool="crm.get_note", operation="read", resource="notes/n1"), n // 2, 50
    )
    it2 = iter(caps * (n // 200 + 1))
    attenuate_only = _time(lambda: attenuate(next(it2), sub), n // 2, 50)
    return {
        "iterations": n,
        **_stats(total),
        **_stats(mint_only, "mint_"),
        **_stats(attenuate_only, "attenuate_"),
        **_stats(verify_only, "verify_"),
        "token_bytes": len(att[0].token),
    }


def token_mint_verify() -> dict[str, Any]:
    service = TokenService(KeyPair(), revocations=MemoryRevocationStore())
    figures = _mint_verify(service, 5_000, 500)
    figures["target_p50_us"] = 300
    # with a sub-agent in the chain the minted token already carries one attenuation block per hop
    deeper = _mint_verify(service, 2_000, 200, chain=(USER, PLANNER, READER))
    figures["subagent_chain_p50_us"] = deeper["p50_us"]
    figures["subagent_chain_p99_us"] = deeper["p99_us"]
    return figures


def token_mint_verify_sqlite() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        service = TokenService(KeyPair(), revocations=SqlRevocationStore(f"sqlite:///{Path(d) / 'bench.db'}"))
        figures = _mint_verify(service, 1_000, 100)
        service.revocations.engine.dispose()  # type: ignore[attr-defined]
    return figures


def _pack() -> dict[str, Any]:
    return {
        "name": "bench-identity",
        "connectors": [{"name": "crm"}, {"name": "contracts"}],
        "tools": [
            {"name": "crm.get_note", "connector": "crm", "class": "read"},
            {"name": "crm.add_note", "connector": "crm", "class": "modify"},
            {"name": "contracts.update", "connector": "contracts", "class": "modify"},
        ],
        "agents": [
            {"name": "planner", "purpose": "plan", "tools": ["crm.*", "contracts.*"], "delegates_to": ["crm-reader"]},
            {"name": "crm-reader", "purpose": "read", "tools": ["crm.*"]},
        ],
        "rules": [
            {"id": "deleg", "match": {"points": ["delegation"], "agents": ["planner"]}, "verdict": "allow"},
            {"id": "crm", "match": {"tools": ["crm.*"], "roles": ["staff"]}, "verdict": "allow"},
        ],
        "planes": {"identity": {"resources": {"crm.get_note": "notes/{note_id}"}}},
    }


def _grants(n: int) -> list[GrantSpec]:
    """n grants: mostly per-user, some per-role, per-agent and glob selectors (scanned)."""
    out: list[dict[str, Any]] = [
        {"id": "planner.crm", "principal": "agent:planner", "classes": ["read", "modify"], "connectors": ["crm"]},
        {"id": "reader.crm", "principal": "subagent:crm-reader@planner", "classes": ["read"], "connectors": ["crm"]},
    ]
    i = 0
    while len(out) < n - 700:
        out.append(
            {
                "id": f"u{i}.crm",
                "principal": f"user:u-{i}",
                "classes": ["read"],
                "connectors": ["crm"],
                "resources": [f"notes/{i % 50}*", "notes/n*"],
            }
        )
        out.append({"id": f"u{i}.contracts", "principal": f"user:u-{i}", "classes": ["modify"], "connectors": ["contracts"]})
        out.append(
            {"id": f"u{i}.cond", "principal": f"user:u-{i}", "classes": ["invoke"], "tools": ["crm.*"], "when": "args.size() < 5"}
        )
        i += 1
    for r in range(400):
        out.append(
            {
                "id": f"role{r}",
                "principal": f"role:role-{r}",
                "classes": ["read", "modify"],
                "tools": [f"crm.op{r}", "crm.get_note"] if r == 7 else [f"crm.op{r}"],
            }
        )
    for a in range(200):
        out.append({"id": f"agent{a}", "principal": f"agent:bot-{a}", "classes": ["read"], "connectors": ["crm"]})
    for gidx in range(50):
        out.append({"id": f"glob-user{gidx}", "principal": f"user:team{gidx}-*", "classes": ["read"], "connectors": ["crm"]})
        out.append({"id": f"glob-agent{gidx}", "principal": f"agent:fleet{gidx}-*", "classes": ["read"], "connectors": ["crm"]})
    return [GrantSpec.model_validate(g) for g in out[:n]]


def identity_plane_decision() -> dict[str, Any]:
    n_grants = 10_000
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.yaml"
        path.write_text(yaml.safe_dump(_pack(), sort_keys=False))
        db = f"sqlite:///{Path(d) / 'bench.db'}"
        specs = _grants(n_grants)
        store = GrantStore(db)
        t0 = time.perf_counter()
        store.sync(specs, source="bench")
        load_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        index = store.index()
        index_ms = (time.perf_counter() - t0) * 1000
        plane = IdentityPlane(database=db, root_key=KeyPair(), revocations=MemoryRevocationStore())
        gov = Governor(path, planes=[plane])
        deleg = gov.decide(
            Action(
                point=MediationPoint.DELEGATION,
                arguments={"to_agent": "crm-reader", "tools": ["crm.get_note"], "classes": ["read"]},
                principal=(USER, PLANNER),
                session_id="bench",
            )
        )
        assert deleg.verdict is Verdict.ALLOW, deleg.explanation
        action = Action(
            point=MediationPoint.TOOL_CALL,
            tool="crm.get_note",
            connector="crm",
            action_class=ActionClass.READ,
            arguments={"note_id": "n1"},
            principal=(USER, PLANNER, READER),
            session_id="bench",
        )
        ctx = gov._context(action, "identity")
        result = plane.evaluate(action, ctx)
        assert not any(f.verdict for f in result.findings), result.findings
        evaluate = _time(lambda: plane.evaluate(action, gov._context(action, "identity")), 5_000, 500)
        decide = _time(lambda: plane.vault.discard(gov.decide(action).action_id), 2_000, 200)
        assert gov.decide(action).verdict is Verdict.ALLOW
        # the same with the version check on every lookup (refresh 0: immediate cross-process revocation)
        store0 = GrantStore(db, refresh_seconds=0)
        plane0 = IdentityPlane(grants=store0, root_key=KeyPair(), revocations=MemoryRevocationStore(), sync_policy_grants=False)
        gov0 = Governor(path, planes=[plane0])
        gov0.sessions = gov.sessions
        evaluate0 = _time(lambda: plane0.evaluate(action, gov0._context(action, "identity")), 2_000, 200)
        for s in (store, store0):
            s.engine.dispose()
    return {
        "grants": len(index),
        "chain_links": 3,
        **_stats(evaluate),
        **_stats(evaluate0, "refresh0_"),
        **_stats(decide, "governor_decide_with_token_"),
        "grants_load_ms": round(load_ms, 1),
        "index_build_ms": round(index_ms, 1),
    }


BENCHMARKS = {
    "token_mint_verify": token_mint_verify,
    "token_mint_verify_sqlite": token_mint_verify_sqlite,
    "identity_plane_decision": identity_plane_decision,
}
