"""Connector-side verification: is this token good for the operation I am about to perform?

A connector or tool calls :meth:`CapabilityVerifier.verify` (or the :func:`verify_capability` shortcut) with
the token it was handed and what it is about to do: tool, operation (read / invoke / modify),
resource and, when the policy binds them, the arguments. Verification needs only the root
*public* key and, for revocation, the revocation store (the shared database). It fails closed:
a bad signature (tampered, truncated, another issuer), an expired or revoked token, a token that
was never recorded, a different tool / operation / resource / arguments, and Datalog limit
errors all raise :class:`CapabilityDenied` with a code and a readable reason.

The authorizer runs with explicit limits (default 20 ms, 1000 facts, 100 iterations): Biscuit's
default 1 ms time limit fails spuriously on a loaded machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from biscuit_auth import AuthorizationError, AuthorizerBuilder, Biscuit, PublicKey, Rule
from pydantic import BaseModel, ConfigDict, Field

from .._actions import ActionClass
from ._datalog import Source, date_literal
from ._keys import load_public_key
from ._revocation import RevocationStore
from ._tokens import Capability, arguments_digest

__all__ = ["AuthorizerLimits", "CapabilityDenied", "CapabilityVerifier", "VerifiedCapability", "verify_capability"]

_OPERATIONS = frozenset(c.value for c in ActionClass)


class AuthorizerLimits(BaseModel):
    """Explicit Biscuit authorizer limits; reaching one denies (fail closed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_time_ms: float = Field(default=20.0, gt=0, le=1000)
    max_facts: int = Field(default=1000, ge=10, le=100_000)
    max_iterations: int = Field(default=100, ge=1, le=10_000)


class CapabilityDenied(Exception):
    """The token does not authorize the operation. ``code`` says why, ``reason`` in words."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")


@dataclass(frozen=True)
class VerifiedCapability:
    """What a verified token says (from its signed authority block only)."""

    token_id: str
    principal: tuple[str, ...]
    session_id: str | None
    action_id: str | None
    tool: str
    operation: ActionClass
    resource: str | None
    expires_at: datetime
    blocks: int
    revocation_ids: tuple[str, ...]


_CAPABILITY = Rule("capability($id, $s, $a, $e, $i, $k, $p) <- token($id, $s, $a, $e), principal($i, $k, $p)")
"""The authority block's token and chain facts in one query (facts of later blocks are not trusted)."""


class CapabilityVerifier:
    """Verifies capability tokens for one root public key.

    Args:
        public_key: the root public key (``ed25519/<hex>``, a file holding it, raw bytes or a PublicKey).
        revocations: the revocation store (the shared database). Pass ``None`` explicitly only where
            the database is unreachable: revocation is then not checked (short TTLs bound the risk).
        require_known: also deny tokens whose revocation ids were never recorded (needs ``revocations``).
        limits: authorizer limits.
        clock: the current time (UTC) used for expiry checks.
    """

    def __init__(
        self,
        public_key: PublicKey | str | bytes | Path,
        *,
        revocations: RevocationStore | None,
        require_known: bool = True,
        limits: AuthorizerLimits | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.public_key = load_public_key(public_key)
        self.revocations = revocations
        self.require_known = require_known and revocations is not None
        self.limits = limits or AuthorizerLimits()
        self.clock = clock
        lim = AuthorizerBuilder().limits()  # type: ignore[attr-defined]
        lim.max_time = timedelta(milliseconds=self.limits.max_time_ms)
        lim.max_facts = self.limits.max_facts
        lim.max_iterations = self.limits.max_iterations
        self._limits = lim

    def verify(
        self,
        token: str | Capability,
        *,
        tool: str,
        operation: str | ActionClass,
        resource: str | None = None,
        arguments: Mapping[str, Any] | None = None,
        connector: str | None = None,
    ) -> VerifiedCapability:
        """Verify ``token`` for one operation; raises :class:`CapabilityDenied` unless it is authorized."""
        op = operation.value if isinstance(operation, ActionClass) else str(operation)
        if op not in _OPERATIONS:
            raise CapabilityDenied("bad_request", f"unknown operation {op!r} (read, invoke or modify)")
        raw = token.token if isinstance(token, Capability) else token
        if not isinstance(raw, str) or not raw:
            raise CapabilityDenied("invalid", "no token was presented")
        try:
            biscuit = Biscuit.from_base64(raw, self.public_key)
        except Exception:  # noqa: BLE001 - any parse/signature failure is the same denial
            raise CapabilityDenied(
                "invalid", "the token does not verify against the root key (tampered, truncated or from another issuer)"
            ) from None
        src = Source()
        t, r = src.text("tool", tool), src.text("res", resource or "")
        lines = [
            f"tool({t});",
            f'operation("{op}");',
            f"resource({r});",
            f"time({date_literal(self.clock())});",
        ]
        if connector is not None:
            c = src.text("conn", connector)
            lines.append(f"connector({c});")
            lines.append(f'allow if right({t}, {c}, "{op}", {r});')
        else:
            lines.append(f'allow if right({t}, $c, "{op}", {r});')
        if arguments is not None:
            lines.append(f"arguments_digest({src.text('d', arguments_digest(arguments))});")
        try:
            builder = AuthorizerBuilder("\n".join(lines), src.args())
            builder.set_limits(self._limits)  # type: ignore[attr-defined]
            authorizer = builder.build(biscuit)
            authorizer.authorize()
            rows = authorizer.query(_CAPABILITY)
        except AuthorizationError as exc:
            raise _denied(str(exc), tool, op, resource, arguments is not None) from None
        except Exception as exc:  # noqa: BLE001 - any other authorizer failure denies
            raise CapabilityDenied("error", f"the token could not be authorized ({type(exc).__name__}: {exc})") from None
        ids = tuple(biscuit.revocation_ids)
        if self.revocations is not None:
            try:
                status = self.revocations.status(ids)
            except Exception as exc:  # noqa: BLE001 - no revocation answer, no access
                raise CapabilityDenied("error", f"the revocation list is unavailable ({type(exc).__name__})") from None
            if status.revoked:
                raise CapabilityDenied("revoked", "the token has been revoked (its session or task ended, or it was revoked)")
            if self.require_known and ids[0] not in status.known:
                raise CapabilityDenied("unknown", "the token was never recorded by this deployment's issuer")
        terms = [f.terms for f in rows]
        if not terms or len({tuple(x[:4]) for x in terms}) != 1:
            raise CapabilityDenied("invalid", "the token's authority block is not a fiveplane capability")
        token_id, session, action, expires = terms[0][:4]
        links = sorted((int(x[4]), f"{x[5]}:{x[6]}") for x in terms)
        return VerifiedCapability(
            token_id=str(token_id),
            principal=tuple(x for _, x in links),
            session_id=str(session) or None,
            action_id=str(action) or None,
            tool=tool,
            operation=ActionClass(op),
            resource=resource,
            expires_at=expires,
            blocks=biscuit.block_count(),
            revocation_ids=ids,
        )

    async def averify(
        self,
        token: str | Capability,
        *,
        tool: str,
        operation: str | ActionClass,
        resource: str | None = None,
        arguments: Mapping[str, Any] | None = None,
        connector: str | None = None,
    ) -> VerifiedCapability:
        """Async twin of :meth:`verify` (runs in a worker thread: it may query the database)."""
        return await asyncio.to_thread(
            self.verify, token, tool=tool, operation=operation, resource=resource, arguments=arguments, connector=connector
        )

    def allows(self, token: str | Capability, **request: Any) -> bool:
        """``True`` if :meth:`verify` succeeds for ``request``."""
        try:
            self.verify(token, **request)
        except CapabilityDenied:
            return False
        return True


def _denied(message: str, tool: str, op: str, resource: str | None, have_args: bool) -> CapabilityDenied:
    if "limits" in message.lower():
        return CapabilityDenied("limits", "the authorizer reached its execution limits (denied, fail closed)")
    if "check if time(" in message:
        return CapabilityDenied("expired", "the token has expired")
    if "arguments_digest" in message:
        why = (
            "arguments differ from those the token was minted for"
            if have_args
            else "the token is bound to arguments, but none were given"
        )
        return CapabilityDenied("arguments", why)
    if "Check n" in message and "block n°0" not in message:
        return CapabilityDenied("attenuated", f"a narrowing block of the token forbids {op} on {tool}: {message}")
    shown = f"resource {resource!r}" if resource else "no resource"
    return CapabilityDenied("denied", f"the token does not grant {op} on {tool} ({shown})")


def verify_capability(
    token: str | Capability,
    *,
    public_key: PublicKey | str | bytes | Path,
    tool: str,
    operation: str | ActionClass,
    resource: str | None = None,
    arguments: Mapping[str, Any] | None = None,
    connector: str | None = None,
    revocations: RevocationStore | None,
    limits: AuthorizerLimits | None = None,
) -> VerifiedCapability:
    """One-shot :meth:`CapabilityVerifier.verify` (build a verifier once for repeated use)."""
    return CapabilityVerifier(public_key, revocations=revocations, limits=limits).verify(
        token, tool=tool, operation=operation, resource=resource, arguments=arguments, connector=connector
    )
