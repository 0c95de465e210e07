"""The identity plane: who acts, with which authority, carrying which capability.

For a ``tool_call`` it evaluates the composite principal: every link of the chain (human user →
agent → sub-agent → connector) must hold an unexpired grant for the action's class on its
connector / tool / resource, and a sub-agent must have been delegated the work in this session;
the first link that does not blocks the action with a finding naming it. Once the decision lets
the action proceed (allow / modify / narrow), :meth:`IdentityPlane.on_decision` mints a Biscuit
token scoped to exactly that action (chain, tool, connector, operation class, resource, argument
digest where the policy asks, short per-class expiry; sub-agents get one attenuation block per
hop, a ``narrow`` decision's ATTENUATE obligations add another). The token's id, scope and
expiry go into an ATTENUATE obligation (evidence); the bearer string waits in a
:class:`~fiveplane.identity.TokenVault` for the governed tool (:meth:`take_capability`).

For a ``delegation`` it checks that everything handed down is covered by every link of the
delegating chain (a delegation can only hand down a subset), and records the delegation in the
session. Ending the session revokes every token minted for it.

Configured under ``planes: {identity: {...}}`` (see :class:`IdentityConfig`). Fails closed:
no root key, an unreachable database, a conflicting grant or a minting error blocks.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from biscuit_auth import KeyPair
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Engine

from .._actions import Action, ActionClass, MediationPoint, Principal, PrincipalKind
from .._decisions import Decision, Obligation, ObligationKind, Severity, Verdict
from .._identity._authority import (
    ALL_KINDS,
    Authority,
    DelegatedRight,
    Delegation,
    Request,
    authorize,
    chain_key,
    check_delegation,
    describe_link,
    is_subagent,
)
from .._identity._db import Recorder, default_database_url, make_engine
from .._identity._grants import GrantIndex, GrantStore
from .._identity._keys import load_root_key
from .._identity._model import GrantSpec, IdentityError
from .._identity._oidc import OidcConfig, OidcMapper
from .._identity._revocation import RevocationStore, SqlRevocationStore
from .._identity._tokens import Attenuation, Capability, TokenService
from .._identity._vault import TokenVault
from .._identity._verify import AuthorizerLimits
from .._policy._load import Glob, Policy
from ._base import BasePlane, PlaneContext, PlaneResult

__all__ = ["IdentityConfig", "IdentityPlane", "TokenTTL", "oidc_mapper"]

PLANE = "identity"
_DELEGATIONS = "identity.delegations"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class TokenTTL(BaseModel):
    """Token lifetimes in seconds, per action class (short by design)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    read: int = Field(default=60, ge=1, le=3600)
    invoke: int = Field(default=30, ge=1, le=3600)
    modify: int = Field(default=30, ge=1, le=3600)

    def of(self, cls: ActionClass) -> int:
        return int(getattr(self, cls.value))


class IdentityConfig(BaseModel):
    """The ``planes: {identity: ...}`` section of a policy pack."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grants: tuple[GrantSpec, ...] = ()
    """The pack's grants; loaded into the grants store (source ``policy:<pack name>``)."""
    database: str | None = None
    """SQLAlchemy URL of the grants and revocations store; default ``$FIVEPLANE_DATABASE_URL`` or
    ``sqlite:///.fiveplane/fiveplane.db`` (the ledger's database). A Governor-level engine overrides it."""
    root_key_file: str | None = None
    """Path of the Ed25519 root key (PKCS#8 PEM, mode 600), relative to this pack's directory."""
    root_key_env: str | None = None
    """Or: the environment variable holding the root key."""
    tokens: bool = True
    """Mint a capability token for every proceeding tool call (off: grants only)."""
    ttl: TokenTTL = Field(default_factory=TokenTTL)
    delegation_ttl: int = Field(default=900, ge=1, le=86_400)
    """How long a delegation to a sub-agent holds (capped by the delegating chain's grants)."""
    bind_arguments: tuple[str, ...] = ()
    """Tool globs whose tokens bind the digest of the exact arguments."""
    resources: dict[str, str] = Field(default_factory=dict)
    """Tool glob → resource template over the arguments, e.g. ``contracts.*: "contracts/{contract_id}"``.
    First match wins; a tool without one acts on no particular resource."""
    links: tuple[PrincipalKind, ...] = tuple(PrincipalKind)
    """Which kinds of chain links must hold grants (default: every link)."""
    require_delegation: bool = True
    """A sub-agent may only act on work delegated to it (at a ``delegation`` step) in the session."""
    grants_refresh_seconds: float = Field(default=1.0, ge=0, le=300)
    """How stale this process's view of grants changed by other processes may be."""
    authorizer: AuthorizerLimits = Field(default_factory=AuthorizerLimits)
    """Limits for connector-side verification (reported in ``token_verifier``)."""
    oidc: OidcConfig | None = None
    """IAM mapping of OIDC/JWT identities to user principals and roles."""

    @field_validator("resources")
    @classmethod
    def _templates(cls, v: dict[str, str]) -> dict[str, str]:
        for glob, template in v.items():
            if not template or "{" in _PLACEHOLDER.sub("", template) or "}" in _PLACEHOLDER.sub("", template):
                raise ValueError(f"resource template {template!r} for {glob!r}: use {{argument}} placeholders only")
        return v

    @field_validator("links")
    @classmethod
    def _links(cls, v: tuple[PrincipalKind, ...]) -> tuple[PrincipalKind, ...]:
        if not v:
            raise ValueError("at least one kind of link must hold grants")
        return v

    @model_validator(mode="after")
    def _key(self) -> IdentityConfig:
        if self.root_key_file is not None and self.root_key_env is not None:
            raise ValueError("give root_key_file or root_key_env, not both")
        ids = [g.id for g in self.grants]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate grant id(s): {', '.join(dup)}")
        return self


def _base_dir(policy: Policy) -> Path:
    src = policy.plane_sources.get(PLANE)
    return src.path.parent if src is not None else (policy.files[-1].parent if policy.files else Path.cwd())


def oidc_mapper(policy: Policy) -> OidcMapper:
    """The :class:`~fiveplane.identity.OidcMapper` configured by the pack's ``planes.identity.oidc``."""
    config = IdentityConfig.model_validate(policy.planes.get(PLANE, {}))
    if config.oidc is None:
        raise IdentityError("the policy configures no planes.identity.oidc section")
    return OidcMapper(config.oidc, base_dir=_base_dir(policy))


@dataclass
class _State:
    config: IdentityConfig
    store: GrantStore
    engine: Engine
    base_dir: Path
    tokens: TokenService | None
    key_error: str | None
    resources: list[tuple[Glob, str]]
    bind: Glob
    kinds: frozenset[PrincipalKind]

    def resource_for(self, tool: str | None, arguments: Mapping[str, Any]) -> str | None:
        if tool is None:
            return None
        for glob, template in self.resources:
            if glob.matches(tool):
                return _render(template, tool, arguments)
        return None


def _render(template: str, tool: str, arguments: Mapping[str, Any]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in arguments:
            raise IdentityError(f"the resource of {tool} needs argument {name!r}")
        value = arguments[name]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise IdentityError(f"argument {name!r} of {tool} names a resource, so it must be a string or an integer")
        return str(value)

    out = _PLACEHOLDER.sub(one, template)
    if len(out) > 1024:
        raise IdentityError(f"the resource of {tool} is longer than 1024 characters")
    return out


class IdentityPlane(BasePlane):
    """Grants, composite principals, delegation and per-action capability tokens.

    Every argument is optional; what is not given comes from the pack's ``planes.identity`` section.

    Args:
        database: SQLAlchemy engine or URL for grants and revocations (overrides the pack's ``database``).
        grants: a ready :class:`~fiveplane.identity.GrantStore` (overrides ``database`` for grants).
        root_key: the root key pair (overrides ``root_key_file`` / ``root_key_env``).
        revocations: where revocation ids go (default: the SQL store on the same database).
        record: ``record(kind, payload)`` for grant changes, minted and revoked tokens (the ledger).
        vault: where bearer tokens wait for their governed tool (default: a new in-process vault).
        sync_policy_grants: load the pack's grants into the store on first use (default on).
    """

    name = PLANE
    config_model = IdentityConfig

    def __init__(
        self,
        *,
        database: Engine | str | None = None,
        grants: GrantStore | None = None,
        root_key: KeyPair | None = None,
        revocations: RevocationStore | None = None,
        record: Recorder | None = None,
        vault: TokenVault | None = None,
        sync_policy_grants: bool = True,
    ) -> None:
        self._database = database
        self._grants = grants
        self._root_key = root_key
        self._revocations = revocations
        self.record = record
        self.vault = vault or TokenVault()
        self.sync_policy_grants = sync_policy_grants
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()
        self._judged = _JudgedCalls()

    # ---- set-up ----------------------------------------------------------------------------

    def _state(self, ctx: PlaneContext) -> _State:
        key = ctx.policy.hash
        state = self._states.get(key)
        if state is not None:
            return state
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = self._build(ctx.policy, ctx.config)
                self._states[key] = state
        return state

    def _build(self, policy: Policy, raw: BaseModel | None) -> _State:
        config = raw if isinstance(raw, IdentityConfig) else IdentityConfig.model_validate(raw.model_dump() if raw else {})
        if self._grants is not None:
            engine = self._grants.engine
        else:
            engine = make_engine(self._database or config.database or default_database_url())
        store = self._grants or GrantStore(engine, record=self.record, refresh_seconds=config.grants_refresh_seconds)
        if self.sync_policy_grants:
            store.sync(config.grants, source=f"policy:{policy.name}", by=f"policy {policy.name}@{policy.version}")
        state = _State(
            config=config,
            store=store,
            engine=engine,
            base_dir=_base_dir(policy),
            tokens=None,
            key_error=None,
            resources=[(Glob([g]), t) for g, t in config.resources.items()],
            bind=Glob(config.bind_arguments),
            kinds=frozenset(config.links) if config.links else ALL_KINDS,
        )
        self._ensure_tokens(state)
        return state

    def _ensure_tokens(self, state: _State) -> TokenService | None:
        """Set up the token service; a missing key is retried on the next action (fixing it needs no restart)."""
        config = state.config
        if state.tokens is not None or not config.tokens:
            return state.tokens
        try:
            root = self._root_key
            if root is None:
                key_file = config.root_key_file
                if key_file is not None:
                    key_file = str(state.base_dir / Path(key_file).expanduser())
                root = load_root_key(file=key_file, env=config.root_key_env)
        except IdentityError as exc:
            state.key_error = str(exc)
            return None
        revocations = self._revocations or SqlRevocationStore(state.engine)
        state.tokens = TokenService(root, revocations=revocations, record=self.record)
        state.key_error = None
        return state.tokens

    def token_service(self, ctx: PlaneContext) -> TokenService:
        """The token service of the policy in ``ctx`` (raises if no root key is configured)."""
        state = self._state(ctx)
        if state.tokens is None:
            raise IdentityError(state.key_error or "capability tokens are disabled (planes.identity.tokens: false)")
        return state.tokens

    def grant_store(self, ctx: PlaneContext) -> GrantStore:
        return self._state(ctx).store

    # ---- judging ---------------------------------------------------------------------------

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        result = PlaneResult(plane=PLANE)
        if action.point not in (MediationPoint.TOOL_CALL, MediationPoint.DELEGATION):
            return result
        try:
            state = self._state(ctx)
        except Exception as exc:  # noqa: BLE001 - no grants store, no authority
            result.add(
                "identity_unavailable",
                f"identity plane unavailable ({type(exc).__name__}: {exc}); failing closed",
                verdict=Verdict.BLOCK,
                severity=Severity.ERROR,
                rule_id="identity.unavailable",
            )
            return result
        try:
            if action.point is MediationPoint.TOOL_CALL:
                self._judge_call(action, ctx, state, result)
            else:
                self._judge_delegation(action, ctx, state, result)
        except IdentityError as exc:
            result.add("identity_error", str(exc), verdict=Verdict.BLOCK, severity=Severity.HIGH, rule_id="identity.error")
        return result

    async def aevaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        return await asyncio.to_thread(self.evaluate, action, ctx)

    def _authority(
        self, action: Action, ctx: PlaneContext, state: _State, arguments: Mapping[str, Any], index: GrantIndex | None = None
    ) -> _Judged:
        if action.action_class is None:
            raise IdentityError(f"{action.tool} has no action class (not in the policy's catalog), so no grant can cover it")
        resource = state.resource_for(action.tool, arguments)
        req = Request(
            chain=action.principal,
            action_class=action.action_class,
            tool=action.tool,
            connector=action.connector,
            resource=resource,
            variables=_variables(action, arguments, resource, ctx.now),
        )
        index = state.store.index() if index is None else index
        book = ctx.session_value(_DELEGATIONS)
        auth = authorize(
            index,
            req,
            ctx.now,
            kinds=state.kinds,
            delegations=_delegations_of(book),
            require_delegation=state.config.require_delegation,
        )
        return _Judged(action, ctx, index, book, auth, resource)

    def _judge_call(self, action: Action, ctx: PlaneContext, state: _State, result: PlaneResult) -> None:
        if state.config.tokens and self._ensure_tokens(state) is None:
            result.add(
                "no_root_key",
                f"capability tokens cannot be minted: {state.key_error}; failing closed",
                verdict=Verdict.BLOCK,
                severity=Severity.ERROR,
                rule_id="identity.no_root_key",
            )
            return
        judged = self._authority(action, ctx, state, action.arguments)
        auth, resource = judged.auth, judged.resource
        if auth.allowed:
            self._judged.put(action.action_id, judged)
        if not auth.checked:
            result.add(
                "no_principal",
                "no link of the principal chain is of a kind that holds grants",
                verdict=Verdict.BLOCK,
                severity=Severity.HIGH,
                rule_id="identity.no_principal",
            )
            return
        for d in auth.denials:
            result.add(d.code, d.message, verdict=Verdict.BLOCK, severity=Severity.HIGH, rule_id=f"identity.{d.code}")
        if auth.allowed:
            parts = [
                f"{describe_link(a.link)} by {', '.join(a.grants)}" + (f" (delegation {a.delegation})" if a.delegation else "")
                for a in auth.links
            ]
            where = f" on {resource!r}" if resource else ""
            result.add(
                "authorized",
                f"{action.action_class.value if action.action_class else '?'}{where} authorized for {'; '.join(parts)}",
            )

    def _requested_rights(self, action: Action, ctx: PlaneContext) -> tuple[str, list[DelegatedRight], bool]:
        args = action.arguments
        to_agent = args.get("to_agent")
        if not isinstance(to_agent, str) or not to_agent:
            raise IdentityError("a delegation must name the sub-agent in arguments.to_agent")
        explicit = any(k in args for k in ("tools", "connectors", "classes", "resources"))

        def names(key: str) -> tuple[str, ...] | None:
            value = args.get(key)
            if value is None:
                return None
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
                raise IdentityError(f"delegation arguments.{key} must be a list of names")
            return tuple(value)

        tool_globs = names("tools")
        if tool_globs is None:
            spec = ctx.policy.agents.get(to_agent)
            tool_globs = spec.tools if spec is not None and spec.tools else ("*",)
        connectors = names("connectors")
        classes_raw = names("classes")
        try:
            classes = {ActionClass(c) for c in classes_raw} if classes_raw is not None else set(ActionClass)
        except ValueError:
            raise IdentityError(f"delegation arguments.classes must be read, invoke or modify, not {classes_raw}") from None
        resources = names("resources") or ("*",)
        tg, cg = Glob(tool_globs), Glob(connectors or ())
        rights = [
            DelegatedRight(t.name, t.connector, t.action_class, resources)
            for t in ctx.policy.tools.values()
            if tg.matches(t.name) and (connectors is None or cg.matches(t.connector or "")) and t.action_class in classes
        ]
        if not rights:
            raise IdentityError(f"the delegation to {to_agent!r} names no catalogued tool")
        return to_agent, sorted(rights, key=lambda r: (r.tool, r.action_class.value)), explicit

    def _delegation_plan(
        self, action: Action, ctx: PlaneContext, state: _State
    ) -> tuple[str, list[DelegatedRight], list[tuple[DelegatedRight, Any]], datetime | None, bool]:
        to_agent, rights, explicit = self._requested_rights(action, ctx)
        covered, uncovered, cap = check_delegation(
            state.store.index(),
            action.principal,
            rights,
            ctx.now,
            kinds=state.kinds,
            delegations=_delegations(ctx),
            require_delegation=state.config.require_delegation,
        )
        return to_agent, covered, uncovered, cap, explicit

    def _judge_delegation(self, action: Action, ctx: PlaneContext, state: _State, result: PlaneResult) -> None:
        to_agent, covered, uncovered, _cap, explicit = self._delegation_plan(action, ctx, state)
        if uncovered and (explicit or not covered):
            for _right, denial in uncovered[:5]:
                result.add(
                    "delegation_widens",
                    f"the delegation to {to_agent!r} would hand down more than the chain holds: {denial.message}",
                    verdict=Verdict.BLOCK,
                    severity=Severity.HIGH,
                    rule_id="identity.delegation_widens",
                )
            if len(uncovered) > 5:
                result.add(
                    "delegation_widens",
                    f"... and {len(uncovered) - 5} more rights the chain does not hold",
                    severity=Severity.HIGH,
                )
            return
        if uncovered:
            dropped = ", ".join(f"{r.action_class.value} {r.tool}" for r, _ in uncovered[:5])
            result.add(
                "delegation_narrowed",
                f"the delegation to {to_agent!r} is narrowed to what the chain holds (dropped: {dropped}{', ...' if len(uncovered) > 5 else ''})",
                verdict=Verdict.NARROW,
                severity=Severity.WARNING,
                rule_id="identity.delegation_narrowed",
            )
        result.add(
            "delegation_authorized",
            f"{to_agent!r} may receive {len(covered)} right(s): "
            + ", ".join(f"{r.action_class.value} {r.tool}" for r in covered[:8]),
        )

    # ---- after the decision ------------------------------------------------------------------

    def on_decision(self, action: Action, decision: Decision, ctx: PlaneContext) -> list[Obligation]:
        judged = self._judged.pop(action.action_id) if action.point is MediationPoint.TOOL_CALL else None
        if not decision.verdict.proceeds or action.point not in (MediationPoint.TOOL_CALL, MediationPoint.DELEGATION):
            return []
        state = self._state(ctx)
        if action.point is MediationPoint.DELEGATION:
            return [self._record_delegation(action, ctx, state)]
        if not state.config.tokens:
            return []
        cap = self._mint(action, decision, ctx, state, judged)
        self.vault.put(action.action_id, cap)
        return [
            Obligation(
                kind=ObligationKind.ATTENUATE, plane=PLANE, params={"capability": cap.evidence()}, rule_id="identity.capability"
            )
        ]

    async def aon_decision(self, action: Action, decision: Decision, ctx: PlaneContext) -> list[Obligation]:
        return await asyncio.to_thread(self.on_decision, action, decision, ctx)

    def _mint(
        self, action: Action, decision: Decision, ctx: PlaneContext, state: _State, judged: _Judged | None = None
    ) -> Capability:
        if state.tokens is None:
            raise IdentityError(state.key_error or "no token service")
        arguments = decision.modified_arguments if decision.modified_arguments is not None else action.arguments
        # Re-check against the arguments the tool will receive and the grants as they are now, unless
        # this decision's evaluation already judged exactly that (same inputs: the same answer).
        index = state.store.index()
        if judged is None or not judged.holds(action, ctx, index, decision.modified_arguments is None):
            judged = self._authority(action, ctx, state, arguments, index)
        auth, resource = judged.auth, judged.resource
        if not auth.allowed:
            first = auth.denials[0].message if auth.denials else "no link holds grants"
            raise IdentityError(f"authority changed before the token was minted: {first}")
        assert action.tool is not None and action.action_class is not None
        chain = action.principal
        root_caps = [a.expires_at for a in auth.links if a.expires_at is not None and not is_subagent(chain, a.index)]
        attenuations: list[Attenuation] = []
        for a in auth.links:
            if is_subagent(chain, a.index):
                attenuations.append(
                    Attenuation(
                        expires_at=a.expires_at,
                        operations=(action.action_class,),
                        tools=(action.tool,),
                        resources=(resource or "",),
                        agent=a.link.id,
                    )
                )
        attenuations.extend(_narrowing(decision, ctx.now))
        return state.tokens.mint(
            chain=chain,
            tool=action.tool,
            connector=action.connector,
            operation=action.action_class,
            resource=resource,
            session_id=action.session_id,
            action_id=action.action_id,
            arguments=arguments,
            bind_arguments=state.bind.matches(action.tool),
            ttl=state.config.ttl.of(action.action_class),
            not_after=min(root_caps) if root_caps else None,
            attenuations=attenuations,
            grants=auth.grants_by_link(),
        )

    def _record_delegation(self, action: Action, ctx: PlaneContext, state: _State) -> Obligation:
        to_agent, covered, _uncovered, cap, _explicit = self._delegation_plan(action, ctx, state)
        if not covered:
            raise IdentityError(f"nothing the chain holds can be delegated to {to_agent!r}")
        exp = ctx.now + timedelta(seconds=state.config.delegation_ttl)
        ttl_arg = action.arguments.get("ttl")
        if isinstance(ttl_arg, int) and not isinstance(ttl_arg, bool) and ttl_arg > 0:
            exp = min(exp, ctx.now + timedelta(seconds=ttl_arg))
        if cap is not None:
            exp = min(exp, cap)
        delegation = Delegation(
            id=action.action_id,
            chain=chain_key(action.principal),
            to_agent=to_agent,
            rights=tuple(covered),
            expires_at=exp,
        )
        ctx.stage(_DELEGATIONS, [*(ctx.session_value(_DELEGATIONS) or []), delegation.to_json()])
        if self.record is not None:
            self.record("identity.delegation", {**delegation.to_json(), "session_id": action.session_id})
        return Obligation(
            kind=ObligationKind.ATTENUATE, plane=PLANE, params={"delegation": delegation.to_json()}, rule_id="identity.delegation"
        )

    # ---- hand-off and session end ----------------------------------------------------------

    def take_capability(self, action_id: str) -> Capability | None:
        """The token minted for ``action_id`` (once), for the governed tool that asked for it."""
        return self.vault.take(action_id)

    def on_abort(self, action_id: str) -> None:
        """The action will not run after all (a later plane or the evidence sink failed): revoke its token."""
        self.discard(action_id)

    def discard(self, action_id: str) -> None:
        """Forget and revoke the token of an action that will not run."""
        cap = self.vault.discard(action_id)
        if cap is not None:
            for state in list(self._states.values()):
                if state.tokens is not None:
                    state.tokens.revoke(cap.id, reason="action did not run")

    def on_session_end(self, session_id: str) -> list[str]:
        """Revoke every token minted for the session (task end), by any process; returns their ids."""
        self.vault.discard_session(session_id)
        stores: dict[int, RevocationStore] = {}
        for state in list(self._states.values()):
            store = (
                state.tokens.revocations if state.tokens is not None else (self._revocations or SqlRevocationStore(state.engine))
            )
            stores.setdefault(id(store), store)
        if not stores:  # nothing decided here yet: tokens may still come from other processes
            store = self._revocations or SqlRevocationStore(
                self._grants.engine if self._grants is not None else make_engine(self._database or default_database_url())
            )
            stores[id(store)] = store
        revoked: set[str] = set()
        for store in stores.values():
            revoked.update(store.revoke_session(session_id, reason="session ended"))
        if self.record is not None:
            self.record(
                "identity.token.revoked", {"session_id": session_id, "token_ids": sorted(revoked), "reason": "session ended"}
            )
        return sorted(revoked)

    async def aon_session_end(self, session_id: str) -> list[str]:
        return await asyncio.to_thread(self.on_session_end, session_id)


def _delegations(ctx: PlaneContext) -> list[Delegation]:
    return _delegations_of(ctx.session_value(_DELEGATIONS))


def _delegations_of(book: Any) -> list[Delegation]:
    return [Delegation.from_json(d) for d in book] if isinstance(book, list) else []


@dataclass(frozen=True)
class _Judged:
    """A tool call's authority as evaluated, with everything the answer depends on."""

    action: Action
    ctx: PlaneContext
    index: GrantIndex
    """The grants it was evaluated against (a new index object whenever grants change)."""
    book: Any
    """The session's delegations as read (the very object: any change stages a new one)."""
    auth: Authority
    resource: str | None

    def holds(self, action: Action, ctx: PlaneContext, index: GrantIndex, same_arguments: bool) -> bool:
        """Would evaluating again give this answer? Same action, decision context (so the same
        time, pack and session), arguments, grants and delegations: authorization is a pure function
        of those (grant conditions are CEL over them)."""
        return (
            same_arguments
            and self.action is action
            and self.ctx is ctx
            and self.index is index
            and self.book is ctx.session_value(_DELEGATIONS)
        )


class _JudgedCalls:
    """Evaluations waiting for their decision's ``on_decision`` (bounded: one that never comes is dropped)."""

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, _Judged] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, action_id: str, judged: _Judged) -> None:
        with self._lock:
            self._items[action_id] = judged
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def pop(self, action_id: str) -> _Judged | None:
        with self._lock:
            return self._items.pop(action_id, None)


def _narrowing(decision: Decision, now: datetime) -> list[Attenuation]:
    """ATTENUATE obligations of other planes / rules as token blocks (a ``narrow`` decision)."""
    out: list[Attenuation] = []
    for ob in decision.obligations:
        if ob.kind is not ObligationKind.ATTENUATE or ob.plane == PLANE:
            continue
        p = dict(ob.params)
        unknown = set(p) - {"ttl", "operations", "read_only", "tools", "resources", "resource_prefixes"}
        if unknown:
            raise IdentityError(f"attenuate obligation of {ob.rule_id or ob.plane} has unknown params {sorted(unknown)}")
        ops: tuple[ActionClass, ...] | None = None
        if p.get("read_only"):
            ops = (ActionClass.READ,)
        if "operations" in p:
            ops = tuple(ActionClass(o) for o in p["operations"])
        ttl = p.get("ttl")
        out.append(
            Attenuation(
                expires_at=now + timedelta(seconds=float(ttl)) if ttl is not None else None,
                operations=ops,
                tools=tuple(p["tools"]) if "tools" in p else None,
                resources=tuple(p["resources"]) if "resources" in p else None,
                resource_prefixes=tuple(p["resource_prefixes"]) if "resource_prefixes" in p else None,
            )
        )
    return out


def _variables(
    action: Action, arguments: Mapping[str, Any], resource: str | None, now: datetime
) -> Callable[[int], Callable[[str], Any]]:
    """CEL variables for grant conditions, resolved lazily per link."""

    def link_json(p: Principal) -> dict[str, Any]:
        return {"kind": p.kind.value, "id": p.id, "roles": list(p.roles), "claims": dict(p.claims)}

    def for_link(index: int) -> Callable[[str], Any]:
        def resolve(name: str) -> Any:
            if name == "args":
                return dict(arguments)
            if name == "tool":
                return {
                    "name": action.tool or "",
                    "connector": action.connector or "",
                    "class": action.action_class.value if action.action_class else "",
                }
            if name == "link":
                return link_json(action.principal[index])
            if name == "user":
                return link_json(action.user) if action.user else {}
            if name == "agent":
                return link_json(action.agent) if action.agent else {}
            if name == "principal":
                return [link_json(p) for p in action.principal]
            if name == "resource":
                return resource or ""
            if name == "now":
                return now
            if name == "action":
                return {
                    "point": action.point.value,
                    "session_id": action.session_id,
                    "purpose": action.purpose or "",
                    "intent": action.intent or "",
                }
            raise KeyError(name)

        return resolve

    return for_link
