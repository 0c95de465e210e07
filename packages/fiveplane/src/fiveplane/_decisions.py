"""The Decision: one verdict with its reasons, findings, obligations and errors, as a value.

Combination is deny-overrides: the strongest verdict wins (``block`` > ``require_approval`` >
``defer`` > ``narrow`` > ``modify`` > ``allow``). A plane error is a finding of severity ``error``
and always ends in ``block`` (fail closed).
"""

from __future__ import annotations

import hashlib
import math
import operator
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._clock import utcnow

__all__ = [
    "Decision",
    "Finding",
    "Mode",
    "Obligation",
    "ObligationKind",
    "Severity",
    "Verdict",
    "short_digest",
    "strongest",
    "value_digest",
]


class Verdict(StrEnum):
    """The interruption primitives (DESIGN.md §4)."""

    ALLOW = "allow"
    MODIFY = "modify"
    """Proceed with rewritten (redacted, minimized) arguments or results."""
    NARROW = "narrow"
    """Proceed with an attenuated capability (read-only, a smaller resource set)."""
    DEFER = "defer"
    """Park the action; it resumes when an approval or a condition arrives."""
    REQUIRE_APPROVAL = "require_approval"
    """Pause and escalate to a human, bound to the exact action."""
    BLOCK = "block"

    # plain attributes of each member (set below), not properties: the hot path asks them on every decision
    rank: int
    """Deny-overrides order: allow < modify < narrow < defer < require_approval < block."""
    proceeds: bool
    """True when the action may run now (possibly rewritten or narrowed)."""


_RANK = {
    Verdict.ALLOW: 0,
    Verdict.MODIFY: 1,
    Verdict.NARROW: 2,
    Verdict.DEFER: 3,
    Verdict.REQUIRE_APPROVAL: 4,
    Verdict.BLOCK: 5,
}


for _v, _r in _RANK.items():
    _v.rank = _r
    _v.proceeds = _v in (Verdict.ALLOW, Verdict.MODIFY, Verdict.NARROW)


_rank_of = operator.attrgetter("rank")


def strongest(verdicts: list[Verdict] | tuple[Verdict, ...]) -> Verdict:
    """Deny-overrides combination. An empty list is an error, never an allow."""
    if not verdicts:
        raise ValueError("no verdict to combine: refusing to default to allow")
    return max(verdicts, key=_rank_of)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    HIGH = "high"
    CRITICAL = "critical"
    ERROR = "error"
    """An evaluation error: the decision fails closed."""


class Mode(StrEnum):
    """How a policy pack's verdicts take effect."""

    ENFORCE = "enforce"
    WARN = "warn"
    """Record and explain what would be stopped, let it run."""
    SHADOW = "shadow"
    """Record what would have happened, change nothing."""


def value_digest(value: str | bytes) -> str:
    """``sha256:<hex>`` of a value (UTF-8 for text): how findings refer to a value without quoting it."""
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def short_digest(value: str | bytes) -> str:
    """The first 12 hex digits of :func:`value_digest` (``sha256:1a2b3c4d5e6f``), for messages."""
    return value_digest(value)[:19]


_FIELD_DEPTH = 8


def _check_json(value: Any, where: str, depth: int = 0) -> None:
    if depth > _FIELD_DEPTH:
        raise ValueError(f"{where}: nested deeper than {_FIELD_DEPTH} levels")
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a finite number")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: keys must be strings, not {type(k).__name__}")
            _check_json(v, f"{where}.{k}", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]", depth + 1)
        return
    raise ValueError(f"{where}: a {type(value).__name__} is not a JSON value")


class Finding(BaseModel):
    """What one plane found about an action.

    ``message`` is for people and never quotes a value the action carries (an address, a path, a
    URL's query): it names fields, kinds and short digests. ``fields`` holds the same facts for
    machines (JSON values only: the argument, the host, the rule, ``sha256:`` digests of values).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    plane: str
    code: str
    message: str
    severity: Severity = Severity.INFO
    rule_id: str | None = None
    verdict: Verdict | None = None
    """The verdict this finding argues for, if any."""
    fields: dict[str, Any] = Field(default_factory=dict)
    """Structured details (JSON values); empty for findings that have none (and in records written
    before it existed)."""

    @field_validator("fields")
    @classmethod
    def _json_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_json(value, "fields")
        return value


class ObligationKind(StrEnum):
    REDACT = "redact"
    """Replace spans or fields with redacted values (data plane)."""
    MINIMIZE = "minimize"
    """Strip argument fields a tool may not receive (data plane)."""
    ATTENUATE = "attenuate"
    """Run with a narrowed capability, e.g. read-only (identity plane)."""
    APPROVAL = "approval"
    """Approvers required before the action may run."""
    RATE_LIMIT = "rate_limit"
    LABEL = "label"
    """Attach classification labels to the session (data plane)."""
    TAINT = "taint"
    """Mark the content as untrusted in the session (information flow)."""
    NOTIFY = "notify"


class Obligation(BaseModel):
    """Something an enforcement plane must do for the decision to hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ObligationKind
    plane: str
    params: dict[str, Any] = Field(default_factory=dict)
    rule_id: str | None = None


class Decision(BaseModel):
    """The single outcome of judging one action."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action_id: str
    verdict: Verdict
    """The verdict that takes effect (after the pack's mode)."""
    policy_verdict: Verdict
    """What the policy decided; differs from ``verdict`` only in warn/shadow mode."""
    mode: Mode = Mode.ENFORCE
    rule_ids: tuple[str, ...] = ()
    """The rules that produced the policy verdict."""
    findings: tuple[Finding, ...] = ()
    obligations: tuple[Obligation, ...] = ()
    explanation: str
    """One sentence a person can read."""
    policy_hash: str
    policy_version: str
    evaluated_at: datetime = Field(default_factory=utcnow)
    duration_us: float = 0.0
    errors: tuple[str, ...] = ()
    modified_arguments: dict[str, Any] | None = None
    """For ``modify``: the arguments the tool receives instead."""
    modified_content: Any = None
    """For ``modify`` on content points: the content the next step receives instead."""

    @classmethod
    def trusted(cls, **values: Any) -> Decision:
        """Build a Decision from values the engine made itself, already of the right types (every
        field given): no validation. Anything built from outside input goes through the
        constructor."""
        if values.keys() != _DECISION_FIELDS:
            raise TypeError(f"Decision.trusted needs exactly its fields (missing {sorted(_DECISION_FIELDS - values.keys())})")
        d = cls.__new__(cls)
        object.__setattr__(d, "__dict__", values)
        object.__setattr__(d, "__pydantic_fields_set__", set(values))
        object.__setattr__(d, "__pydantic_extra__", None)
        object.__setattr__(d, "__pydantic_private__", None)
        return d

    @classmethod
    def settled(cls, fields: dict[str, Any], action_id: str, evaluated_at: datetime, duration_us: float) -> Decision:
        """:meth:`trusted` for a decision plan's prebuilt fields (every field but these three; see
        :meth:`settled_fields`, which checks them once)."""
        values = {**fields, "action_id": action_id, "evaluated_at": evaluated_at, "duration_us": duration_us}
        d = cls.__new__(cls)
        object.__setattr__(d, "__dict__", values)
        object.__setattr__(d, "__pydantic_fields_set__", _ALL_SET)  # every field is set (never mutated: frozen)
        object.__setattr__(d, "__pydantic_extra__", None)
        object.__setattr__(d, "__pydantic_private__", None)
        return d

    @staticmethod
    def settled_fields(**fields: Any) -> dict[str, Any]:
        """The fields :meth:`settled` completes: every field but ``action_id``, ``evaluated_at`` and
        ``duration_us`` (checked here, once, not on every decision)."""
        missing = _DECISION_FIELDS - _PER_ACTION - fields.keys()
        if missing or fields.keys() & _PER_ACTION or fields.keys() - _DECISION_FIELDS:
            raise TypeError(f"Decision.settled_fields needs every field but the per-action ones (missing {sorted(missing)})")
        return fields

    @property
    def allowed(self) -> bool:
        """True when the action may run now."""
        return self.verdict.proceeds

    def obligations_of(self, kind: ObligationKind) -> list[Obligation]:
        return [o for o in self.obligations if o.kind is kind]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def summary(self) -> dict[str, Any]:
        """The fields ``policy explain`` prints first."""
        data = self.to_json()
        keys = [
            "action_id",
            "verdict",
            "policy_verdict",
            "rule_ids",
            "explanation",
            "findings",
            "obligations",
            "mode",
            "policy_hash",
            "errors",
        ]
        return {k: data[k] for k in keys}


_DECISION_FIELDS = frozenset(Decision.model_fields)
_PER_ACTION = frozenset({"action_id", "evaluated_at", "duration_us"})
_ALL_SET = set(_DECISION_FIELDS)
