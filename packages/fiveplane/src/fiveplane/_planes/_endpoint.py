"""The endpoint plane: what may run, with which arguments, how often.

For every tool call it checks, in order (and stops taking quota once something blocks):

1. **allow-lists per agent** — the connectors (and, optionally, tools) each agent may use; an agent
   the section does not list is blocked once the section lists any (the reasoning plane already
   keeps each agent to its ``tools`` globs and blocks uncatalogued tools);
2. **argument schemas** — the catalog's ``arguments`` schema (a strict JSON-Schema subset,
   :mod:`fiveplane._endpoint._schema`); unknown keys are rejected unless the schema allows them;
3. **constraints** — CEL conditions on the arguments that must hold;
4. **shell commands** — for tools that run commands: parsed, executables and sub-commands
   allow-listed, operators / expansions / redirections refused unless allowed, environment
   variables allow-listed, path arguments checked (:mod:`fiveplane._endpoint._shell`);
5. **file paths** — for tools that touch files: resolved real paths under the read or write roots
   (:mod:`fiveplane._endpoint._paths`);
6. **rate limits and quotas** — sliding windows per agent / user / principal / session / tool /
   connector / class, kept in the database so all processes share them
   (:mod:`fiveplane._endpoint._ratelimit`). Units taken for an action that then does not run are
   given back after the decision.
"""

from __future__ import annotations

import ast
import asyncio
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from .._actions import Action, ActionClass, MediationPoint
from .._decisions import Decision, Obligation, Severity, Verdict, short_digest, value_digest
from .._endpoint._paths import PathPolicy
from .._endpoint._ratelimit import RateLimitStore, RateRequest
from .._endpoint._schema import CompiledSchema, SchemaError, compile_schema
from .._endpoint._shell import COMMAND_RUNNERS, ExecutableRule, ShellError, ShellPolicy, check_argv, check_command
from .._policy._cel import Condition, ConditionError
from .._policy._load import Glob, Policy
from .._session import SessionState
from ._base import BasePlane, PlaneContext, PlaneResult

__all__ = [
    "AgentAllowConfig",
    "ConstraintConfig",
    "EndpointConfig",
    "EndpointPlane",
    "ExecutableConfig",
    "FilesConfig",
    "RateLimitConfig",
    "SchemasConfig",
    "ShellRuleConfig",
]

PLANE = "endpoint"
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(s|sec|m|min|h|d)?\s*$")
_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_NO = Glob(())
Dimension = Literal["agent", "user", "principal", "session", "tool", "connector", "class"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SchemasConfig(_Strict):
    enforce: bool = True
    """Validate tool arguments against the catalog's ``arguments`` schemas."""
    additional_properties: bool = False
    """What an object schema that does not say ``additionalProperties`` means (default: no unknown keys)."""
    require: bool = False
    """Block catalogued tools that have no ``arguments`` schema."""


class AgentAllowConfig(_Strict):
    connectors: tuple[str, ...] | None = None
    """Connector globs this agent may use (a tool without a connector passes); None: not restricted here."""
    tools: tuple[str, ...] | None = None
    """Tool globs, narrowing the agent's catalog ``tools`` further; None: not restricted here."""


class ConstraintConfig(_Strict):
    """A CEL condition over ``args``, ``tool``, ``agent``, ``user``, ``session``, ... that must hold."""

    id: str = Field(min_length=1)
    tools: tuple[str, ...] = ()
    connectors: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    when: str = Field(min_length=1)
    """Must evaluate to true; false (or an error) gives ``verdict``."""
    message: str = ""
    verdict: Literal["block", "require_approval"] = "block"

    _condition: Condition | None = PrivateAttr(default=None)
    _scope: tuple[Glob, Glob, Glob] = PrivateAttr(default=(_NO, _NO, _NO))

    @model_validator(mode="after")
    def _compile(self) -> ConstraintConfig:
        self._condition = Condition(self.when)
        self._scope = (Glob(self.tools), Glob(self.connectors), Glob(self.agents))
        return self


class ExecutableConfig(_Strict):
    subcommands: tuple[str, ...] = ()
    """If given, the first argument must be one of these (no options before it)."""
    deny_args: tuple[str, ...] = ()
    """Argument globs that are refused (``-exec``, ``--output*``)."""
    max_args: int | None = Field(default=None, ge=0)
    path_args: bool = True
    """Check path-like arguments against the ``files`` roots (read access)."""
    unsafe: bool = False
    """Required to allow-list a command runner (``sh``, ``env``, ``sudo``, ``xargs``, ``python``, ...)."""


_OPS = Literal[";", "&&", "||", "|", "&", "<", ">", ">>"]


class ShellRuleConfig(_Strict):
    """A shell-command policy for tools that run commands."""

    id: str = Field(min_length=1)
    tools: tuple[str, ...] = Field(min_length=1)
    argument: str = "command"
    """The argument holding the command: a string (run by a shell) or a list (an argument vector)."""
    env_argument: str | None = None
    """An argument holding environment variables (a mapping) for the command."""
    executables: dict[str, ExecutableConfig] = Field(min_length=1)
    """Allowed executables by bare name (or exact absolute path)."""
    operators: tuple[_OPS, ...] = ()
    """Operators allowed: ``;`` ``&&`` ``||`` ``|`` ``&`` and redirections ``<`` ``>`` ``>>``."""
    env: tuple[str, ...] = ()
    """Environment variables that may be set (``VAR=value cmd`` or ``env_argument``)."""
    globs: bool = False
    paths: Literal["check", "off"] = "check"
    """Check path-like arguments and redirection targets against the ``files`` roots."""
    max_commands: int = Field(default=8, ge=1)

    _policy: ShellPolicy | None = PrivateAttr(default=None)
    _tools: Glob = PrivateAttr(default=_NO)

    @field_validator("executables")
    @classmethod
    def _runners(cls, v: dict[str, ExecutableConfig]) -> dict[str, ExecutableConfig]:
        for name, exe in v.items():
            base = name.rsplit("/", 1)[-1]
            if not name or ("/" in name and not name.startswith("/")):
                raise ValueError(f"executable {name!r}: give a bare name or an absolute path")
            if (base in COMMAND_RUNNERS or re.match(r"^python[0-9.]*$", base)) and not exe.unsafe:
                raise ValueError(f"executable {name!r} runs other commands; allow it only with `unsafe: true`")
        return v

    @model_validator(mode="after")
    def _compile(self) -> ShellRuleConfig:
        self._policy = ShellPolicy(
            executables={
                name: ExecutableRule(subcommands=e.subcommands, deny_args=e.deny_args, max_args=e.max_args, path_args=e.path_args)
                for name, e in self.executables.items()
            },
            operators=frozenset(self.operators),
            env=frozenset(self.env),
            globs=self.globs,
            max_commands=self.max_commands,
        )
        self._tools = Glob(self.tools)
        return self


class FilesConfig(_Strict):
    """File-path policy: read and write roots (separate), and which tool arguments are paths."""

    base: str | None = None
    """Absolute directory relative roots and relative path arguments are resolved against."""
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    """Globs on the resolved path that are refused anyway (``*`` crosses ``/``)."""
    allow_hardlinks: bool = False
    tools: dict[str, dict[str, Literal["read", "write"]]] = Field(default_factory=dict)
    """Tool → {argument name (``[]`` for lists) → read | write}."""

    _policy: PathPolicy | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _compile(self) -> FilesConfig:
        self._policy = PathPolicy.create(
            read=self.read, write=self.write, deny=self.deny, base=self.base, allow_hardlinks=self.allow_hardlinks
        )
        return self


class RateLimitConfig(_Strict):
    """At most ``limit`` matching actions per ``window``, counted separately per ``per`` key."""

    id: str = Field(min_length=1)
    description: str = ""
    tools: tuple[str, ...] = ()
    connectors: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    classes: tuple[ActionClass, ...] = ()
    per: tuple[Dimension, ...] = ("agent",)
    """What is counted separately; empty: one global counter."""
    limit: int = Field(ge=1)
    window: float
    """Seconds, or a duration such as ``90s``, ``30m``, ``1h``, ``1d``."""
    verdict: Literal["block", "require_approval", "defer"] = "block"

    _scope: tuple[Glob, Glob, Glob] = PrivateAttr(default=(_NO, _NO, _NO))

    @model_validator(mode="after")
    def _compile(self) -> RateLimitConfig:
        self._scope = (Glob(self.tools), Glob(self.connectors), Glob(self.agents))
        return self

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, v: Any) -> Any:
        if isinstance(v, str):
            m = _DURATION.match(v)
            if m is None:
                raise ValueError(f"invalid duration {v!r} (use seconds or e.g. 30s, 15m, 1h, 1d)")
            return float(m.group(1)) * _UNITS[m.group(2)]
        return v

    @field_validator("window")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("the window must be positive")
        return v


class EndpointConfig(_Strict):
    """The ``planes.endpoint`` section of a policy pack."""

    schemas: SchemasConfig = Field(default_factory=SchemasConfig)
    agents: dict[str, AgentAllowConfig] = Field(default_factory=dict)
    """Per-agent allow-lists; once any agent is listed, an unlisted agent is blocked."""
    constraints: tuple[ConstraintConfig, ...] = ()
    shell: tuple[ShellRuleConfig, ...] = ()
    files: FilesConfig | None = None
    rate_limits: tuple[RateLimitConfig, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> EndpointConfig:
        for kind, items in (("constraint", self.constraints), ("shell rule", self.shell), ("rate limit", self.rate_limits)):
            ids = [i.id for i in items]
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} id(s): {', '.join(dupes)}")
        for rule in self.shell:
            if rule.paths == "check" and self.files is None:
                raise ValueError(
                    f"shell rule {rule.id!r} checks paths but there is no `files:` policy; add one or set `paths: off`"
                )
        return self


# ---- CEL variables for constraints ------------------------------------------------------------


class _Vars:
    __slots__ = ("_action", "_now", "_session")

    def __init__(self, action: Action, session: SessionState, now: datetime) -> None:
        self._action, self._session, self._now = action, session, now

    def __call__(self, name: str) -> Any:
        a = self._action
        if name == "args":
            return a.arguments
        if name == "tool":
            return {"name": a.tool or "", "connector": a.connector or "", "class": a.action_class.value if a.action_class else ""}
        if name == "agent":
            return {"id": a.agent.id if a.agent else ""}
        if name == "user":
            u = a.user
            return {"id": u.id, "roles": list(u.roles), "claims": u.claims} if u else {"id": "", "roles": [], "claims": {}}
        if name == "principal":
            return [{"kind": p.kind.value, "id": p.id, "roles": list(p.roles)} for p in a.principal]
        if name == "session":
            return self._session.cel_view()
        if name == "content":
            return a.content
        if name == "now":
            return self._now
        if name == "action":
            return {
                "point": a.point.value,
                "tool": a.tool or "",
                "connector": a.connector or "",
                "class": a.action_class.value if a.action_class else "",
                "session_id": a.session_id,
            }
        return None


def _applies(globs: tuple[Glob, Glob, Glob], action: Action) -> bool:
    tools, connectors, agents = globs
    if tools and not tools.matches(action.tool):
        return False
    if connectors and not connectors.matches(action.connector):
        return False
    agent = action.agent
    return not (agents and not agents.matches(agent.id if agent else None))


def _at(arguments: Mapping[str, Any], path: str) -> list[tuple[str, Any]]:
    """Values at a (dotted, ``[]`` for list items) argument path; missing parts yield nothing."""
    out: list[tuple[str, Any]] = [("", arguments)]
    for part in path.split("."):
        many = part.endswith("[]")
        name = part[:-2] if many else part
        nxt: list[tuple[str, Any]] = []
        for where, value in out:
            if not isinstance(value, Mapping) or name not in value:
                continue
            here = f"{where}.{name}" if where else name
            item = value[name]
            if many and isinstance(item, (list, tuple)):
                nxt.extend((f"{here}[{i}]", v) for i, v in enumerate(item))
            else:
                nxt.append((here, item))
        out = nxt
    return out


# ---- finding messages that never quote the action's values -----------------------------------

_LITERAL = re.compile(
    r"""(?<![A-Za-z0-9])(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n…]|\\.)*…|"(?:[^"\\\n…]|\\.)*…)(?![A-Za-z0-9])"""
)
"""A Python ``repr`` of a string (as the checkers quote values), possibly clipped with ``…``."""
_BARE_PATH = re.compile(r"""\((/[^()]*)\)|(?<![\w'"/\[.~-])(/[^\s()'",;\]]*)""")
_NUMERIC = re.compile(r"^[+-]?\d[\d.,_]*$")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_MAX_VALUES = 2000


def _kind(value: str) -> str:
    if value.startswith(("/", "./", "../", "~")) or ("/" in value and " " not in value):
        return "path"
    if _NUMERIC.match(value):
        return "number"
    return "text"


def _ref(value: str, kind: str | None = None) -> str:
    return f"[{kind or _kind(value)} {short_digest(value)}]"


def _strings_of(value: Any, limit: int = _MAX_VALUES) -> Iterator[str]:
    """Strings (values and keys) and long numbers of an argument tree, without recursion."""
    stack = [value]
    n = 0
    while stack and n < limit:
        v = stack.pop()
        n += 1
        if isinstance(v, str):
            yield v
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, (int, float)):
            text = str(v)
            if len(text) >= 5:
                yield text
        elif isinstance(v, Mapping):
            for k, item in v.items():
                if isinstance(k, str):
                    yield k
                stack.append(item)
        elif isinstance(v, (list, tuple)):
            stack.extend(v)


class _Scrubber:
    """Rewrites a checker's message so it names the kind and a short digest of each value of the
    action (``[path sha256:1a2b3c4d5e6f]``) instead of quoting it. What the policy itself declares
    (executables, sub-commands, roots, enum values, patterns, field names) stays readable.

    Three passes: quoted literals (the checkers ``repr`` the values they refuse, possibly clipped);
    the action's own strings wherever they still appear; bare absolute paths (resolved paths).
    """

    def __init__(self, arguments: Mapping[str, Any], safe: frozenset[str]) -> None:
        self.safe = safe
        self._values: list[str] | None = None
        self._arguments = arguments
        self.digests: list[str] = []

    def values(self) -> list[str]:
        if self._values is None:
            vals = {v for v in _strings_of(self._arguments) if v not in self.safe and (len(v) >= 6 or not v.isalpha())}
            self._values = sorted(vals, key=len, reverse=True)
        return self._values

    def _digest(self, value: str, kind: str | None = None) -> str:
        self.digests.append(value_digest(value))
        return _ref(value, kind)

    def _literal(self, m: re.Match[str]) -> str:
        lit = m.group()
        if lit.endswith("…"):
            prefix = lit[:-1]
            full = next((v for v in self.values() if repr(v).startswith(prefix)), None)
            return self._digest(full if full is not None else prefix[1:])
        try:
            content = ast.literal_eval(lit)
        except (ValueError, SyntaxError):
            content = lit[1:-1]
        if not isinstance(content, str) or content in self.safe:
            return lit
        if len(content) <= 3 and not any(c.isalnum() for c in content):
            return lit  # an operator or punctuation ('~', '..', '&&')
        return self._digest(content)

    def _path(self, m: re.Match[str]) -> str:
        inner = m.group(1)
        if inner is not None:  # "(/a, /b)": a list of roots, or one resolved path
            parts = inner.split(", ")
            if all(p in self.safe for p in parts):
                return m.group()
            if not all(p.startswith("/") for p in parts):
                return f"({self._digest(inner, 'path')})"
            return "(" + ", ".join(p if p in self.safe else self._digest(p, "path") for p in parts) + ")"
        path = m.group(2)
        if path in self.safe or len(path) <= 1:
            return m.group()
        return self._digest(path, "path")

    def __call__(self, message: str) -> str:
        out = _LITERAL.sub(self._literal, message)
        for v in self.values():
            if len(v) >= 3 and v in out:
                ref = _ref(v)
                out, n = re.subn(rf"(?<![A-Za-z0-9]){re.escape(v)}(?![A-Za-z0-9])", ref.replace("\\", "\\\\"), out)
                if n:
                    self.digests.append(value_digest(v))
        return _BARE_PATH.sub(self._path, out)

    def fields(self, **extra: Any) -> dict[str, Any]:
        out = {k: v for k, v in extra.items() if v is not None}
        if self.digests:
            out["values"] = list(dict.fromkeys(self.digests))
        return out


def _field_names(arguments: Mapping[str, Any]) -> frozenset[str]:
    """Keys of the arguments that read as field names (``follow``, ``dry_run``): messages may name
    them (``unexpected field 'follow'``); a key that is data (an address, a path) is not one."""
    names: set[str] = set()
    stack: list[Any] = [arguments]
    seen = 0
    while stack and seen < _MAX_VALUES:
        v = stack.pop()
        seen += 1
        if isinstance(v, Mapping):
            names.update(k for k in v if isinstance(k, str) and _FIELD_NAME.match(k))
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return frozenset(names)


def _policy_strings(value: Any) -> Iterator[str]:
    """Every string a configuration or schema declares (they may appear in messages as they are)."""
    yield from _strings_of(value, limit=100_000)


class EndpointPlane(BasePlane):
    """Allow-lists, argument schemas and constraints, shell and file-path policy, rate limits.

    Args:
        database_url: where rate-limit counters live (SQLAlchemy URL); default
            ``FIVEPLANE_RATE_LIMIT_URL`` or ``sqlite:///.fiveplane/endpoint.db``. Only opened when a
            rate limit applies.
        store: a ready :class:`~fiveplane._endpoint._ratelimit.RateLimitStore` (instead of a URL).
    """

    name = PLANE
    config_model = EndpointConfig

    def __init__(self, *, database_url: str | None = None, store: RateLimitStore | None = None) -> None:
        self._database_url = database_url
        self._store = store
        self._store_lock = threading.Lock()
        self._schemas: dict[tuple[str, str, bool], CompiledSchema | SchemaError] = {}
        self._reserved: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._kept: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        """Units of proceeding actions, until their decision is committed (``on_abort`` refunds them)."""
        self._reserved_lock = threading.Lock()
        self._safe: dict[tuple[str, int, str | None], frozenset[str]] = {}

    def _scrubber(self, action: Action, policy: Policy, cfg: EndpointConfig) -> _Scrubber:
        """The message scrubber of one action: what the pack declares stays readable."""
        key = (policy.hash, id(cfg), action.tool)
        safe = self._safe.get(key)
        if safe is None:
            spec = policy.tools.get(action.tool or "")
            declared: set[str] = set(_policy_strings(cfg.model_dump(mode="json")))
            if spec is not None and spec.arguments is not None:
                declared.update(_policy_strings(spec.arguments))
            if cfg.files is not None and cfg.files._policy is not None:
                declared.update(cfg.files._policy.read + cfg.files._policy.write)
                declared.update(r for r in (cfg.files._policy.base,) if r)
            declared.update(t for t in (action.tool, action.connector) if t)
            safe = frozenset(declared)
            if len(self._safe) < 10_000:
                self._safe[key] = safe
        return _Scrubber(action.arguments, safe | _field_names(action.arguments))

    @property
    def store(self) -> RateLimitStore:
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = RateLimitStore(self._database_url)
        return self._store

    def check_policy(self, policy: Policy) -> list[str]:
        """Cross-checks against the catalog: unknown tools, schemas this plane cannot enforce."""
        cfg = EndpointConfig.model_validate(policy.planes.get(PLANE, {}))
        problems = []
        for name, spec in policy.tools.items():
            if spec.arguments is not None:
                try:
                    compile_schema(spec.arguments)
                except SchemaError as exc:
                    problems.append(f"tool {name}: {exc}")
        for rule in cfg.shell:
            problems.extend(
                f"planes.endpoint.shell {rule.id}: tool glob {g!r} matches no catalogued tool"
                for g in rule.tools
                if not any(Glob([g]).matches(t) for t in policy.tools)
            )
        if cfg.files is not None:
            problems.extend(
                f"planes.endpoint.files.tools: {t!r} is not a catalogued tool" for t in cfg.files.tools if t not in policy.tools
            )
        problems.extend(f"planes.endpoint.agents: {a!r} is not a declared agent" for a in cfg.agents if a not in policy.agents)
        return problems

    # ---- judging ----------------------------------------------------------------------------

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        result = PlaneResult(plane=PLANE)
        if action.point is not MediationPoint.TOOL_CALL:
            return result
        cfg = ctx.config if isinstance(ctx.config, EndpointConfig) else EndpointConfig()
        self._allow_lists(action, cfg, result)
        self._schema(action, ctx.policy, cfg, result)
        self._constraints(action, ctx, cfg, result)
        self._shell(action, ctx.policy, cfg, result)
        self._files(action, ctx.policy, cfg, result)
        if not any(f.verdict is not None and f.verdict is not Verdict.ALLOW for f in result.findings):
            self._rate_limits(action, ctx, cfg, result)
        return result

    def _allow_lists(self, action: Action, cfg: EndpointConfig, result: PlaneResult) -> None:
        if not cfg.agents:
            return
        agent = action.agent
        entry = cfg.agents.get(agent.id) if agent else None
        if entry is None:
            who = repr(agent.id) if agent else "no agent"
            result.add(
                "agent_not_listed",
                f"{who} has no endpoint allow-list, so it may not run tools",
                verdict=Verdict.BLOCK,
                severity=Severity.HIGH,
                rule_id="endpoint.agents",
            )
            return
        assert agent is not None
        if entry.tools is not None and not Glob(entry.tools).matches(action.tool):
            result.add(
                "tool_not_allowed",
                f"agent {agent.id!r} may not run {action.tool} (endpoint allow-list)",
                verdict=Verdict.BLOCK,
                severity=Severity.HIGH,
                rule_id="endpoint.agents",
            )
        if entry.connectors is not None and action.connector is not None and not Glob(entry.connectors).matches(action.connector):
            result.add(
                "connector_not_allowed",
                f"agent {agent.id!r} may not use the connector {action.connector} (allowed: {', '.join(entry.connectors) or 'none'})",
                verdict=Verdict.BLOCK,
                severity=Severity.HIGH,
                rule_id="endpoint.agents",
            )

    def _schema(self, action: Action, policy: Policy, cfg: EndpointConfig, result: PlaneResult) -> None:
        if not cfg.schemas.enforce or action.tool is None:
            return
        spec = policy.tools.get(action.tool)
        if spec is None:
            return  # uncatalogued: the reasoning plane blocks it
        if spec.arguments is None:
            if cfg.schemas.require:
                result.add(
                    "schema_missing",
                    f"{action.tool} has no argument schema in the catalog",
                    verdict=Verdict.BLOCK,
                    severity=Severity.HIGH,
                    rule_id="endpoint.schema",
                )
            return
        key = (policy.hash, action.tool, cfg.schemas.additional_properties)
        compiled = self._schemas.get(key)
        if compiled is None:
            try:
                compiled = compile_schema(spec.arguments, additional_properties=cfg.schemas.additional_properties)
            except SchemaError as exc:
                compiled = exc
            if len(self._schemas) < 10_000:
                self._schemas[key] = compiled
        if isinstance(compiled, SchemaError):
            result.add(
                "schema_invalid",
                f"the argument schema of {action.tool} cannot be enforced: {compiled}",
                verdict=Verdict.BLOCK,
                severity=Severity.ERROR,
                rule_id="endpoint.schema",
            )
            return
        errors = compiled.errors(action.arguments)
        if errors:
            scrub = self._scrubber(action, policy, cfg)
            result.add(
                "schema",
                f"the arguments of {action.tool} do not match its schema: {scrub('; '.join(errors))}",
                verdict=Verdict.BLOCK,
                severity=Severity.HIGH,
                rule_id="endpoint.schema",
                fields=scrub.fields(tool=action.tool, errors=len(errors)),
            )

    def _constraints(self, action: Action, ctx: PlaneContext, cfg: EndpointConfig, result: PlaneResult) -> None:
        cel_vars: _Vars | None = None
        for c in cfg.constraints:
            if not _applies(c._scope, action):
                continue
            cel_vars = cel_vars or _Vars(action, ctx.session, ctx.now)
            condition = c._condition
            assert condition is not None
            try:
                ok = condition.evaluate(cel_vars)
            except ConditionError as exc:
                scrub = self._scrubber(action, ctx.policy, cfg)
                result.add(
                    "constraint_error",
                    f"constraint {c.id} could not be evaluated: {scrub(str(exc))}",
                    fields=scrub.fields(tool=action.tool, constraint=c.id),
                    verdict=Verdict.BLOCK,
                    severity=Severity.ERROR,
                    rule_id=c.id,
                )
                continue
            if not ok:
                result.add(
                    "constraint",
                    c.message or f"constraint {c.id} does not hold ({c.when})",
                    verdict=Verdict(c.verdict),
                    severity=Severity.HIGH,
                    rule_id=c.id,
                )

    def _shell(self, action: Action, policy_: Policy, cfg: EndpointConfig, result: PlaneResult) -> None:
        paths = cfg.files._policy if cfg.files is not None else None
        for rule in cfg.shell:
            if not rule._tools.matches(action.tool):
                continue
            policy = rule._policy
            assert policy is not None
            checker = paths.check if (paths is not None and rule.paths == "check") else None
            command = action.arguments.get(rule.argument)
            env: Any = action.arguments.get(rule.env_argument) if rule.env_argument else None
            try:
                if env is not None and not isinstance(env, Mapping):
                    raise ShellError(f"the argument {rule.env_argument!r} must be a mapping of environment variables")
                if command is None:
                    raise ShellError(f"the command argument {rule.argument!r} is missing")
                if isinstance(command, str):
                    check_command(command, policy, checker, dict(env) if env else None)
                elif isinstance(command, (list, tuple)):
                    check_argv(command, policy, checker, dict(env) if env else None)
                else:
                    raise ShellError(f"the command argument {rule.argument!r} must be a string or a list of strings")
            except ShellError as exc:
                scrub = self._scrubber(action, policy_, cfg)
                message = scrub(str(exc))
                result.add(
                    "shell",
                    f"{action.tool}: {message} (shell rule {rule.id})",
                    verdict=Verdict.BLOCK,
                    severity=Severity.HIGH,
                    rule_id=rule.id,
                    fields=scrub.fields(
                        tool=action.tool,
                        argument=rule.argument,
                        command=value_digest(command if isinstance(command, str) else repr(command))
                        if command is not None
                        else None,
                    ),
                )

    def _files(self, action: Action, policy_: Policy, cfg: EndpointConfig, result: PlaneResult) -> None:
        if cfg.files is None or action.tool not in cfg.files.tools:
            return
        policy = cfg.files._policy
        assert policy is not None
        for path, access in cfg.files.tools[action.tool].items():
            for where, value in _at(action.arguments, path):
                if not isinstance(value, str):
                    problem: str | None = f"argument {where} should be a path, not {type(value).__name__}"
                else:
                    problem = policy.check(value, access)
                if problem:
                    scrub = self._scrubber(action, policy_, cfg)
                    result.add(
                        "path",
                        f"{action.tool} ({access} {where}): {scrub(problem)}",
                        verdict=Verdict.BLOCK,
                        severity=Severity.HIGH,
                        rule_id="endpoint.files",
                        fields=scrub.fields(
                            tool=action.tool,
                            argument=where,
                            access=access,
                            path=value_digest(value) if isinstance(value, str) else None,
                        ),
                    )

    # ---- rate limits ------------------------------------------------------------------------

    @staticmethod
    def _key(rule: RateLimitConfig, action: Action) -> str:
        parts = [rule.id]
        for dim in rule.per:
            if dim == "agent":
                value = action.agent.id if action.agent else "-"
            elif dim == "user":
                value = action.user.id if action.user else "-"
            elif dim == "principal":
                value = ">".join(f"{p.kind.value}:{p.id}" for p in action.principal)
            elif dim == "session":
                value = action.session_id
            elif dim == "tool":
                value = action.tool or "-"
            elif dim == "connector":
                value = action.connector or "-"
            else:
                value = action.action_class.value if action.action_class else "-"
            parts.append(f"{dim}={value}")
        return "|".join(parts)

    def _rate_limits(self, action: Action, ctx: PlaneContext, cfg: EndpointConfig, result: PlaneResult) -> None:
        rules = [r for r in cfg.rate_limits if _applies(r._scope, action) and (not r.classes or action.action_class in r.classes)]
        if not rules:
            return
        requests = [RateRequest(r.id, self._key(r, action), r.limit, r.window) for r in rules]
        now_us = int(ctx.now.timestamp() * 1_000_000)
        try:
            outcome = self.store.acquire(requests, now_us)
        except Exception as exc:  # noqa: BLE001 - no counter, no action
            result.add(
                "rate_limit_store",
                f"the rate-limit store failed ({type(exc).__name__}: {exc}); failing closed",
                verdict=Verdict.BLOCK,
                severity=Severity.ERROR,
                rule_id="endpoint.rate_limit",
            )
            return
        if outcome.exceeded is not None:
            e = outcome.exceeded
            rule = next(r for r in rules if r.id == e.rule_id)
            who = ", ".join(e.key.split("|")[1:]) or "everyone"
            result.add(
                "rate_limit",
                f"rate limit {e.rule_id}: {e.used} of {e.limit} per {_duration(e.window_s)} used ({who}); next slot in {e.retry_after_s:.0f}s",
                verdict=Verdict(rule.verdict),
                severity=Severity.HIGH,
                rule_id=e.rule_id,
            )
            return
        with self._reserved_lock:
            self._reserved[action.action_id] = outcome.reservations
            while len(self._reserved) > 10_000:
                self._reserved.popitem(last=False)
        result.add("rate_limit_taken", f"counted against {', '.join(r.id for r in rules)}")

    def _refund(self, action: Action, decision: Decision) -> tuple[int, ...]:
        with self._reserved_lock:
            taken = self._reserved.pop(action.action_id, ())
            if decision.verdict.proceeds and taken:
                # kept until the decision is committed: a later veto (evidence) gives them back
                self._kept[action.action_id] = taken
                while len(self._kept) > 10_000:
                    self._kept.popitem(last=False)
        return () if decision.verdict.proceeds else taken

    def on_abort(self, action_id: str) -> None:
        """The action was blocked after all (a later veto): give back the units it took."""
        with self._reserved_lock:
            taken = self._kept.pop(action_id, ()) or self._reserved.pop(action_id, ())
        if taken:
            self.store.release(taken)

    def on_decision(self, action: Action, decision: Decision, ctx: PlaneContext) -> list[Obligation]:
        refund = self._refund(action, decision)
        if refund:
            self.store.release(refund)
        return []

    async def aon_decision(self, action: Action, decision: Decision, ctx: PlaneContext) -> list[Obligation]:
        refund = self._refund(action, decision)
        if refund:
            await asyncio.to_thread(self.store.release, refund)
        return []


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}" if n != 1 else {"d": "day", "h": "hour", "min": "minute"}[unit]
    return f"{seconds:g} s"
