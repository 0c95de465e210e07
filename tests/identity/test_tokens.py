"""Capability tokens: scoped to one action, attenuable only downwards, revocable, fail closed."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from biscuit_auth import BiscuitBuilder, BlockBuilder, KeyPair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fiveplane import ActionClass, Principal, PrincipalKind
from fiveplane._identity import (
    Attenuation,
    AuthorizerLimits,
    Capability,
    CapabilityDenied,
    CapabilityVerifier,
    IdentityError,
    MemoryRevocationStore,
    RevocationStatus,
    SqlRevocationStore,
    TokenService,
    attenuate,
    attenuate_token,
    verify_capability,
)

from .conftest import AGENT, REP, Clock, Events

R, INV, M = ActionClass.READ, ActionClass.INVOKE, ActionClass.MODIFY
HELPER = Principal(kind=PrincipalKind.AGENT, id="helper")


def mint(svc: TokenService, **kw: Any) -> Capability:
    args: dict[str, Any] = {
        "chain": (REP, AGENT),
        "tool": "crm.get_account_notes",
        "connector": "crm",
        "operation": R,
        "resource": "accounts/ACC-1",
        "session_id": "s1",
        "action_id": "a1",
        "ttl": 60,
    }
    args.update(kw)
    return svc.mint(**args)


def verifier(svc: TokenService, **kw: Any) -> CapabilityVerifier:
    v: CapabilityVerifier = svc.verifier(**kw)
    return v


def denied(v: CapabilityVerifier, token: Any, **request: Any) -> str:
    with pytest.raises(CapabilityDenied) as info:
        v.verify(token, **request)
    return info.value.code


READ_REQ = {"tool": "crm.get_account_notes", "operation": "read", "resource": "accounts/ACC-1"}


def test_mint_and_verify(service: TokenService, events: Events) -> None:
    cap = mint(service)
    v = verifier(service)
    got = v.verify(cap.token, **READ_REQ)
    assert got.token_id == cap.id and got.principal == ("user:rep-1", "agent:sales-assistant")
    assert got.session_id == "s1" and got.action_id == "a1" and got.operation is R and got.blocks == 1
    assert got.expires_at == cap.expires_at and got.revocation_ids == cap.revocation_ids
    assert v.verify(cap, connector="crm", **READ_REQ).token_id == cap.id  # a Capability works too
    assert events.kinds() == ["identity.token.minted"]
    assert events[0][1]["token_id"] == cap.id and cap.token not in repr(events)


def test_read_token_never_authorizes_a_write_and_vice_versa(service: TokenService) -> None:
    v = verifier(service)
    read = mint(service)
    write = mint(service, tool="contracts.update_status", connector="contracts", operation=M, resource="contracts/C-7")
    assert read.id != write.id and read.revocation_ids != write.revocation_ids
    assert denied(v, read, tool="crm.get_account_notes", operation="modify", resource="accounts/ACC-1") == "denied"
    assert denied(v, read, tool="crm.get_account_notes", operation="invoke", resource="accounts/ACC-1") == "denied"
    assert denied(v, write, tool="contracts.update_status", operation="read", resource="contracts/C-7") == "denied"
    assert v.verify(write, tool="contracts.update_status", operation="modify", resource="contracts/C-7")


def test_wrong_tool_resource_connector_fail(service: TokenService) -> None:
    v, cap = verifier(service), mint(service)
    assert denied(v, cap, tool="crm.get_account_notes", operation="read", resource="accounts/ACC-2") == "denied"
    assert denied(v, cap, tool="crm.get_account_notes", operation="read") == "denied"
    assert denied(v, cap, tool="crm.search_accounts", operation="read", resource="accounts/ACC-1") == "denied"
    assert denied(v, cap, connector="email", **READ_REQ) == "denied"
    assert denied(v, cap, tool="crm.get_account_notes", operation="write", resource="accounts/ACC-1") == "bad_request"
    assert not v.allows(cap, tool="crm.get_account_notes", operation="read", resource="accounts/ACC-2")


def test_expired_token_fails(service: TokenService, clock: Clock) -> None:
    cap = mint(service, ttl=30)
    v = verifier(service)
    assert v.verify(cap, **READ_REQ)
    clock.advance(31)
    assert denied(v, cap, **READ_REQ) == "expired"


def test_expiry_is_capped_by_not_after(service: TokenService, clock: Clock) -> None:
    cap = mint(service, ttl=60, not_after=clock.now + timedelta(seconds=10))
    assert cap.expires_at == clock.now + timedelta(seconds=10)
    with pytest.raises(IdentityError, match="authority ends"):
        mint(service, ttl=60, not_after=clock.now)
    with pytest.raises(IdentityError, match="positive"):
        mint(service, ttl=0)


def test_revoked_token_and_its_derivatives_fail(service: TokenService, events: Events) -> None:
    v = verifier(service)
    cap = mint(service)
    derived = service.attenuate(cap, Attenuation(operations=(R,)))
    offline = attenuate(cap, Attenuation(resources=("accounts/ACC-1",)))
    assert service.revoke(cap.id)
    for token in (cap, derived, offline):
        assert denied(v, token, **READ_REQ) == "revoked"
    assert "identity.token.revoked" in events.kinds()


def test_session_end_revokes_every_token_of_the_session(service: TokenService) -> None:
    v = verifier(service)
    a = mint(service, session_id="s1", action_id="a1")
    b = mint(
        service,
        session_id="s1",
        action_id="a2",
        tool="contracts.update_status",
        connector="contracts",
        operation=M,
        resource="c/1",
    )
    other = mint(service, session_id="s2", action_id="a3")
    assert sorted(service.revoke_session("s1")) == sorted([a.id, b.id])
    assert denied(v, a, **READ_REQ) == "revoked"
    assert denied(v, b, tool="contracts.update_status", operation="modify", resource="c/1") == "revoked"
    assert v.verify(other, **READ_REQ)


def test_tampered_truncated_and_foreign_tokens_fail(service: TokenService) -> None:
    v, cap = verifier(service), mint(service)
    raw = bytearray(base64.urlsafe_b64decode(cap.token + "=" * (-len(cap.token) % 4)))
    for pos in (10, len(raw) // 2, len(raw) - 5):
        flipped = bytearray(raw)
        flipped[pos] ^= 0x01
        assert denied(v, base64.urlsafe_b64encode(bytes(flipped)).decode(), **READ_REQ) == "invalid"
    assert denied(v, cap.token[: len(cap.token) // 2], **READ_REQ) == "invalid"
    assert denied(v, "", **READ_REQ) == "invalid"
    assert denied(v, "not a token", **READ_REQ) == "invalid"
    # same scope, minted with another key
    foreign = TokenService(KeyPair(), revocations=MemoryRevocationStore(clock=service.clock), clock=service.clock)
    assert denied(v, mint(foreign), **READ_REQ) == "invalid"
    # a token verifying under the right key but never recorded by this deployment
    stranger = mint(TokenService(service._root, revocations=MemoryRevocationStore(clock=service.clock), clock=service.clock))
    assert denied(v, stranger, **READ_REQ) == "unknown"
    assert CapabilityVerifier(
        service.public_key, revocations=service.revocations, require_known=False, clock=service.clock
    ).verify(stranger, **READ_REQ)


def test_handcrafted_token_with_broad_right_in_a_later_block_fails(service: TokenService, root: KeyPair) -> None:
    v = verifier(service)
    cap = mint(service)
    widened = attenuate_token(cap.token, Attenuation(), public_key=service.public_key)
    assert v.verify(widened, **READ_REQ)  # a no-op block changes nothing
    # facts in a later block are not trusted: a holder cannot add rights, time or resource
    from biscuit_auth import Biscuit

    tok = Biscuit.from_base64(cap.token, service.public_key)
    evil = tok.append(
        BlockBuilder(
            'right("crm.get_account_notes", "crm", "modify", "accounts/ACC-1"); right("contracts.update_status", "contracts", "modify", "contracts/C-7"); time(2000-01-01T00:00:00Z); resource("accounts/ACC-1"); operation("read");'
        )
    ).to_base64()
    assert denied(v, evil, tool="crm.get_account_notes", operation="modify", resource="accounts/ACC-1") == "denied"
    assert denied(v, evil, tool="contracts.update_status", operation="modify", resource="contracts/C-7") == "denied"
    # a token not made by fiveplane (no token_id) but signed by the root key is refused
    bare = BiscuitBuilder('right("crm.get_account_notes", "crm", "read", "accounts/ACC-1");').build(root.private_key).to_base64()
    assert CapabilityVerifier(service.public_key, revocations=None, clock=service.clock).allows(bare, **READ_REQ) is False


def test_arguments_binding(service: TokenService) -> None:
    v = verifier(service)
    args = {"contract_id": "C-7", "status": "signed"}
    req = {"tool": "contracts.update_status", "operation": "modify", "resource": "contracts/C-7"}
    cap = mint(
        service,
        tool="contracts.update_status",
        connector="contracts",
        operation=M,
        resource="contracts/C-7",
        arguments=args,
        bind_arguments=True,
    )
    assert cap.scope.arguments_bound
    assert v.verify(cap, arguments={"status": "signed", "contract_id": "C-7"}, **req)  # key order does not matter
    assert denied(v, cap, arguments={"contract_id": "C-7", "status": "cancelled"}, **req) == "arguments"
    assert denied(v, cap, **req) == "arguments"
    with pytest.raises(IdentityError, match="binds"):
        mint(service, bind_arguments=True)


def test_attenuation_narrows_and_records(service: TokenService, clock: Clock, events: Events) -> None:
    v = verifier(service)
    cap = mint(service, ttl=60)
    short = service.attenuate(cap, Attenuation(expires_at=clock.now + timedelta(seconds=5), agent="helper"))
    assert short.scope.blocks == 2 and short.expires_at == clock.now + timedelta(seconds=5)
    assert short.scope.attenuations[0]["agent"] == "helper"
    assert len(short.revocation_ids) == 2 and short.revocation_ids[0] == cap.revocation_ids[0]
    assert service.revocations.status(short.revocation_ids).known == frozenset(short.revocation_ids)
    assert v.verify(short, **READ_REQ).blocks == 2
    clock.advance(6)
    assert denied(v, short, **READ_REQ) == "expired"
    assert v.verify(cap, **READ_REQ)  # the parent is untouched
    with pytest.raises(IdentityError, match="excludes"):
        service.attenuate(cap, Attenuation(operations=(M,)))
    with pytest.raises(ValueError, match="allow nothing"):
        Attenuation(tools=())
    assert "identity.token.attenuated" in events.kinds()


def test_limits_fail_closed(service: TokenService) -> None:
    cap = mint(service)
    tight = verifier(service, limits=AuthorizerLimits(max_time_ms=0.001))  # a time limit no machine meets
    assert denied(tight, cap, **READ_REQ) == "limits"


def test_revocation_store_failure_denies(service: TokenService) -> None:
    class Broken(MemoryRevocationStore):
        def status(self, revocation_ids: Any) -> RevocationStatus:
            raise OSError("database is gone")

    cap = mint(service)
    v = CapabilityVerifier(service.public_key, revocations=Broken(), clock=service.clock)
    assert denied(v, cap, **READ_REQ) == "error"


def test_shared_revocations_across_processes(root: KeyPair, db: str) -> None:
    issuer = TokenService(root, revocations=SqlRevocationStore(db))
    cap = mint(issuer)
    connector = CapabilityVerifier(str(root.public_key), revocations=SqlRevocationStore(db))  # elsewhere: public key + DB only
    assert connector.verify(cap.token, **READ_REQ)
    TokenService(root, revocations=SqlRevocationStore(db)).revoke_session("s1")  # e.g. another worker ends the task
    assert denied(connector, cap.token, **READ_REQ) == "revoked"
    assert verify_capability(
        mint(issuer, session_id="s9"), public_key=root.public_key, revocations=SqlRevocationStore(db), **READ_REQ
    )
    assert SqlRevocationStore(db).purge(expired_before=cap.expires_at + timedelta(days=1)) >= 2


def test_no_bearer_secret_in_repr_str_or_evidence(service: TokenService) -> None:
    cap = mint(service)
    for text in (repr(cap), str(cap), str(cap.evidence()), cap.scope.model_dump_json()):
        assert cap.token not in text
    assert set(cap.evidence()) >= {"token_id", "tool", "operation", "resource", "expires_at", "revocation_ids", "principal"}


async def test_async_verify(service: TokenService) -> None:
    cap = mint(service)
    got = await verifier(service).averify(cap, **READ_REQ)
    assert got.token_id == cap.id


# ---- properties: attenuation never adds authority ------------------------------------------------

TOOLS = ["crm.get_account_notes", "crm.search_accounts", "contracts.update_status"]
RESOURCES = ["accounts/ACC-1", "accounts/ACC-2", "contracts/C-7", ""]

attenuations = st.builds(
    Attenuation,
    expires_at=st.none(),
    operations=st.none() | st.lists(st.sampled_from(list(ActionClass)), min_size=1, max_size=3, unique=True).map(tuple),
    tools=st.none() | st.lists(st.sampled_from(TOOLS), min_size=1, max_size=2, unique=True).map(tuple),
    resources=st.none() | st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=2, unique=True).map(tuple),
    resource_prefixes=st.none()
    | st.lists(st.sampled_from(["accounts/", "contracts/", "acc"]), min_size=1, max_size=2, unique=True).map(tuple),
)
requests = st.fixed_dictionaries(
    {
        "tool": st.sampled_from(TOOLS),
        "operation": st.sampled_from(["read", "invoke", "modify"]),
        "resource": st.sampled_from([*RESOURCES, None]),
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    scope=st.tuples(st.sampled_from(TOOLS), st.sampled_from(list(ActionClass)), st.sampled_from(RESOURCES)),
    blocks=st.lists(attenuations, min_size=1, max_size=3),
    probes=st.lists(requests, min_size=1, max_size=4),
)
def test_attenuation_never_adds_authority(
    service: TokenService, scope: Any, blocks: list[Attenuation], probes: list[dict[str, Any]]
) -> None:
    tool, op, resource = scope
    v = verifier(service)
    parent = mint(service, tool=tool, connector=tool.split(".")[0], operation=op, resource=resource or None)
    child = parent
    for block in blocks:
        child = attenuate(child, block)
        assert child.expires_at <= parent.expires_at
    own = {"tool": tool, "operation": op.value, "resource": resource or None}
    for req in [*probes, own]:
        if v.allows(child, **req):
            assert v.allows(parent, **req), (req, blocks)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    facts=st.lists(
        st.sampled_from(
            [
                'right("crm.get_account_notes", "crm", "modify", "accounts/ACC-1")',
                'right("contracts.update_status", "contracts", "modify", "contracts/C-7")',
                'right($t, "crm", "read", $r) <- tool($t), resource($r)',
                "time(2000-01-01T00:00:00Z)",
                'resource("accounts/ACC-1")',
                'operation("read")',
                'tool("crm.get_account_notes")',
                'token("forged", "s1", "a1", 2999-01-01T00:00:00Z)',
                'principal(0, "user", "admin")',
                "check if true",
            ]
        ),
        min_size=1,
        max_size=5,
    ),
    probes=st.lists(requests, min_size=1, max_size=4),
)
def test_a_subagent_cannot_widen_by_adding_facts_or_blocks(
    service: TokenService, facts: list[str], probes: list[dict[str, Any]]
) -> None:
    from biscuit_auth import Biscuit

    v = verifier(service)
    parent = mint(service)
    token = Biscuit.from_base64(parent.token, service.public_key)
    for fact in facts:
        token = token.append(BlockBuilder(fact + ";"))
    forged = token.to_base64()
    for req in probes:
        if v.allows(forged, **req):
            assert v.allows(parent, **req)
            got = v.verify(forged, **req)
            assert got.token_id == parent.id and got.principal == parent.scope.principal  # later-block facts are ignored


def test_subagent_token_from_the_service_is_attenuated(service: TokenService, clock: Clock) -> None:
    v = verifier(service)
    cap = mint(
        service,
        chain=(REP, AGENT, HELPER),
        attenuations=[
            Attenuation(
                expires_at=clock.now + timedelta(seconds=10),
                operations=(R,),
                tools=("crm.get_account_notes",),
                resources=("accounts/ACC-1",),
                agent="helper",
            )
        ],
    )
    assert cap.scope.blocks == 2 and cap.expires_at == clock.now + timedelta(seconds=10)
    assert v.verify(cap, **READ_REQ).principal == ("user:rep-1", "agent:sales-assistant", "agent:helper")
    with pytest.raises(IdentityError, match="excludes the action"):
        mint(service, attenuations=[Attenuation(operations=(M,))])


def test_one_verifier_serves_many_threads(service: TokenService) -> None:
    """A verifier (its limits built once) is shared by worker threads, as ``averify`` does."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    v = verifier(service)
    good = [mint(service, action_id=f"a{i}") for i in range(8)]
    revoked = mint(service, session_id="gone")
    service.revoke_session("gone")

    def check(i: int) -> tuple[str, str]:
        got = v.verify(good[i % 8], **READ_REQ).token_id
        return got, denied(v, revoked, **READ_REQ)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(check, range(200)))
    assert results == [(good[i % 8].id, "revoked") for i in range(200)]

    async def many() -> list[str]:
        return [c.token_id for c in await asyncio.gather(*(v.averify(c, **READ_REQ) for c in good))]

    assert asyncio.run(many()) == [c.id for c in good]


def test_a_far_past_or_far_zoned_expiry_still_narrows(service: TokenService, clock: Clock) -> None:
    from datetime import UTC, datetime, timezone

    v = verifier(service)
    cap = mint(service)
    past = attenuate(cap, Attenuation(expires_at=datetime(2000, 1, 1, tzinfo=UTC)))
    assert denied(v, past, **READ_REQ) == "expired"
    zoned = clock.now.astimezone(timezone(timedelta(hours=5, minutes=30))) + timedelta(seconds=5)
    soon = attenuate(cap, Attenuation(expires_at=zoned))
    assert soon.expires_at == clock.now + timedelta(seconds=5) and v.verify(soon, **READ_REQ).blocks == 2
    clock.advance(6)
    assert denied(v, soon, **READ_REQ) == "expired"
