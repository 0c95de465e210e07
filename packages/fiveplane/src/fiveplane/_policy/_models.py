"""Pydantic models of a policy pack (YAML). Unknown keys are rejected everywhere."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._actions import ActionClass, MediationPoint
from .._decisions import Mode, ObligationKind, Verdict

__all__ = [
    "AfterSpec",
    "AgentSpec",
    "ApprovalSpec",
    "ApprovalsSpec",
    "ConnectorSpec",
    "Defaults",
    "FlowRuleSpec",
    "FlowSpec",
    "ListSpec",
    "ListSqlSpec",
    "Match",
    "NotifySpec",
    "ObligationSpec",
    "PackSpec",
    "RuleSpec",
    "SlackNotifySpec",
    "ToolSpec",
    "WebhookNotifySpec",
]

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]*$")
_GLOB = re.compile(r"^[A-Za-z0-9_*?\[\]!][A-Za-z0-9_.:/*?\[\]!-]*$")


_NOT_OVERRIDABLE = ("reasoning", "engine", "approvals", "approval", "sessions", "evidence", "defaults", "purpose")
"""Where findings come from that no rule may override (the engine's own; plane errors neither)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_names(values: tuple[str, ...], what: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    for v in values:
        if not pattern.match(v):
            raise ValueError(f"invalid {what} {v!r}")
    return values


def _check_paths(values: tuple[str, ...]) -> tuple[str, ...]:
    from .._flow import JsonPath

    for v in values:
        JsonPath(v)  # raises ValueError naming what it cannot read
    return values


class ConnectorSpec(_Strict):
    name: str
    description: str = ""
    trusted: bool = True
    """Content from an untrusted connector (web, email, CRM notes) taints the session."""
    labels: tuple[str, ...] = ()
    """Classification labels carried by everything read from this connector."""
    trusted_fields: tuple[str, ...] = ()
    """JSON paths of result fields that are trusted although the connector is not (``$[*].iban``)."""
    untrusted_fields: tuple[str, ...] = ()
    """JSON paths of result fields that are untrusted although the connector is trusted (``$[*].note``)."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        _check_names((v,), "connector name", _NAME)
        return v

    @field_validator("trusted_fields", "untrusted_fields")
    @classmethod
    def _paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_paths(v)

    @model_validator(mode="after")
    def _trust(self) -> ConnectorSpec:
        if self.trusted and self.trusted_fields:
            raise ValueError("`trusted_fields` applies to an untrusted connector (`trusted: false`); use `untrusted_fields`")
        if not self.trusted and self.untrusted_fields:
            raise ValueError("`untrusted_fields` applies to a trusted connector; use `trusted_fields`")
        return self


class ToolSpec(_Strict):
    name: str
    connector: str | None = None
    action_class: ActionClass = Field(alias="class")
    description: str = ""
    arguments: dict[str, Any] | None = None
    """A JSON-Schema-like object schema of the tool's arguments (checked before the tool runs)."""
    trusted_output: bool | None = None
    """Whether results are trusted; defaults to the connector's ``trusted``."""
    trusted_fields: tuple[str, ...] = ()
    """JSON paths of result fields that are trusted although the output is not (``$.recipient``,
    ``$.transactions[*].iban``); replaces the connector's."""
    untrusted_fields: tuple[str, ...] = ()
    """JSON paths of result fields that are untrusted although the output is trusted; replaces the connector's."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        _check_names((v,), "tool name", _NAME)
        return v

    @field_validator("trusted_fields", "untrusted_fields")
    @classmethod
    def _paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_paths(v)

    @model_validator(mode="after")
    def _trust(self) -> ToolSpec:
        if self.trusted_fields and self.untrusted_fields:
            raise ValueError("a tool names either `trusted_fields` (its output is untrusted) or `untrusted_fields`, not both")
        if self.trusted_output is True and self.trusted_fields:
            raise ValueError("`trusted_fields` applies to untrusted output (`trusted_output: false`); use `untrusted_fields`")
        if self.trusted_output is False and self.untrusted_fields:
            raise ValueError("`untrusted_fields` applies to trusted output; use `trusted_fields`")
        return self


class AgentSpec(_Strict):
    name: str
    purpose: str = Field(min_length=1)
    """The agent's declared purpose, in words."""
    purposes: tuple[str, ...] = ()
    """Purpose categories a run of this agent may declare; empty: any."""
    tools: tuple[str, ...] = ()
    """Tool globs that serve the purpose; a tool outside them is blocked."""
    delegates_to: tuple[str, ...] = ()
    """Agents this agent may hand work to."""

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_names(v, "tool glob", _GLOB)


class AfterSpec(_Strict):
    """A sequence condition: an earlier step of the session that must have happened."""

    points: tuple[MediationPoint, ...] = (MediationPoint.TOOL_CALL,)
    tools: tuple[str, ...] = ()
    connectors: tuple[str, ...] = ()
    classes: tuple[ActionClass, ...] = ()
    within: int | None = Field(default=None, ge=1)
    """Only the last ``within`` steps of the session count."""
    labels: tuple[str, ...] = ()
    """Alternatively: the session carries one of these labels."""

    @model_validator(mode="after")
    def _something(self) -> AfterSpec:
        if not (self.tools or self.connectors or self.classes or self.labels):
            raise ValueError("`after` needs at least one of tools, connectors, classes, labels")
        return self


class Match(_Strict):
    points: tuple[MediationPoint, ...] = (MediationPoint.TOOL_CALL,)
    tools: tuple[str, ...] = ()
    """Tool globs; empty: any tool (or none, for points without a tool)."""
    connectors: tuple[str, ...] = ()
    classes: tuple[ActionClass, ...] = ()
    roles: tuple[str, ...] = ()
    """The human user must hold one of these roles."""
    agents: tuple[str, ...] = ()
    """The acting agent must be one of these (globs)."""
    after: AfterSpec | None = None

    @field_validator("tools", "connectors", "agents")
    @classmethod
    def _globs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_names(v, "glob", _GLOB)


class ApprovalSpec(_Strict):
    role: str = Field(min_length=1)
    """The role an approver must hold."""
    separation_of_duties: bool = True
    """The approver must not be the requester."""
    expires_in: int = Field(default=3600, ge=1)
    """Seconds a pending request stays valid."""


class ObligationSpec(_Strict):
    kind: ObligationKind
    plane: str = "reasoning"
    params: dict[str, Any] = Field(default_factory=dict)


class RuleSpec(_Strict):
    id: str
    description: str = ""
    reason: str | None = None
    """The human sentence this rule contributes to the explanation."""
    match: Match = Field(default_factory=Match)
    when: str | None = None
    """A CEL condition over ``action``, ``args``, ``tool``, ``user``, ``agent``, ``session``, ``content``, ``now``."""
    verdict: Verdict
    approval: ApprovalSpec | None = None
    obligations: tuple[ObligationSpec, ...] = ()
    mode: Mode | None = None
    """Overrides the pack's mode for this rule."""
    override: tuple[str, ...] = ()
    """Plane findings this rule overrides when it matches (``network.unlisted``, ``data.pii_blocked``,
    globs, or a plane rule's id): they stay in the decision, marked overridden by this rule, and no
    longer argue for their verdict. Plane errors can never be overridden."""

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        _check_names((v,), "rule id", _NAME)
        return v

    @field_validator("override")
    @classmethod
    def _override(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for sel in v:
            if "." not in sel or not _GLOB.match(sel):
                raise ValueError(f"override {sel!r} must name a plane finding as plane.code (e.g. network.unlisted)")
            plane, _, code = sel.partition(".")
            if any(fnmatchcase(p, plane) for p in _NOT_OVERRIDABLE) or any(
                fnmatchcase(c, code) for c in ("plane_error", "error")
            ):
                raise ValueError(f"override {sel!r}: plane errors and the engine's own findings can never be overridden")
        return v

    @model_validator(mode="after")
    def _approval(self) -> RuleSpec:
        if self.verdict is Verdict.REQUIRE_APPROVAL and self.approval is None:
            raise ValueError("a require_approval rule needs `approval:` naming the approver role")
        if self.approval is not None and self.verdict is not Verdict.REQUIRE_APPROVAL:
            raise ValueError("`approval:` only applies to verdict require_approval")
        if self.when is not None and not self.when.strip():
            raise ValueError("`when:` is empty")
        if self.override and not self.verdict.proceeds:
            raise ValueError("`override:` lets an action proceed despite a plane's finding: the rule's verdict must be allow")
        return self


class FlowRuleSpec(_Strict):
    """What happens when untrusted values reach particular tools."""

    id: str
    tools: tuple[str, ...] = ()
    """Tool globs this rule covers; empty: every consequential tool."""
    fields: tuple[str, ...] = ()
    """Argument fields to check (``to``, ``payment.account``); empty: all arguments."""
    kinds: tuple[Literal["email", "url", "host", "domain", "account", "amount", "text"], ...] = ()
    """Kinds of value that count (addresses, links, accounts… or ``text``: six words copied); empty: all."""
    unless: str | None = None
    """A CEL exemption: a match for which it is true does not count. It sees the rule variables
    and ``match`` (``field``, ``kind``, ``value`` as normalized, ``source``: the tool that brought it)."""
    mode: Mode | None = None
    """Overrides the pack's mode for this rule (``shadow`` to trial it, ``warn`` to flag only)."""
    verdict: Verdict
    reason: str | None = None
    approval: ApprovalSpec | None = None

    @field_validator("tools")
    @classmethod
    def _globs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_names(v, "glob", _GLOB)

    @model_validator(mode="after")
    def _approval(self) -> FlowRuleSpec:
        if self.verdict is Verdict.REQUIRE_APPROVAL and self.approval is None:
            raise ValueError("a require_approval flow rule needs `approval:` naming the approver role")
        if self.verdict in (Verdict.MODIFY, Verdict.NARROW):
            raise ValueError("a flow rule's verdict is block, require_approval, defer or allow")
        if self.unless is not None and not self.unless.strip():
            raise ValueError("`unless:` is empty")
        return self


class FlowSpec(_Strict):
    """Information-flow control: untrusted content reaching consequential actions."""

    classes: tuple[ActionClass, ...] = (ActionClass.INVOKE, ActionClass.MODIFY)
    """Action classes that count as consequential."""
    tools: tuple[str, ...] = ()
    """Further tool globs that count as consequential whatever their class."""
    rules: tuple[FlowRuleSpec, ...] = Field(min_length=1)
    """Every rule whose tools match the action applies (deny-overrides between them)."""


class Defaults(_Strict):
    unknown_tool: Literal["block", "require_approval"] = "block"
    unknown_agent: Literal["block", "require_approval", "allow"] = "block"
    no_match: Literal["block", "require_approval", "allow"] = "block"
    """Verdict for a catalogued tool call no rule matched."""
    modify_without_rule: Literal["block", "require_approval"] = "block"
    """A modify action is never allowed by ``no_match``; only an explicit rule allows it."""
    other_points: Literal["block", "allow"] = "allow"
    """Verdict for points other than tool_call (input, results, outputs) no rule matched."""
    approval: ApprovalSpec | None = None
    """Who approves a ``require_approval`` that names no approver itself (a plane's finding such as
    ``network.unlisted``, a data-plane entity, ``no_match: require_approval``). Without it such a
    verdict blocks, saying so: a request nobody can approve is never filed."""


class ListSqlSpec(_Strict):
    """A list read from a database: the first column of every row the query returns."""

    url: str | None = None
    """A SQLAlchemy URL (no password in a pack: use ``url_env``)."""
    url_env: str | None = None
    """The environment variable holding the URL."""
    query: str = Field(min_length=1)
    """``SELECT iban FROM payees WHERE holder = 'emma'``: read only, one column."""

    @model_validator(mode="after")
    def _one(self) -> ListSqlSpec:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("a SQL list names exactly one of `url` and `url_env`")
        if self.url_env is not None:
            _env_name(self.url_env)
        if not re.match(r"^\s*(select|with)\b", self.query, re.IGNORECASE) or ";" in self.query.strip().rstrip(";"):
            raise ValueError("a SQL list's `query` is one SELECT statement")
        return self


class ListSpec(_Strict):
    """A named list of values (payees, contacts, allowed sites): inline, from a file, or from SQL.
    CEL reads it as ``lists.NAME``; the information-flow index treats its values as trusted."""

    values: tuple[str, ...] | None = None
    file: str | None = None
    """A file (relative to the pack): one value a line (``#`` comments), or a YAML / JSON list."""
    sql: ListSqlSpec | None = None
    ttl: float | None = Field(default=None, gt=0)
    """Seconds after which a file or SQL list is read again (``Governor.reload_lists()`` any time)."""
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _inline(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return {"values": v}
        return v

    @field_validator("values", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return tuple(str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x for x in v)
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ListSpec:
        given = [k for k in ("values", "file", "sql") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a list is inline (a YAML list or `values:`), `file:` or `sql:` — exactly one")
        if self.ttl is not None and self.values is not None:
            raise ValueError("`ttl` applies to file and SQL lists")
        return self


class SessionsSpec(_Strict):
    """Where session state lives (``Governor(sessions=...)`` and ``$FIVEPLANE_SESSIONS_URL`` win)."""

    url: str | None = None
    """``memory`` (this process), or a SQLAlchemy URL: ``sqlite:///.fiveplane/sessions.db`` on one
    machine, ``postgresql+psycopg://...`` for many workers."""
    idle_ttl: float | None = Field(default=86_400, gt=0)
    """Seconds without a step after which a session is evicted (``null``: never)."""
    max_flow_entries: int = Field(default=1_000_000, ge=1)
    """Cap of one session's information-flow index (values + 6-word shingles)."""
    on_expired: Literal["block", "restart"] = "block"
    """What a step of an evicted session gets: ``block`` (it never silently starts over) or ``restart``."""


_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def _env_name(v: str) -> str:
    if not _ENV_NAME.match(v):
        raise ValueError(f"{v!r} is not an environment variable name (secrets never go in a pack: name the variable)")
    return v


class SlackNotifySpec(_Strict):
    """A Slack incoming webhook. Its URL is a secret: the pack names the environment variable holding it."""

    webhook_url_env: str = "FIVEPLANE_SLACK_WEBHOOK_URL"

    @field_validator("webhook_url_env")
    @classmethod
    def _env(cls, v: str) -> str:
        return _env_name(v)


class WebhookNotifySpec(_Strict):
    """A generic webhook, signed with HMAC-SHA256 (the SOAR sink's headers) when the secret variable is set."""

    endpoint: str = Field(pattern=r"^https?://[^\s/]+")
    secret_env: str = "FIVEPLANE_WEBHOOK_SECRET"

    @field_validator("secret_env")
    @classmethod
    def _env(cls, v: str) -> str:
        return _env_name(v)


class NotifySpec(_Strict):
    """Where a new approval request is announced (a link to the console, never the arguments)."""

    slack: SlackNotifySpec | None = None
    webhook: WebhookNotifySpec | None = None
    include_requester: bool = False
    """Name the requesting user in the message (off: the message carries ids and the tool only)."""


class ApprovalsSpec(_Strict):
    """The approval console: its public address (links in notifications), preset reasons, notifications."""

    console_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+")
    """The address people open the console at (default: where ``fiveplane console`` listens)."""
    approve_reasons: tuple[str, ...] = ("Verified with the requester", "Expected business change")
    deny_reasons: tuple[str, ...] = (
        "Not expected: looks like a prompt injection",
        "Wrong target or arguments",
        "Needs a ticket first",
    )
    notify: NotifySpec = Field(default_factory=NotifySpec)


class PackSpec(_Strict):
    name: str
    version: str = "0"
    description: str = ""
    mode: Mode = Mode.ENFORCE
    extends: tuple[str, ...] = ()
    """Paths (relative to this file) of packs this one builds on."""
    unsafe_empty: bool = False
    """Allow a pack with no rules (normally a load error)."""
    defaults: Defaults | None = None
    connectors: tuple[ConnectorSpec, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    agents: tuple[AgentSpec, ...] = ()
    rules: tuple[RuleSpec, ...] = ()
    planes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-plane configuration, validated by each installed plane."""
    information_flow: FlowSpec | None = None
    """Taint tracking from untrusted content to consequential actions (off when absent)."""
    lists: dict[str, ListSpec] = Field(default_factory=dict)
    """Named lists (``lists.NAME`` in CEL; trusted values for information flow)."""
    sessions: SessionsSpec | None = None
    """Where session state lives (default: in the process; a database URL for many workers)."""
    evidence: Literal["required", "best_effort"] | None = None
    """``required`` (the default): an action whose evidence cannot be recorded is blocked, whatever its
    class; ``best_effort``: only the durable classes (modify) are, the others run with a warning finding."""
    approvals: ApprovalsSpec | None = None
    """The approval console and its notifications (``fiveplane console``)."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        _check_names((v,), "pack name", _NAME)
        return v

    @field_validator("lists")
    @classmethod
    def _list_names(cls, v: dict[str, ListSpec]) -> dict[str, ListSpec]:
        for name in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(f"list name {name!r} must be an identifier (lists.{name} in CEL)")
        return v

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
