"""Per-action capability tokens (Biscuit): mint, attenuate, revoke.

A token is scoped to exactly one action: its authority block (signed by the root key) holds the
principal chain, session and action ids, one ``right(tool, connector, operation, resource)`` and
an expiry check; when the policy asks for it, a check binds the digest of the arguments the tool
receives. The operation is the action class, so a read token never authorizes a modify (nor the
reverse). Attenuation appends blocks of *checks* only (a block's facts are never trusted by the
verifier), so a derived token can only do less: a shorter expiry, fewer operations, tools or
resources. A sub-agent's token is its chain's token with one such block per delegation hop.

The bearer string lives in :class:`Capability` and is never part of its ``repr``, its evidence
form or any record; evidence names a token by id, scope, expiry and revocation ids.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from biscuit_auth import Biscuit, BiscuitBuilder, BlockBuilder, KeyPair, PublicKey
from pydantic import BaseModel, ConfigDict, Field

from .._actions import ActionClass, Principal, PrincipalKind
from .._evidence import digest_value
from ._datalog import Source, date_literal
from ._db import Recorder
from ._model import IdentityError
from ._revocation import RevocationStore, TokenRecord

__all__ = ["Attenuation", "Capability", "TokenScope", "TokenService", "arguments_digest", "attenuate", "attenuate_token"]


def arguments_digest(arguments: Mapping[str, Any]) -> str:
    """The digest bound into a token for a tool's arguments (SHA-256 of their canonical JSON)."""
    return digest_value(dict(arguments))


def _floor(t: datetime) -> datetime:
    # Biscuit dates have one-second resolution; round down so the token never outlives its scope.
    return t.astimezone(UTC).replace(microsecond=0)


class TokenScope(BaseModel):
    """What one token authorizes — the part that goes into evidence (no bearer secret)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_id: str
    principal: tuple[str, ...]
    """The chain as ``kind:id`` links, user first."""
    session_id: str | None
    action_id: str | None
    tool: str
    connector: str | None
    operation: ActionClass
    resource: str | None
    arguments_bound: bool = False
    """The token only verifies for the exact arguments it was minted for."""
    issued_at: datetime
    expires_at: datetime
    """The effective expiry (the earliest over every block)."""
    blocks: int = 1
    attenuations: tuple[dict[str, Any], ...] = ()
    """What each block after the first narrows (operations, tools, resources, expiry, sub-agent)."""
    grants: dict[str, list[str]] = Field(default_factory=dict)
    """The grants that authorized each link (``kind:id`` → grant ids)."""

    def evidence(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class Attenuation:
    """One narrowing block. Every field left ``None`` narrows nothing."""

    expires_at: datetime | None = None
    operations: tuple[ActionClass, ...] | None = None
    tools: tuple[str, ...] | None = None
    resources: tuple[str, ...] | None = None
    """Exact resources the token may still be used for."""
    resource_prefixes: tuple[str, ...] | None = None
    """Or: resources starting with one of these."""
    agent: str | None = None
    """The sub-agent this block hands the token to (for evidence; it is not a trusted fact)."""

    def __post_init__(self) -> None:
        for name in ("operations", "tools", "resources", "resource_prefixes"):
            value = getattr(self, name)
            if value is not None and len(value) == 0:
                raise ValueError(f"attenuation {name}=() would allow nothing; leave it None or name at least one")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("attenuation expires_at needs a time zone")

    def block(self) -> BlockBuilder:
        source, params = self._source
        return BlockBuilder(source, params)

    @cached_property
    def _source(self) -> tuple[str, dict[str, Any] | None]:
        """The block's Datalog and parameters, written once per attenuation (it is frozen)."""
        src = Source()
        lines: list[str] = []
        if self.expires_at is not None:
            lines.append(f"check if time($t), $t <= {date_literal(_floor(self.expires_at))};")
        # one allowed value: an exact check (cheaper to parse and to evaluate than a set)
        for fact, key, values in (
            ("operation", "ops", None if self.operations is None else [o.value for o in self.operations]),
            ("tool", "tools", None if self.tools is None else list(self.tools)),
            ("resource", "res", None if self.resources is None else list(self.resources)),
        ):
            if values is None:
                continue
            if len(values) == 1:
                lines.append(f"check if {fact}({src.text(key, values[0])});")
            else:
                lines.append(f"check if {fact}($v), {src.bind(key, set(values))}.contains($v);")
        if self.resource_prefixes is not None:
            alts = [f"resource($r), $r.starts_with({src.text(f'rp{i}', p)})" for i, p in enumerate(self.resource_prefixes)]
            lines.append(f"check if {' or '.join(alts)};")
        if not lines:
            lines.append("check if true;")
        return "\n".join(lines), src.args()

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.agent is not None:
            out["agent"] = self.agent
        if self.expires_at is not None:
            out["expires_at"] = _floor(self.expires_at).isoformat()
        if self.operations is not None:
            out["operations"] = sorted(o.value for o in self.operations)
        if self.tools is not None:
            out["tools"] = sorted(self.tools)
        if self.resources is not None:
            out["resources"] = sorted(self.resources)
        if self.resource_prefixes is not None:
            out["resource_prefixes"] = sorted(self.resource_prefixes)
        return out

    def narrowed(self, scope: TokenScope) -> TokenScope:
        exp = scope.expires_at if self.expires_at is None else min(scope.expires_at, _floor(self.expires_at))
        # already-validated values, only narrowed
        return scope.model_copy(
            update={"expires_at": exp, "blocks": scope.blocks + 1, "attenuations": (*scope.attenuations, self.evidence())}
        )

    def admits(self, scope: TokenScope) -> bool:
        """Would the token still authorize its own action after this block (else it is useless)?"""
        if self.operations is not None and scope.operation not in self.operations:
            return False
        if self.tools is not None and scope.tool not in self.tools:
            return False
        res = scope.resource or ""
        if self.resources is not None and res not in self.resources:
            return False
        return not (self.resource_prefixes is not None and not any(res.startswith(p) for p in self.resource_prefixes))


@dataclass(frozen=True)
class Capability:
    """A minted token: the bearer string (for the tool only), its scope and its revocation ids."""

    token: str = field(repr=False)
    """The bearer token (URL-safe base64). Hand it to the tool; never log or record it."""
    scope: TokenScope
    revocation_ids: tuple[str, ...]
    public_key: PublicKey | None = field(default=None, repr=False, compare=False)
    biscuit: Biscuit | None = field(default=None, repr=False, compare=False)
    """The parsed token, kept in process so attenuating it needs no re-parse (never serialized elsewhere)."""

    @property
    def id(self) -> str:
        return self.scope.token_id

    @property
    def expires_at(self) -> datetime:
        return self.scope.expires_at

    def __str__(self) -> str:
        return f"Capability({self.id}: {self.scope.operation.value} {self.scope.tool} until {self.expires_at.isoformat()})"

    def evidence(self) -> dict[str, Any]:
        """Id, scope, expiry and revocation ids — what evidence may hold."""
        return {**self.scope.evidence(), "revocation_ids": list(self.revocation_ids)}

    def attenuate(self, attenuation: Attenuation | None = None, **narrow: Any) -> Capability:
        """An offline-attenuated copy (see :func:`attenuate`)."""
        if self.public_key is None:
            raise IdentityError("this capability carries no public key; use attenuate(token, public_key=...)")
        return attenuate(self, attenuation or Attenuation(**narrow), public_key=self.public_key)


def attenuate(capability: Capability, attenuation: Attenuation, *, public_key: PublicKey | None = None) -> Capability:
    """Append one narrowing block, offline (no root private key needed); the result can only do less."""
    key = public_key or capability.public_key
    parsed = capability.biscuit
    if parsed is None:
        if key is None:
            raise IdentityError("attenuate needs the root public key")
        parsed = Biscuit.from_base64(capability.token, key)
    token = parsed.append(attenuation.block())
    return Capability(
        token=token.to_base64(),
        scope=attenuation.narrowed(capability.scope),
        revocation_ids=tuple(token.revocation_ids),
        public_key=key,
        biscuit=token,
    )


def attenuate_token(token: str, attenuation: Attenuation, *, public_key: PublicKey) -> str:
    """:func:`attenuate` for a bare token string (a holder that only has the string and the public key)."""
    out: str = Biscuit.from_base64(token, public_key).append(attenuation.block()).to_base64()
    return out


_KIND_LITERAL = {k: k.value for k in PrincipalKind if k.value.isalpha() and k.value.islower()}


class TokenService:
    """Mints, attenuates and revokes capability tokens with one root key.

    Args:
        root: the root key pair (see :func:`~fiveplane.identity.load_root_key`).
        revocations: where revocation ids are recorded and revoked (required: pass a store).
        record: ``record(kind, payload)`` for ``identity.token.minted`` / ``.attenuated`` / ``.revoked``
            (payloads hold ids, scope and expiry, never the token).
        clock: the current time (UTC).
    """

    def __init__(
        self,
        root: KeyPair,
        *,
        revocations: RevocationStore,
        record: Recorder | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._root = root
        self.public_key: PublicKey = root.public_key
        self.revocations = revocations
        self.record = record
        self.clock = clock

    def mint(
        self,
        *,
        chain: Sequence[Principal],
        tool: str,
        connector: str | None,
        operation: ActionClass,
        resource: str | None = None,
        session_id: str | None = None,
        action_id: str | None = None,
        arguments: Mapping[str, Any] | None = None,
        bind_arguments: bool = False,
        ttl: float,
        not_after: datetime | None = None,
        attenuations: Sequence[Attenuation] = (),
        grants: Mapping[str, list[str]] | None = None,
    ) -> Capability:
        """Mint a token for exactly one action, then append ``attenuations`` (sub-agent hops, narrowing).

        The expiry is ``now + ttl`` capped by ``not_after`` (the chain's grants); raises
        :class:`IdentityError` if that is already past or an attenuation would exclude the action itself.
        """
        if ttl <= 0:
            raise IdentityError("token ttl must be positive")
        if not chain:
            raise IdentityError("a token needs a principal chain")
        now = self.clock()
        exp = now + timedelta(seconds=ttl)
        if not_after is not None:
            exp = min(exp, not_after)
        exp = _floor(exp)
        if exp <= now:
            raise IdentityError(f"the chain's authority ends at {exp.isoformat()}, before a token could be used")
        token_id = os.urandom(16).hex()
        src = Source()
        expiry = date_literal(exp)
        lines = [
            f'token("{token_id}", {src.text("session", session_id or "")}, {src.text("action", action_id or "")}, {expiry});',
            f"right({src.text('tool', tool)}, {src.text('connector', connector or '')}, "
            f'"{operation.value}", {src.text("resource", resource or "")});',
            f"check if time($t), $t <= {expiry};",
        ]
        for i, link in enumerate(chain):
            # the kind is a closed enum of lowercase words; the id is user data (inlined only if safe)
            lines.append(f'principal({i}, "{_KIND_LITERAL[link.kind]}", {src.text(f"p{i}", link.id)});')
        if bind_arguments:
            if arguments is None:
                raise IdentityError(f"the policy binds {tool}'s arguments into its token, but none were given")
            lines.append(f"check if arguments_digest({src.text('args', arguments_digest(arguments))});")
        biscuit = BiscuitBuilder("\n".join(lines), src.args()).build(self._root.private_key)
        scope = TokenScope(
            token_id=token_id,
            principal=tuple(f"{p.kind.value}:{p.id}" for p in chain),
            session_id=session_id,
            action_id=action_id,
            tool=tool,
            connector=connector,
            operation=operation,
            resource=resource,
            arguments_bound=bind_arguments,
            issued_at=now,
            expires_at=exp,
            grants=dict(grants or {}),
        )
        for att in attenuations:
            if not att.admits(scope):
                raise IdentityError(f"the narrowing {att.evidence()} excludes the action itself ({operation.value} {tool})")
            biscuit = biscuit.append(att.block())
            scope = att.narrowed(scope)
        ids = tuple(biscuit.revocation_ids)
        cap = Capability(token=biscuit.to_base64(), scope=scope, revocation_ids=ids, public_key=self.public_key, biscuit=biscuit)
        self.revocations.record([self._record_row(scope, rid, i) for i, rid in enumerate(ids)])
        if self.record is not None:
            self.record("identity.token.minted", cap.evidence())
        return cap

    @staticmethod
    def _record_row(scope: TokenScope, revocation_id: str, block: int) -> TokenRecord:
        return TokenRecord(
            revocation_id=revocation_id,
            token_id=scope.token_id,
            block=block,
            session_id=scope.session_id,
            action_id=scope.action_id,
            tool=scope.tool,
            operation=scope.operation.value,
            issued_at=scope.issued_at,
            expires_at=scope.expires_at,
        )

    def attenuate(self, capability: Capability, attenuation: Attenuation) -> Capability:
        """Attenuate and record the new block's revocation id (so it is revoked with its session)."""
        if not attenuation.admits(capability.scope):
            raise IdentityError(f"the narrowing {attenuation.evidence()} excludes the token's own action")
        out = attenuate(capability, attenuation, public_key=self.public_key)
        new = out.revocation_ids[len(capability.revocation_ids) :]
        first = len(capability.revocation_ids)
        self.revocations.record([self._record_row(out.scope, rid, first + i) for i, rid in enumerate(new)])
        if self.record is not None:
            self.record("identity.token.attenuated", out.evidence())
        return out

    def revoke_session(self, session_id: str, *, reason: str = "session ended") -> list[str]:
        """Revoke every token minted for a session (task end); returns their ids."""
        ids = self.revocations.revoke_session(session_id, reason=reason)
        if self.record is not None:
            self.record("identity.token.revoked", {"session_id": session_id, "token_ids": ids, "reason": reason})
        return ids

    def revoke(self, token_id: str, *, reason: str = "revoked") -> bool:
        """Revoke one token (and everything attenuated from it)."""
        n = self.revocations.revoke_token(token_id, reason=reason)
        if self.record is not None and n:
            self.record("identity.token.revoked", {"token_ids": [token_id], "reason": reason})
        return n > 0

    def verifier(self, **kwargs: Any) -> Any:
        """A :class:`~fiveplane.identity.CapabilityVerifier` for this root key and revocation store."""
        from ._verify import CapabilityVerifier

        kwargs.setdefault("clock", self.clock)
        return CapabilityVerifier(self.public_key, revocations=self.revocations, **kwargs)
