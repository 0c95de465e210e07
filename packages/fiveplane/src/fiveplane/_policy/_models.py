"""Pydantic models of a policy pack (YAML). Unknown keys are rejected everywhere."""

from __future__ import annotations

import re
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_names(values: tuple[str, ...], what: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    for v in values:
        if not pattern.match(v):
            raise ValueError(f"invalid {what} {v!r}")
    return values


class ConnectorSpec(_Strict):
    name: str
    description: str = ""
    trusted: bool = True
    """Content from an untrusted connector (web, email, CRM notes) taints the session."""
    labels: tuple[str, ...] = ()
    """Classification labels carried by everything read from this connector."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        _check_names((v,), "connector name", _NAME)
        return v


class ToolSpec(_Strict):
    name: str
    connector: str | None = None
    action_class: ActionClass = Field(alias="class")
    description: str = ""
    arguments: dict[str, Any] | None = None
    """A JSON-Schema-like object schema of the tool's arguments (checked before the tool runs)."""
    trusted_output: bool | None = None
    """Whether results are trusted; defaults to the connector's ``trusted``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        _check_names((v,), "tool name", _NAME)
        return v


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

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        _check_names((v,), "rule id", _NAME)
        return v

    @model_validator(mode="after")
    def _approval(self) -> RuleSpec:
        if self.verdict is Verdict.REQUIRE_APPROVAL and self.approval is None:
            raise ValueError("a require_approval rule needs `approval:` naming the approver role")
        if self.approval is not None and self.verdict is not Verdict.REQUIRE_APPROVAL:
            raise ValueError("`approval:` only applies to verdict require_approval")
        if self.when is not None and not self.when.strip():
            raise ValueError("`when:` is empty")
        return self


class FlowRuleSpec(_Strict):
    """What happens when untrusted values reach particular tools."""

    id: str
    tools: tuple[str, ...] = ()
    """Tool globs this rule covers; empty: every consequential tool."""
    fields: tuple[str, ...] = ()
    """Argument fields to check (``to``, ``payment.account``); empty: all arguments."""
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

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
