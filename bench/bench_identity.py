"""Identity plane benchmarks (issues 4 and 16).

``token_mint_verify``: mint a per-action token (user -> agent), attenuate it once (a sub-agent
block: shorter expiry, read only), verify it connector-side (parse + signatures + authorizer with
explicit limits + revocation lookup in memory). The same flow written directly against
biscuit-python (``_RawBiscuit``) runs interleaved with it in the same process: ``p50_us`` is
fiveplane's, ``raw_biscuit_p50_us`` the library's, ``ratio`` the one over the other (target
``<= 1.15``); ``mint_`` / ``attenuate_`` / ``verify_`` split both by step. The raw flow binds its
values as parameters, as biscuit-python documents; fiveplane writes values that cannot leave their
quotes as literals (cheaper to parse), so ``raw_biscuit_inline_p50_us`` / ``ratio_vs_inline`` also
compare with the raw flow written that way: what fiveplane itself adds (revocation record and
check, scope, the token's facts read back). ``subagent_chain_*``:
the same with a three-link chain. ``token_mint_verify_sqlite``: the same with revocation ids
recorded in and checked against SQLite (a temp file, WAL), as in production on one machine.
``identity_plane_decision``: the identity plane's evaluation of one tool call by a 3-link chain
(user -> agent -> delegated sub-agent) against 10,000 grants; ``on_decision_*``: what the plane
does once the call may proceed (re-check, mint with the sub-agent's block, vault, obligation);
also the whole ``Governor.decide`` including the token minted after the decision.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from biscuit_auth import AuthorizerBuilder, Biscuit, BiscuitBuilder, BlockBuilder, KeyPair

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
from fiveplane._planes._base import PlaneContext
from fiveplane._planes._identity import IdentityConfig, IdentityPlane

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


def _p50(samples: list[int]) -> float:
    return sorted(samples)[len(samples) // 2] / 1000


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


def _interleaved(fns: list[Callable[[], Any]], n: int, warmup: int) -> list[list[int]]:
    """Time ``fns`` interleaved (rotating which goes first), so load drift hits them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    clock = time.perf_counter_ns
    out: list[list[int]] = [[] for _ in fns]
    k = len(fns)
    for i in range(n):
        for j in range(k):
            idx = (i + j) % k
            t = clock()
            fns[idx]()
            out[idx].append(clock() - t)
    return out


_TOOL, _RESOURCE = "crm.get_note", "notes/n1"


class _RawBiscuit:
    """The same flow written directly against biscuit-python, no fiveplane code: the baseline.

    It builds the token fiveplane builds (``token``/``right`` facts, the expiry check, one
    ``principal`` fact per link), appends the same attenuation block (shorter expiry, read only),
    serializes it, parses it back with the root public key and authorizes it with the same checks
    and limits (tool, operation, resource, time; 20 ms / 1000 facts / 100 iterations). Values go
    in through biscuit-python's documented parameter binding. What it leaves out is what fiveplane
    adds: revocation ids recorded at mint and checked at verify, the scope kept for evidence, the
    token's facts read back after authorization.
    """

    def __init__(self, root: KeyPair, chain: tuple[Principal, ...], sub_expires: datetime) -> None:
        self.private, self.public = root.private_key, root.public_key
        self.chain = chain
        self.sub_expires = sub_expires.replace(microsecond=0)
        links = "".join(f'principal({i}, "{p.kind.value}", {{p{i}}});\n' for i, p in enumerate(chain))
        self.authority = (
            "token({token_id}, {session}, {action}, {exp});\n"
            "right({tool}, {connector}, {operation}, {resource});\n"
            "check if time($t), $t <= {exp};\n" + links
        )
        self.block = "check if time($t), $t <= {exp};\ncheck if operation({op});"
        self.policy = "tool({tool});\noperation({op});\nresource({res});\ntime({now});\nallow if right({tool}, $c, {op}, {res});"
        limits = AuthorizerBuilder().limits()  # type: ignore[attr-defined]
        limits.max_time = timedelta(milliseconds=20)
        limits.max_facts = 1000
        limits.max_iterations = 100
        self.limits = limits

    def mint(self) -> Biscuit:
        params: dict[str, Any] = {
            "token_id": os.urandom(16).hex(),
            "session": "bench",
            "action": "a",
            "exp": (datetime.now(UTC) + timedelta(seconds=60)).replace(microsecond=0),
            "tool": _TOOL,
            "connector": "crm",
            "operation": "read",
            "resource": _RESOURCE,
        }
        for i, p in enumerate(self.chain):
            params[f"p{i}"] = p.id
        return BiscuitBuilder(self.authority, params).build(self.private)

    def attenuate(self, token: Biscuit) -> str:
        out: str = token.append(BlockBuilder(self.block, {"exp": self.sub_expires, "op": "read"})).to_base64()
        return out

    def verify(self, token: str) -> None:
        parsed = Biscuit.from_base64(token, self.public)
        builder = AuthorizerBuilder(self.policy, {"tool": _TOOL, "op": "read", "res": _RESOURCE, "now": datetime.now(UTC)})
        builder.set_limits(self.limits)  # type: ignore[attr-defined]
        builder.build(parsed).authorize()

    def once(self) -> None:
        self.verify(self.attenuate(self.mint()))


class _RawBiscuitInline(_RawBiscuit):
    """The baseline with every value written into the Datalog as a literal instead of a bound parameter.

    What fiveplane does for values that cannot leave their quotes (see ``fiveplane._identity._datalog``);
    the bench's values are all such. Beside it, ``ratio_vs_inline`` is fiveplane's own overhead.
    """

    def mint(self) -> Biscuit:
        exp = (datetime.now(UTC) + timedelta(seconds=60)).replace(microsecond=0).isoformat()
        links = "".join(f'principal({i}, "{p.kind.value}", "{p.id}");\n' for i, p in enumerate(self.chain))
        source = (
            f'token("{os.urandom(16).hex()}", "bench", "a", {exp});\n'
            f'right("{_TOOL}", "crm", "read", "{_RESOURCE}");\n'
            f"check if time($t), $t <= {exp};\n{links}"
        )
        return BiscuitBuilder(source).build(self.private)

    def attenuate(self, token: Biscuit) -> str:
        block = f'check if time($t), $t <= {self.sub_expires.isoformat()};\ncheck if operation("read");'
        out: str = token.append(BlockBuilder(block)).to_base64()
        return out

    def verify(self, token: str) -> None:
        parsed = Biscuit.from_base64(token, self.public)
        now = datetime.now(UTC).replace(microsecond=0).isoformat()
        builder = AuthorizerBuilder(
            f'tool("{_TOOL}");\noperation("read");\nresource("{_RESOURCE}");\ntime({now});\n'
            f'allow if right("{_TOOL}", $c, "read", "{_RESOURCE}");'
        )
        builder.set_limits(self.limits)  # type: ignore[attr-defined]
        builder.build(parsed).authorize()


def _mint_verify(
    service: TokenService, root: KeyPair, n: int, warmup: int, chain: tuple[Principal, ...] = (USER, PLANNER)
) -> dict[str, Any]:
    """Mint (one block for a user → agent chain), attenuate once, verify: the issue's shape, beside raw Biscuit."""
    verifier = service.verifier()
    # what a sub-agent hop adds: a shorter expiry and read-only (the root already pins tool and resource)
    sub_expires = datetime.now(UTC) + timedelta(seconds=600)
    sub = Attenuation(expires_at=sub_expires, operations=(ActionClass.READ,), agent="crm-reader")
    raw = _RawBiscuit(root, chain, sub_expires)

    def mint() -> Any:
        return service.mint(
            chain=chain,
            tool=_TOOL,
            connector="crm",
            operation=ActionClass.READ,
            resource=_RESOURCE,
            session_id="bench",
            action_id="a",
            ttl=60,
        )

    def once() -> None:
        cap = attenuate(mint(), sub)
        verifier.verify(cap.token, tool=_TOOL, operation="read", resource=_RESOURCE)

    inline = _RawBiscuitInline(root, chain, sub_expires)
    total, raw_total, inline_total = _interleaved([once, raw.once, inline.once], n, warmup)
    caps = [mint() for _ in range(200)]
    att = [attenuate(c, sub) for c in caps]
    raw_caps = [raw.mint() for _ in range(200)]
    raw_att = [raw.attenuate(c) for c in raw_caps]
    mint_only, raw_mint = _interleaved([mint, raw.mint], n // 2, 50)
    it = iter(att * (n // 200 + 1))
    raw_it = iter(raw_att * (n // 200 + 1))
    verify_only, raw_verify = _interleaved(
        [
            lambda: verifier.verify(next(it).token, tool=_TOOL, operation="read", resource=_RESOURCE),
            lambda: raw.verify(next(raw_it)),
        ],
        n // 2,
        50,
    )
    it2 = iter(caps * (n // 200 + 1))
    raw_it2 = iter(raw_caps * (n // 200 + 1))
    attenuate_only, raw_attenuate = _interleaved(
        [lambda: attenuate(next(it2), sub).token, lambda: raw.attenuate(next(raw_it2))], n // 2, 50
    )
    return {
        "iterations": n,
        **_stats(total),
        "raw_biscuit_p50_us": round(_p50(raw_total), 1),
        "ratio": round(_p50(total) / _p50(raw_total), 3),
        "raw_biscuit_inline_p50_us": round(_p50(inline_total), 1),
        "ratio_vs_inline": round(_p50(total) / _p50(inline_total), 3),
        **_stats(mint_only, "mint_"),
        "raw_mint_p50_us": round(_p50(raw_mint), 1),
        **_stats(attenuate_only, "attenuate_"),
        "raw_attenuate_p50_us": round(_p50(raw_attenuate), 1),
        **_stats(verify_only, "verify_"),
        "raw_verify_p50_us": round(_p50(raw_verify), 1),
        "token_bytes": len(att[0].token),
        "raw_token_bytes": len(raw_att[0]),
    }


def token_mint_verify() -> dict[str, Any]:
    root = KeyPair()
    service = TokenService(root, revocations=MemoryRevocationStore())
    figures = _mint_verify(service, root, 5_000, 500)
    figures["target_ratio"] = 1.15
    # with a sub-agent in the chain (three principal links) and the same one attenuation block
    deeper = _mint_verify(service, root, 2_000, 200, chain=(USER, PLANNER, READER))
    figures["subagent_chain_p50_us"] = deeper["p50_us"]
    figures["subagent_chain_p99_us"] = deeper["p99_us"]
    figures["subagent_chain_raw_biscuit_p50_us"] = deeper["raw_biscuit_p50_us"]
    figures["subagent_chain_ratio"] = deeper["ratio"]
    return figures


def token_mint_verify_sqlite() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        root = KeyPair()
        service = TokenService(root, revocations=SqlRevocationStore(f"sqlite:///{Path(d) / 'bench.db'}"))
        figures = _mint_verify(service, root, 1_000, 100)
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


def _after_evaluation(
    plane: IdentityPlane, action: Action, decision: Any, ctx: Callable[[], PlaneContext], n: int, warmup: int
) -> list[int]:
    """Time ``on_decision`` only, each call after ``evaluate`` in the same context (as the engine runs them)."""
    clock = time.perf_counter_ns
    out: list[int] = []
    for i in range(warmup + n):
        c = ctx()
        plane.evaluate(action, c)
        t = clock()
        plane.on_decision(action, decision, c)
        if i >= warmup:
            out.append(clock() - t)
    return out


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
        config = IdentityConfig.model_validate(gov.policy.planes.get("identity", {}))

        def ctx(g: Governor = gov) -> PlaneContext:
            # what the engine hands the plane: the pack, the session's committed state, this plane's config
            return PlaneContext(policy=g.policy, session=g.sessions.get("bench"), now=datetime.now(UTC), config=config)

        result = plane.evaluate(action, ctx())
        assert not any(f.verdict for f in result.findings), result.findings
        evaluate = _time(lambda: plane.evaluate(action, ctx()), 5_000, 500)
        decision = gov.decide(action)
        assert decision.verdict is Verdict.ALLOW, decision.explanation
        plane.vault.discard(decision.action_id)
        # what a proceeding tool call costs after the decision (mint with the sub-agent's block, vault,
        # the obligation), in the same decision context as its evaluation, as the engine calls it ...
        on_decision = _after_evaluation(plane, action, decision, ctx, 2_000, 200)
        # ... and without an evaluation before it in that context (the plane authorizes again)
        on_decision_alone = _time(lambda: plane.on_decision(action, decision, ctx()), 2_000, 200)
        decide = _time(lambda: plane.vault.discard(gov.decide(action).action_id), 2_000, 200)
        assert gov.decide(action).verdict is Verdict.ALLOW
        # the same with the version check on every lookup (refresh 0: immediate cross-process revocation)
        store0 = GrantStore(db, refresh_seconds=0)
        plane0 = IdentityPlane(grants=store0, root_key=KeyPair(), revocations=MemoryRevocationStore(), sync_policy_grants=False)
        gov0 = Governor(path, planes=[plane0])
        gov0.sessions = gov.sessions
        evaluate0 = _time(lambda: plane0.evaluate(action, ctx(gov0)), 2_000, 200)
        for s in (store, store0):
            s.engine.dispose()
    return {
        "grants": len(index),
        "chain_links": 3,
        **_stats(evaluate),
        **_stats(evaluate0, "refresh0_"),
        **_stats(on_decision, "on_decision_"),
        **_stats(on_decision_alone, "on_decision_recheck_"),
        **_stats(decide, "governor_decide_with_token_"),
        "grants_load_ms": round(load_ms, 1),
        "index_build_ms": round(index_ms, 1),
    }


BENCHMARKS = {
    "token_mint_verify": token_mint_verify,
    "token_mint_verify_sqlite": token_mint_verify_sqlite,
    "identity_plane_decision": identity_plane_decision,
}
