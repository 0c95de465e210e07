"""The Action: one step of an agent, in the interchange format every plane, adapter and the CLI use.

An :class:`Action` is what the mediator judges. It names the mediation point (where in the agent's
run the step was stopped), the tool and connector, the action class, the arguments or content, the
composite principal (the ordered chain of who acts: human user → agents → connector), the session
and the declared intent. Its JSON form (``model_dump(mode="json")``) is stable: adapters emit it,
``fiveplane policy explain`` reads it as JSON Lines, and the ledger stores it (after redaction).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import rfc8785
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ._clock import utcnow
from ._entropy import random_bytes

__all__ = [
    "MAX_PAYLOAD_CHARS",
    "MAX_PAYLOAD_DEPTH",
    "Action",
    "ActionClass",
    "MediationPoint",
    "Principal",
    "PrincipalKind",
    "canonical_json",
]


class MediationPoint(StrEnum):
    """Where an agent's run was stopped to be judged (DESIGN.md §3)."""

    INPUT = "input"
    """The user's request enters; the intent is declared here."""
    MODEL_OUTPUT = "model_output"
    """The model proposes tool calls or a plan."""
    TOOL_CALL = "tool_call"
    """Before a tool or connector executes: the main enforcement point."""
    TOOL_RESULT = "tool_result"
    """After a tool executed, before the model sees its result."""
    RETRIEVAL = "retrieval"
    """Documents from a retriever, before the model sees them."""
    DELEGATION = "delegation"
    """A hand-off to a sub-agent; authority can only narrow."""
    FINAL_OUTPUT = "final_output"
    """The answer leaves to the user or another system."""


class ActionClass(StrEnum):
    """What an operation does to the world (DESIGN.md §5)."""

    READ = "read"
    INVOKE = "invoke"
    MODIFY = "modify"
    """A change to a system of record."""


class PrincipalKind(StrEnum):
    USER = "user"
    AGENT = "agent"
    CONNECTOR = "connector"
    SERVICE = "service"


_USER, _AGENT = PrincipalKind.USER, PrincipalKind.AGENT  # module constants: an enum member read costs a lookup


class Principal(BaseModel):
    """One link of the composite principal chain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: PrincipalKind
    id: str = Field(min_length=1)
    roles: tuple[str, ...] = ()
    claims: dict[str, Any] = Field(default_factory=dict)

    def __hash__(self) -> int:  # claims is a dict: hash on identity fields only
        return hash((self.kind, self.id, self.roles))


_SAFE_INT = 2**53 - 1


def plain_json(value: Any) -> bool:
    """True when ``json.dumps(sort_keys=True)`` provably equals RFC 8785 for ``value``.

    That holds for str / bool / None / safe ints, lists and dicts with ASCII keys (code-point order
    is then UTF-16 order), and floats that are not whole numbers with 1e-4 <= |x| < 1e16: Python's
    ``repr`` then writes them in plain decimal notation with the shortest round-trip digits, as
    ECMAScript (hence RFC 8785) does. Other floats (1.0, 1e-7, 1e21) are written differently.
    """
    stack = [value]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        v = pop()
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is int:
            if not -_SAFE_INT <= v <= _SAFE_INT:
                return False
        elif t is float:
            if not 1e-4 <= abs(v) < 1e16 or v.is_integer():
                return False
        elif t is dict:
            for k, item in v.items():
                if type(k) is not str or not k.isascii():
                    return False
                push(item)
        elif t is list or t is tuple:
            extend(v)
        else:
            return False
    return True


def canonical_json(value: Any, *, plain: bool | None = None) -> bytes:
    """RFC 8785 (JCS) canonical bytes of a JSON-compatible value. Plain values (:func:`plain_json`)
    take the C ``json`` encoder (same bytes, about 5x faster); anything else (floats, non-ASCII keys,
    big ints, subclasses) goes through the ``rfc8785`` package."""
    if plain if plain is not None else plain_json(value):
        try:
            return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: rfc8785 says what is wrong
            pass
    return rfc8785.dumps(value)


def _new_id() -> str:
    """128 bits from the OS's CSPRNG as 32 hex digits (from the process's pool: see ``_entropy``)."""
    return random_bytes(16).hex()


MAX_PAYLOAD_DEPTH = 64
"""Deepest nesting of dicts and lists an action's arguments or content may have."""
MAX_PAYLOAD_CHARS = 16 * 1024 * 1024
"""Largest size of an action's arguments or content: characters of text and bytes, plus one per
number, key and container (about 16 MB of JSON)."""


def _path(link: tuple[Any, ...] | None) -> str:
    parts: list[str] = []
    while link is not None:
        link, key = link
        parts.append(f"[{key}]" if isinstance(key, int) else f".{str(key)[:40]}")
    parts.reverse()
    return "".join(parts) if len(parts) <= 8 else "".join(parts[:4]) + "…" + "".join(parts[-2:])


def check_payload(value: Any, where: str) -> None:
    """Fail closed on what no plane, ledger or JSON consumer can handle: non-finite numbers (NaN,
    ±Infinity; RFC 8785 and JSON have none), nesting deeper than :data:`MAX_PAYLOAD_DEPTH` (also a
    value that contains itself), more than :data:`MAX_PAYLOAD_CHARS`. Raises ``ValueError`` naming
    the place. Iterative: hostile nesting cannot raise ``RecursionError``. Objects other than
    dicts, lists, tuples and sets are not entered (adapters convert them to JSON)."""
    size = 0
    stack: list[tuple[Any, int, tuple[Any, ...] | None]] = [(value, 0, None)]
    while stack:
        v, depth, link = stack.pop()
        if isinstance(v, str):
            size += len(v) + 1
        elif isinstance(v, float):
            size += 1
            if not math.isfinite(v):
                raise ValueError(f"{where}{_path(link)}: {v} is not a finite number (NaN and Infinity are not JSON)")
        elif isinstance(v, Decimal):
            size += 1
            if not v.is_finite():
                raise ValueError(f"{where}{_path(link)}: {v} is not a finite number (NaN and Infinity are not JSON)")
        elif isinstance(v, (bytes, bytearray)):
            size += len(v) + 1
        elif isinstance(v, (Mapping, list, tuple, set, frozenset)):
            if depth >= MAX_PAYLOAD_DEPTH:
                raise ValueError(f"{where}{_path(link)}: nested deeper than {MAX_PAYLOAD_DEPTH} levels")
            size += 1
            if isinstance(v, Mapping):
                for k, item in v.items():
                    size += len(k) + 1 if isinstance(k, str) else 1
                    stack.append((item, depth + 1, (link, k)))
            else:
                for i, item in enumerate(v):
                    stack.append((item, depth + 1, (link, i)))
        else:
            size += 1
        if size > MAX_PAYLOAD_CHARS:
            raise ValueError(f"{where}: larger than {MAX_PAYLOAD_CHARS // (1024 * 1024)} MB")


class Action(BaseModel):
    """One step of an agent, judged once by the mediator.

    ``connector`` and ``action_class`` may be left out for a tool the policy's catalog knows: the
    catalog is authoritative and fills them in (a caller cannot downgrade a ``modify`` to a ``read``
    by mislabelling it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    point: MediationPoint
    """The mediation point at which this step was stopped."""
    tool: str | None = None
    """The tool (``connector.operation`` by convention) for tool calls and results."""
    connector: str | None = None
    """The connector (system of record) the tool talks to."""
    action_class: ActionClass | None = None
    """read / invoke / modify; from the policy catalog when the tool is known."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    """Tool arguments (tool_call) or structured content."""
    content: Any = None
    """Free content: the user's input, a model's output, a tool result, retrieved documents."""
    principal: tuple[Principal, ...] = Field(min_length=1)
    """Ordered chain: human user (roles, claims) → agents → connector."""
    session_id: str = Field(min_length=1)
    intent: str | None = None
    """The declared intent of the run (captured at the ``input`` point)."""
    purpose: str | None = None
    """The declared purpose category, bound against the agent's declared purposes."""
    action_id: str = Field(default_factory=_new_id)
    parent_action_id: str | None = None
    """For results: the tool_call action they answer; for delegations: the delegating action."""
    labels: tuple[str, ...] = ()
    """Classification labels carried by this action's data (e.g. ``CONFIDENTIAL``)."""
    timestamp: datetime = Field(default_factory=utcnow)

    @field_validator("tool", "connector")
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("arguments", "content")
    @classmethod
    def _payload(cls, value: Any, info: ValidationInfo) -> Any:
        check_payload(value, str(info.field_name))
        return value

    @model_validator(mode="after")
    def _tool_points_need_tool(self) -> Action:
        if self.point in (MediationPoint.TOOL_CALL, MediationPoint.TOOL_RESULT) and not self.tool:
            raise ValueError(f"an action at point {self.point.value!r} must name its tool")
        return self

    # --- views ----------------------------------------------------------------------------

    @property
    def user(self) -> Principal | None:
        """The human at the head of the chain, if any."""
        for link in self.principal:
            if link.kind is _USER:
                return link
        return None

    @property
    def agent(self) -> Principal | None:
        """The innermost agent of the chain (the one acting now)."""
        for link in reversed(self.principal):
            if link.kind is _AGENT:
                return link
        return None

    @property
    def roles(self) -> frozenset[str]:
        """Roles held by the human user of the chain."""
        user = self.user
        return frozenset(user.roles) if user else frozenset()

    def digest(self) -> str:
        """SHA-256 over the canonical JSON of what the action *does* (not when or its id).

        Approvals are bound to this digest: any change of tool, arguments, principal or content
        gives another digest, hence another action that must be decided again.
        """
        body = self.model_dump(mode="json", exclude={"action_id", "timestamp"})
        return hashlib.sha256(canonical_json(body)).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form."""
        return self.model_dump(mode="json")
