"""Scanning one action: scope resolution, minimization, the two analysis stages, the per-entity
actions, the rewritten payloads and the redacted evidence.

A :class:`CompiledConfig` is a :class:`DataPlaneConfig` bound to the process-wide Presidio engine,
with its scopes, custom recognizers, keys and an LRU of analysis results for identical content.
:func:`scan_action` returns a :class:`Report`; the plane turns it into a ``PlaneResult``.
Imports Presidio (loaded lazily).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

from .._actions import Action, MediationPoint
from .._policy._load import Glob
from ._config import (
    BUILTIN_RULES,
    INBOUND_POINTS,
    NER_ENTITIES,
    REWRITING_ACTIONS,
    SECRET_ENTITIES,
    DataPlaneConfig,
    DataRule,
)
from ._crypto import TOKEN_RE, KeyHasher, Keyring, MissingKeyError, Pseudonymizer
from ._engine import Detection, PresidioEngine
from ._minimize import field_matches, minimize
from ._normalize import Normalized, canonical, normalize
from ._recognizers import OfflineEmailRecognizer, build_custom, secrets_in_field
from ._walk import Issue, Leaf, Walk, rebuild, walk

__all__ = ["CompiledConfig", "EntityPolicy", "Report", "Scope", "redact_value", "scan_action", "scan_text"]

_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]{0,39}(?:#[A-Za-z0-9_-]{22,4096}|:h:[0-9a-f]{20})?>")
"""Our own output (``<TYPE>``, pseudonym tokens, keyed hashes): never re-detected."""
_SECRETS = frozenset(SECRET_ENTITIES)
_FIELD_SECRETS = frozenset({"API_KEY", "PASSWORD"})
_COMPANY = re.compile(
    r"\b(?:inc|incorporated|corp|corporation|company|ltd|limited|llc|llp|plc|gmbh|ag|sas|bv|nv|group|holdings)\.?$",
    re.IGNORECASE,
)
_VERBS = {"redact": "redacted", "mask": "masked", "hash": "hashed", "pseudonymize": "pseudonymized", "allow": "found"}


@dataclass(frozen=True)
class EntityPolicy:
    action: str
    threshold: float
    labels: tuple[str, ...]
    replacement: str | None
    mask_char: str
    keep_last: int
    rule_id: str


@dataclass(frozen=True)
class Scope:
    """The merged data rules for one (point, tool, connector)."""

    point: MediationPoint
    tool: str | None
    connector: str | None
    rule_ids: tuple[str, ...]
    entities: Mapping[str, EntityPolicy]
    allow_list: frozenset[str]
    allow_regex: re.Pattern[str] | None
    context: tuple[str, ...]
    labels: frozenset[str]
    labels_rule: str | None
    deny_labels: Mapping[str, str]
    """label → the rule id that denies it."""
    minimize: tuple[str, ...] | None
    minimize_rule: str | None
    pseudonyms: Literal["keep", "block", "restore"]
    pseudonyms_rule: str | None
    evidence_keep: tuple[str, ...]
    ner_skip_fields: tuple[str, ...]
    oversize: Literal["block", "truncate"]
    binary: Literal["block", "strip"]
    reveal: bool
    """Results of the reveal tool: never rewritten (the evidence still is)."""
    pattern_entities: frozenset[str]
    ner_entities: frozenset[str]
    missing_ner: frozenset[str]
    """Entities only NER finds, which this engine cannot (no model installed)."""
    threshold_key: tuple[tuple[str, float], ...] = ()
    """The thresholds of the scope (part of the analysis cache key: the context enhancement
    depends on them)."""

    def below_threshold(self, entity: str, score: float) -> bool:
        """May context words still matter for this result? (Only when it does not pass yet.)"""
        pol = self.entities.get(entity)
        return pol is not None and score < pol.threshold


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[tuple[Any, ...], list[Detection]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple[Any, ...]) -> list[Detection] | None:
        if not self.size:
            return None
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return hit

    def put(self, key: tuple[Any, ...], value: list[Detection]) -> None:
        if not self.size:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class CompiledConfig:
    """A data plane configuration bound to the engine: scopes, recognizers, keys, cache."""

    def __init__(
        self,
        config: DataPlaneConfig,
        engine: PresidioEngine,
        *,
        keys: Sequence[bytes] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        lang = config.nlp.language
        self.ad_hoc = [OfflineEmailRecognizer(config.email_extra_tlds, lang), *(build_custom(r) for r in config.recognizers)]
        ad_hoc_entities = {e for r in self.ad_hoc for e in r.supported_entities}
        self.pattern_entities = engine.pattern_entities | ad_hoc_entities
        self.supported = engine.supported | ad_hoc_entities
        """Every entity some recognizer of this configuration detects."""
        # without a model, NER entities are reported as not scanned (a finding), not a config error
        unsupported = sorted({e for r in config.all_rules for e in r.entities} - self.supported - NER_ENTITIES)
        if unsupported:
            raise ValueError(f"no recognizer detects {', '.join(unsupported)} with this Presidio installation")
        self._rules = [
            (r, Glob(r.match.tools), Glob(r.match.connectors), r in BUILTIN_RULES and config.builtin_rules)
            for r in config.all_rules
        ]
        self._scopes: dict[tuple[Any, ...], Scope] = {}
        self._recs: dict[tuple[str, ...], list[Any]] = {}
        self._scopes_lock = threading.Lock()
        self.cache = _LRU(config.cache_size)
        self._keys = keys
        self._environ = environ
        self._keyring: Keyring | None = None
        self._key_error: MissingKeyError | None = None
        self._key_lock = threading.Lock()

    # ---- keys ---------------------------------------------------------------------------------

    def keyring(self) -> Keyring:
        with self._key_lock:
            if self._keyring is None and self._key_error is None:
                try:
                    self._keyring = Keyring.from_config(self.config.keys, self._environ, self._keys)
                except MissingKeyError as exc:
                    self._key_error = exc
            if self._key_error is not None:
                raise self._key_error
            assert self._keyring is not None
            return self._keyring

    def pseudonymizer(self) -> Pseudonymizer:
        return Pseudonymizer(self.keyring(), per_session=self.config.keys.per_session)

    def hasher(self) -> KeyHasher:
        return KeyHasher(self.keyring())

    # ---- scopes -------------------------------------------------------------------------------

    def scope(self, point: MediationPoint, tool: str | None, connector: str | None) -> Scope:
        key = (point, tool, connector)
        hit = self._scopes.get(key)
        if hit is not None:
            return hit
        scope = self._build_scope(point, tool, connector)
        with self._scopes_lock:
            if len(self._scopes) < 10_000:
                self._scopes[key] = scope
        return scope

    def _build_scope(self, point: MediationPoint, tool: str | None, connector: str | None) -> Scope:
        cfg = self.config
        matching: list[tuple[int, int, DataRule]] = []
        for order, (rule, tools, connectors, builtin) in enumerate(self._rules):
            m = rule.match
            if m.points and point not in m.points:
                continue
            if m.tools and not tools.matches(tool):
                continue
            if m.connectors and not connectors.matches(connector):
                continue
            matching.append((0 if builtin else m.specificity, order, rule))
        matching.sort(key=lambda t: (t[0], t[1]))
        entities: dict[str, EntityPolicy] = {}
        allow: set[str] = set()
        allow_re: list[str] = []
        context: list[str] = []
        labels: set[str] = set()
        labels_rule: str | None = None
        deny: dict[str, str] = {}
        evidence_keep: list[str] = []
        ner_skip: list[str] = list(cfg.ner_skip_fields)
        minimize_paths: tuple[str, ...] | None = None
        minimize_rule = pseudonyms_rule = None
        pseudonyms: Literal["keep", "block", "restore"] = "keep"
        oversize = cfg.limits.oversize
        binary = cfg.limits.binary
        for _, _, rule in matching:
            for name, er in rule.entities.items():
                entities[name] = EntityPolicy(
                    action=er.action,
                    threshold=er.threshold if er.threshold is not None else cfg.threshold(name),
                    labels=er.labels if er.labels is not None else cfg.labels_of(name),
                    replacement=er.replacement,
                    mask_char=er.mask_char,
                    keep_last=er.keep_last,
                    rule_id=rule.id,
                )
            allow.update(rule.allow_list)
            allow_re.extend(rule.allow_list_regex)
            context.extend(rule.context)
            if rule.labels:
                labels.update(rule.labels)
                labels_rule = rule.id
            for label in rule.deny_labels:
                deny[label] = rule.id
            evidence_keep.extend(rule.evidence_keep)
            ner_skip.extend(rule.ner_skip_fields)
            if rule.minimize is not None:
                minimize_paths, minimize_rule = rule.minimize, rule.id
            if rule.pseudonyms is not None:
                pseudonyms, pseudonyms_rule = rule.pseudonyms, rule.id
            if rule.oversize is not None:
                oversize = rule.oversize
            if rule.binary is not None:
                binary = rule.binary
        active = {k: v for k, v in entities.items() if v.action != "off"}
        names = frozenset(active)
        return Scope(
            point=point,
            tool=tool,
            connector=connector,
            rule_ids=tuple(r.id for _, _, r in matching),
            entities=active,
            allow_list=frozenset(allow),
            allow_regex=re.compile("|".join(f"(?:{r})" for r in allow_re), re.IGNORECASE) if allow_re else None,
            context=tuple(dict.fromkeys(context)),
            labels=frozenset(labels),
            labels_rule=labels_rule,
            deny_labels=deny,
            minimize=minimize_paths if point is MediationPoint.TOOL_CALL else None,
            minimize_rule=minimize_rule,
            pseudonyms=pseudonyms,
            pseudonyms_rule=pseudonyms_rule,
            evidence_keep=tuple(evidence_keep),
            ner_skip_fields=tuple(dict.fromkeys(ner_skip)),
            oversize=oversize,
            binary=binary,
            reveal=bool(cfg.reveal_tool and tool == cfg.reveal_tool and point is not MediationPoint.TOOL_CALL),
            pattern_entities=names & self.pattern_entities,
            ner_entities=names & self.engine.ner_entities,
            missing_ner=(names & NER_ENTITIES) - self.engine.ner_entities - self.pattern_entities,
            threshold_key=tuple(sorted((k, v.threshold) for k, v in active.items())),
        )

    # ---- analysis -----------------------------------------------------------------------------

    def detect(
        self,
        texts: Sequence[str],
        scope: Scope,
        ner: Sequence[bool],
        *,
        stages: tuple[str, ...] = ("regex", "ner"),
        fields: Sequence[str] | None = None,
        normalized: Sequence[Normalized] | None = None,
    ) -> list[list[Detection]]:
        """Detections per text (thresholds, allow lists and our placeholders applied), in the
        coordinates of ``texts``. Each text is normalized first (:mod:`._normalize`: percent-decoding,
        invisible characters, NFKC); detections on the normalized text map back to the whole
        original span they came from. ``fields``: the field name holding each text (a value of a
        ``password`` or ``api_key`` field is judged as assigned to it)."""
        norms = list(normalized) if normalized is not None else [normalize(t) for t in texts]
        texts = [n.text for n in norms]
        raw: list[list[Detection]] = [[] for _ in texts]
        if "regex" in stages and scope.pattern_entities:
            secret_keys = scope.pattern_entities & _FIELD_SECRETS
            for i, text in enumerate(texts):
                subset = _candidates(text, scope.pattern_entities)
                if subset:
                    raw[i].extend(self._regex(text, subset, scope))
                if fields is not None and secret_keys and fields[i]:
                    raw[i].extend(
                        Detection(e, s, end, score, "fiveplane-secret-fields")
                        for e, s, end, score in secrets_in_field(fields[i], text, secret_keys)
                    )
        if "ner" in stages and scope.ner_entities:
            want = sorted(scope.ner_entities)
            todo: dict[str, list[int]] = {}
            for i, text in enumerate(texts):
                if not ner[i]:
                    continue
                key = ("ner", _digest(text), tuple(want), scope.context, scope.threshold_key)
                hit = self.cache.get(key)
                if hit is not None:
                    raw[i].extend(hit)
                else:
                    todo.setdefault(text, []).append(i)
            if todo:
                batch = list(todo)
                for text, art in zip(batch, self.engine.ner_artifacts(batch), strict=True):
                    found = self.engine.analyze(
                        text,
                        want,
                        art,
                        context=scope.context,
                        recognizers=self._recognizers(tuple(want)),
                        needs_context=scope.below_threshold,
                    )
                    found = [d for d in found if d.entity in scope.ner_entities]
                    self.cache.put(("ner", _digest(text), tuple(want), scope.context, scope.threshold_key), found)
                    for i in todo[text]:
                        raw[i].extend(found)
        out: list[list[Detection]] = []
        for norm, dets in zip(norms, raw, strict=True):
            kept = self._filter(norm.text, dets, scope)
            if norm.changed and kept:
                kept = [Detection(d.entity, *norm.span(d.start, d.end), d.score, d.recognizer) for d in kept]
            out.append(kept)
        return out

    def _recognizers(self, entities: tuple[str, ...]) -> list[Any]:
        hit = self._recs.get(entities)
        if hit is None:
            hit = self.engine.recognizers(entities, self.ad_hoc)
            with self._scopes_lock:
                if len(self._recs) < 4096:
                    self._recs[entities] = hit
        return hit

    def _regex(self, text: str, entities: Sequence[str], scope: Scope) -> list[Detection]:
        """The regex stage on one text (cached by its digest, the entities, context words and thresholds)."""
        key = ("regex", _digest(text), tuple(entities), scope.context, scope.threshold_key)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        found = self.engine.analyze(
            text,
            entities,
            self.engine.light_artifacts(text),
            context=scope.context,
            recognizers=self._recognizers(tuple(entities)),
            needs_context=scope.below_threshold,
        )
        found = [d for d in found if d.entity in entities]
        self.cache.put(key, found)
        return found

    def _filter(self, text: str, dets: list[Detection], scope: Scope) -> list[Detection]:
        if not dets:
            return []
        best: dict[tuple[str, int, int], Detection] = {}
        for d in dets:
            k = (d.entity, d.start, d.end)
            if k not in best or best[k].score < d.score:
                best[k] = d
        own = [m.span() for m in _PLACEHOLDER.finditer(text)] if "<" in text else []
        out = []
        for d in best.values():
            pol = scope.entities.get(d.entity)
            if pol is None or d.score < pol.threshold:
                continue
            value = text[d.start : d.end]
            if value in scope.allow_list or (scope.allow_regex is not None and scope.allow_regex.fullmatch(value)):
                continue
            if any(s < d.end and d.start < e for s, e in own):
                continue
            if d.entity == "PERSON" and _COMPANY.search(value):
                continue  # "Globex Corporation": an organization the small models call a person
            out.append(d)
        out.sort(key=lambda d: (d.start, -d.end))
        return out


# ---- cheap prefilters ------------------------------------------------------------------------


def _candidates(text: str, entities: Iterable[str]) -> list[str]:
    """Entities whose recognizers could match ``text`` at all (necessary conditions only)."""
    if text.isascii():
        digits = len(text) - len(text.translate(_DROP_ASCII_DIGITS))
    else:
        digits = sum(c.isdigit() for c in text) if any(c.isdigit() for c in text[:4096]) or len(text) > 4096 else 0
    out = []
    for e in entities:
        need = _NEEDS.get(e)
        if need is None or need(text, digits):
            out.append(e)
    return sorted(out)


_DROP_ASCII_DIGITS = str.maketrans("", "", "0123456789")
_KEY_HINT = re.compile(
    r"AKIA|ASIA|ABIA|ACCA|gh[pousr]_|github_pat_|glpat-|xox[abposr]-|hooks\.slack|[sr]k_(?:live|test)_|sk-|AIza|SG\.|npm_|pypi-|hf_"
    r"|(?i:key|secret|token|bearer|passw|pwd|authoriz|credential)"
)
_PASS_HINT = re.compile(r"(?i:pass|secret)")
_NOT_A_PHONE = re.compile(
    r"\s*(?:\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?"
    r"|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"|[0-9a-f]{32,}|[0-9A-F]{32,}"
    r"|[A-Za-z][A-Za-z0-9]*(?:[_-][A-Za-z][A-Za-z0-9]*)*[_-]\d{1,9})\s*\Z"
)
"""A whole value shaped as an ISO date / timestamp, a UUID, a hex digest or a prefixed identifier
(``ACC-10442``, ``usr_12345678``) is not scanned for phone numbers: ``phonenumbers`` reads many of
them as numbers of some region (false positives) and matching them is the costliest recognizer."""
_NEEDS: dict[str, Callable[[str, int], bool]] = {
    "EMAIL_ADDRESS": lambda t, d: "@" in t,
    "PHONE_NUMBER": lambda t, d: d >= 5 and _NOT_A_PHONE.match(t) is None,
    "CREDIT_CARD": lambda t, d: d >= 12,
    "IBAN_CODE": lambda t, d: d >= 2 and len(t) >= 15,
    "US_SSN": lambda t, d: d >= 9,
    "US_ITIN": lambda t, d: d >= 9,
    "US_BANK_NUMBER": lambda t, d: d >= 8,
    "US_PASSPORT": lambda t, d: d >= 8,
    "UK_NHS": lambda t, d: d >= 10,
    "IP_ADDRESS": lambda t, d: ("." in t and d >= 4) or ":" in t,
    "MAC_ADDRESS": lambda t, d: d >= 2 and (":" in t or "-" in t or "." in t),
    "UUID": lambda t, d: "-" in t and len(t) >= 32,
    "URL": lambda t, d: "." in t,
    "JWT": lambda t, d: "eyJ" in t,
    "PRIVATE_KEY": lambda t, d: "PRIVATE KEY" in t or "PuTTY" in t,
    "CONNECTION_STRING": lambda t, d: "://" in t or "=" in t,
    "API_KEY": lambda t, d: len(t) >= 12 and (_KEY_HINT.search(t) is not None),
    "PASSWORD": lambda t, d: len(t) >= 6 and (_PASS_HINT.search(t) is not None),
    "CRYPTO": lambda t, d: len(t) >= 26 and d >= 1,
}


_NAMELESS = re.compile(r"[@/\\:=_{}<>#|]")


def may_hold_names(leaf: Leaf, scope: Scope) -> bool:
    """Should NER run on this leaf? Not on keys, numbers, identifiers, addresses or skipped fields."""
    if leaf.is_key or leaf.origin in ("int", "float") or len(leaf.text) < 2:
        return False
    text = leaf.text
    if not any(c.isalpha() for c in text):
        return False
    if not any(c.isspace() for c in text) and (any(c.isdigit() for c in text) or _NAMELESS.search(text)):
        return False
    return not field_matches(leaf.path, leaf.field, scope.ner_skip_fields)


# ---- operators ---------------------------------------------------------------------------------


class _Ops:
    """Per-action operator factory (keys are only needed if a keyed operator is used)."""

    def __init__(self, cc: CompiledConfig, session_id: str | None) -> None:
        self.cc = cc
        self.session_id = session_id
        self._pseudo: Pseudonymizer | None = None
        self._hasher: KeyHasher | None = None

    def pseudo(self) -> Pseudonymizer:
        if self._pseudo is None:
            self._pseudo = self.cc.pseudonymizer()
        return self._pseudo

    def operator(self, entity: str, pol: EntityPolicy) -> OperatorConfig:
        if pol.action == "redact" or pol.action not in REWRITING_ACTIONS:
            return OperatorConfig("replace", {"new_value": pol.replacement if pol.replacement is not None else f"<{entity}>"})
        if pol.action == "mask":
            char, keep = pol.mask_char, pol.keep_last
            return OperatorConfig(
                "custom",
                {"lambda": lambda v: _mask(canonical(v), char, keep)},
            )
        if pol.action == "hash":
            if self._hasher is None:
                self._hasher = self.cc.hasher()
            hasher = self._hasher
            return OperatorConfig("custom", {"lambda": lambda v: hasher.hash(entity, canonical(v))})
        pseudo, sid = self.pseudo(), self.session_id
        return OperatorConfig("custom", {"lambda": lambda v: pseudo.token(entity, canonical(v), sid)})

    def apply(self, text: str, dets: Sequence[Detection], ops: Mapping[str, OperatorConfig]) -> str:
        if not dets:
            return text
        results = [RecognizerResult(d.entity, d.start, d.end, d.score) for d in dets]
        return str(self.cc.engine.anonymizer.anonymize(text=text, analyzer_results=results, operators=dict(ops)).text)


def _mask(value: str, char: str, keep: int) -> str:
    if len(value) <= keep:
        return char * len(value)
    return char * (len(value) - keep) + value[len(value) - keep :]


# ---- the report --------------------------------------------------------------------------------


@dataclass
class Block:
    code: str
    message: str
    rule_id: str | None


@dataclass
class Report:
    scope: Scope
    blocks: list[Block] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    label_rules: set[str] = field(default_factory=set)
    minimized: list[str] = field(default_factory=list)
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(action, entity, rule id) → count of detections."""
    fields: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    """(action, entity) → leaf paths."""
    notes: list[tuple[str, str]] = field(default_factory=list)
    """(code, message) of non-blocking observations (truncation, normalization, NER missing)."""
    restored: int = 0
    modified_arguments: dict[str, Any] | None = None
    modified_content: Any = None
    content_modified: bool = False
    evidence_arguments: dict[str, Any] | None = None
    evidence_content: Any = None
    complete: bool = True
    """False when a cheap-stage block skipped NER (the evidence then needs a full scan)."""

    @property
    def blocked(self) -> bool:
        return bool(self.blocks)

    def rewritten(self) -> list[tuple[str, str, str, int]]:
        """(verb, entity, rule, count) of the rewrites."""
        return sorted((_VERBS[a], e, r, n) for (a, e, r), n in self.counts.items() if a in REWRITING_ACTIONS)


def _describe(counts: Iterable[tuple[str, int]]) -> str:
    items = sorted(counts, key=lambda t: (-t[1], t[0]))
    return ", ".join(f"{n} {e}" if n > 1 else e for e, n in items)


def scan_action(
    cc: CompiledConfig,
    scope: Scope,
    action: Action,
    *,
    session_labels: Iterable[str] = (),
    connector_labels: Iterable[str] = (),
    full: bool = False,
) -> Report:
    """Scan an action's arguments and content under ``scope``.

    ``full``: run every stage even once a cheap stage decided to block (for the evidence).
    """
    report = Report(scope=scope)
    limits = cc.config.limits
    point = action.point
    inbound = point in INBOUND_POINTS

    # 1. minimization (tool calls)
    arguments = action.arguments
    if scope.minimize is not None and arguments:
        arguments, removed = minimize(dict(arguments), scope.minimize)
        report.minimized = removed

    # 2. walk the payloads
    label_keys = frozenset(k.lower() for k in cc.config.metadata_label_keys) if inbound else frozenset()
    walks: dict[str, Walk] = {}
    budget = limits.max_total_chars
    for name, value, root in (("arguments", arguments, ""), ("content", action.content, "content")):
        if name == "arguments" and not value:
            continue
        if name == "content" and value is None:
            continue
        w = _walk(cc, value, budget=budget, label_keys=label_keys, root=root)
        budget -= w.total_chars
        walks[name] = w
    cut = _issues(report, scope, [i for w in walks.values() for i in w.issues])

    # 3. labels carried by the data
    if inbound:
        report.labels.update(connector_labels)
        for w in walks.values():
            report.labels.update(w.labels)
    if scope.labels and walks:
        report.labels.update(scope.labels)
        if scope.labels_rule:
            report.label_rules.add(scope.labels_rule)

    leaves = [(name, leaf) for name, w in walks.items() for leaf in w.leaves]
    texts = [leaf.text for _, leaf in leaves]
    reveal_out = scope.reveal

    # 4. pseudonym tokens already in the data
    tokens = [TOKEN_RE.findall(t) if "#" in t else [] for t in texts]
    if scope.pseudonyms == "block" and not reveal_out:
        found = Counter(e for ts in tokens for e, _ in ts)
        if found:
            report.blocks.append(
                Block(
                    "pseudonym_blocked",
                    f"pseudonymized {_describe(found.items())} may not reach {_where(action)}",
                    scope.pseudonyms_rule,
                )
            )

    # 5. cheap stage (regex) first; NER (batched) only if the action is not already blocked
    fields = [leaf.field if not leaf.is_key else "" for _, leaf in leaves]
    norms = [normalize(t) for t in texts]
    dets = cc.detect(texts, scope, [False] * len(texts), stages=("regex",), fields=fields, normalized=norms)
    cheap_block = bool(report.blocks) or (
        not reveal_out and any(scope.entities[d.entity].action == "block" for found in dets for d in found)
    )
    if cheap_block and not full:
        report.complete = False
    else:
        ner_flags = [may_hold_names(leaf, scope) for _, leaf in leaves]
        if any(ner_flags) and scope.missing_ner:
            report.notes.append(("ner_unavailable", f"{', '.join(sorted(scope.missing_ner))} not scanned: {cc.engine.warning}"))
        if any(ner_flags) and scope.ner_entities:
            ner = cc.detect(texts, scope, ner_flags, stages=("ner",), normalized=norms)
            dets = [_merge(a, b) if b else a for a, b in zip(dets, ner, strict=True)]
    _decide_blocks(report, scope, action, leaves, dets, reveal_out)

    # 6. deny labels (after detection labels are known)
    if scope.deny_labels:
        carried = set(session_labels) | set(action.labels) | report.labels
        for label in sorted(carried & set(scope.deny_labels)):
            report.blocks.append(
                Block("label_blocked", f"data labelled {label} may not reach {_where(action)}", scope.deny_labels[label])
            )

    # 7. rewrite (or only compute the evidence when blocked)
    ops = _Ops(cc, action.session_id)
    try:
        out_maps, ev_maps = _rewrite(cc, scope, ops, leaves, dets, tokens, report, reveal_out)
    except MissingKeyError as exc:
        report.blocks.append(Block("key_missing", str(exc), "data.keys"))
        out_maps, ev_maps = _rewrite(cc, scope, ops, leaves, dets, tokens, report, True, evidence_only=True)

    for name, w in walks.items():
        out_changed = bool(out_maps[name]) or (name == "arguments" and bool(report.minimized)) or (cut and _has_cut(w))
        if name == "arguments":
            report.evidence_arguments = rebuild(w.skeleton, w.leaves, ev_maps[name], cut=True)
            if out_changed and not report.blocked:
                report.modified_arguments = rebuild(w.skeleton, w.leaves, out_maps[name], cut=True)
        else:
            report.evidence_content = rebuild(w.skeleton, w.leaves, ev_maps[name], cut=True)
            if out_changed and not report.blocked:
                report.modified_content = rebuild(w.skeleton, w.leaves, out_maps[name], cut=True)
                report.content_modified = True
    if "arguments" not in walks:
        report.evidence_arguments = dict(arguments) if arguments else {}
        if report.minimized and not report.blocked:
            report.modified_arguments = dict(arguments)
    return report


def _walk(cc: CompiledConfig, value: Any, *, budget: int, label_keys: frozenset[str], root: str) -> Walk:
    limits = cc.config.limits
    return walk(
        value,
        max_text_chars=limits.max_text_chars,
        max_total_chars=max(1, budget),
        max_depth=limits.max_depth,
        max_leaves=limits.max_leaves,
        base64_min_chars=limits.base64_min_chars,
        label_keys=label_keys,
        root=root,
        parse_json=cc.config.parse_json_strings,
    )


def redact_value(cc: CompiledConfig, scope: Scope, value: Any, session_id: str | None) -> Any:
    """``value`` (any text or JSON-like value) as the evidence may keep it under ``scope``: every
    detected value rewritten (``hash`` / ``pseudonymize`` with the keys, ``<TYPE>`` without them) or
    redacted to ``<TYPE>`` (``block`` and ``allow`` entities too), except in ``evidence_keep`` fields
    (secrets are redacted there as well); what cannot be scanned becomes a marker. Never raises for
    what the data carries (a scan failure raises; the caller stores a digest instead)."""
    w = _walk(cc, value, budget=cc.config.limits.max_total_chars, label_keys=frozenset(), root="")
    leaves = [("content", leaf) for leaf in w.leaves]
    texts = [leaf.text for _, leaf in leaves]
    fields = [leaf.field if not leaf.is_key else "" for _, leaf in leaves]
    dets = cc.detect(texts, scope, [may_hold_names(leaf, scope) for _, leaf in leaves], fields=fields) if texts else []
    report = Report(scope=scope)
    tokens: list[list[tuple[str, str]]] = [[] for _ in texts]
    ops = _Ops(cc, session_id)
    try:
        _, ev = _rewrite(cc, scope, ops, leaves, dets, tokens, report, True)
    except MissingKeyError:
        _, ev = _rewrite(cc, scope, ops, leaves, dets, tokens, report, True, evidence_only=True)
    return rebuild(w.skeleton, w.leaves, ev["content"], cut=True)


def _where(action: Action) -> str:
    if action.tool:
        return action.tool
    return {
        MediationPoint.FINAL_OUTPUT: "the final answer",
        MediationPoint.MODEL_OUTPUT: "the model output",
        MediationPoint.DELEGATION: "the delegated agent",
    }.get(action.point, action.point.value.replace("_", " "))


def _has_cut(w: Walk) -> bool:
    return any(i.kind != "invalid_text" for i in w.issues) or any(leaf.truncated_from for leaf in w.leaves)


def _issues(report: Report, scope: Scope, issues: list[Issue]) -> bool:
    """Decide each walk issue; returns True when something is cut (truncate / strip)."""
    cut = False
    grouped: dict[str, list[Issue]] = {}
    for issue in issues:
        grouped.setdefault(issue.kind, []).append(issue)
    for kind, items in grouped.items():
        paths = ", ".join(dict.fromkeys(i.path for i in items[:5])) + (" ..." if len(items) > 5 else "")
        detail = items[0].detail
        if kind == "invalid_text":
            report.notes.append(("invalid_text", f"invalid code points replaced by U+FFFD in {paths}"))
        elif kind == "unsupported":
            report.blocks.append(
                Block("unscannable", f"{detail} ({paths}): it cannot be scanned, so it may not pass", "data.limits")
            )
        elif kind == "binary":
            if scope.binary == "block":
                report.blocks.append(
                    Block("binary", f"binary data ({paths}) cannot be scanned, so it may not pass", "data.limits.binary")
                )
            else:
                cut = True
                report.notes.append(("binary_stripped", f"binary data removed from {paths}"))
        elif scope.oversize == "block":
            report.blocks.append(
                Block("oversize", f"the payload is over the data plane's limits ({detail}: {paths})", "data.limits")
            )
        else:
            cut = True
            report.notes.append(("truncated", f"cut to the data plane's limits ({detail}: {paths})"))
    return cut


def _merge(a: list[Detection], b: list[Detection]) -> list[Detection]:
    seen = {(d.entity, d.start, d.end) for d in a}
    out = a + [d for d in b if (d.entity, d.start, d.end) not in seen]
    out.sort(key=lambda d: (d.start, -d.end))
    return out


def _decide_blocks(
    report: Report,
    scope: Scope,
    action: Action,
    leaves: list[tuple[str, Leaf]],
    dets: list[list[Detection]],
    reveal_out: bool,
) -> None:
    blocked: dict[tuple[str, str], set[str]] = {}
    for (_, leaf), found in zip(leaves, dets, strict=True):
        for d in found:
            pol = scope.entities[d.entity]
            report.counts[(pol.action, d.entity, pol.rule_id)] += 1
            report.fields.setdefault((pol.action, d.entity), set()).add(leaf.path.removesuffix(".<key>"))
            report.labels.update(pol.labels)
            if pol.action == "block" and not reveal_out:
                blocked.setdefault((d.entity, pol.rule_id), set()).add(leaf.path.removesuffix(".<key>"))
    for (entity, rule_id), paths in sorted(blocked.items()):
        code = "secret_blocked" if entity in _SECRETS else "pii_blocked"
        shown = ", ".join(sorted(paths)[:5])
        report.blocks.append(Block(code, f"{entity} in {shown} may not reach {_where(action)}", rule_id))


def _rewrite(
    cc: CompiledConfig,
    scope: Scope,
    ops: _Ops,
    leaves: list[tuple[str, Leaf]],
    dets: list[list[Detection]],
    tokens: list[list[tuple[str, str]]],
    report: Report,
    reveal_out: bool,
    *,
    evidence_only: bool = False,
) -> tuple[dict[str, dict[int, str]], dict[str, dict[int, str]]]:
    """Per walk: leaf index → output text, and leaf index → evidence text."""
    out: dict[str, dict[int, str]] = {"arguments": {}, "content": {}}
    ev: dict[str, dict[int, str]] = {"arguments": {}, "content": {}}
    operators: dict[str, OperatorConfig] = {}
    redact_all: dict[str, OperatorConfig] = {}
    restore = scope.pseudonyms == "restore" and not reveal_out

    def op(entity: str, *, evidence: bool) -> OperatorConfig:
        pol = scope.entities[entity]
        if evidence and pol.action not in REWRITING_ACTIONS:
            if entity not in redact_all:
                redact_all[entity] = OperatorConfig("replace", {"new_value": f"<{entity}>"})
            return redact_all[entity]
        if entity not in operators:
            if evidence_only and pol.action in ("hash", "pseudonymize"):
                operators[entity] = OperatorConfig("replace", {"new_value": f"<{entity}>"})
            else:
                operators[entity] = ops.operator(entity, pol)
        return operators[entity]

    for (name, leaf), found, toks in zip(leaves, dets, tokens, strict=True):
        marker = f"…[truncated {leaf.truncated_from - len(leaf.text)} characters]" if leaf.truncated_from else ""
        keep = bool(scope.evidence_keep) and field_matches(leaf.path, leaf.field, scope.evidence_keep)
        rewrite = [d for d in found if scope.entities[d.entity].action in REWRITING_ACTIONS]
        # evidence: everything detected is rewritten or redacted (kept fields: only secrets and rewrites)
        ev_dets = [d for d in found if not keep or d.entity in _SECRETS or d in rewrite]
        ev_ops = {d.entity: op(d.entity, evidence=True) for d in ev_dets}
        ev_text = ops.apply(leaf.text, ev_dets, ev_ops)
        if ev_text != leaf.text or marker or leaf.sanitized:
            ev[name][leaf.index] = ev_text + marker
        if evidence_only or reveal_out:
            if marker or leaf.sanitized:
                out[name][leaf.index] = leaf.text + marker
            continue
        text = leaf.text
        if rewrite and ev_dets == rewrite:
            text = ev_text  # the same detections with the same (deterministic) operators
        elif rewrite:
            text = ops.apply(text, rewrite, {d.entity: op(d.entity, evidence=False) for d in rewrite})
        if restore and toks:
            pseudo = ops.pseudo()
            for entity, payload in dict.fromkeys(toks):
                value = pseudo.reveal(entity, payload, ops.session_id)
                if value is None:
                    report.notes.append(("pseudonym_invalid", f"a {entity} token in {leaf.path} does not reveal in this session"))
                    continue
                text = text.replace(f"<{entity}#{payload}>", value)
                report.restored += 1
        if text != leaf.text or marker or leaf.sanitized:
            out[name][leaf.index] = text + marker
    return out, ev


def scan_text(cc: CompiledConfig, scope: Scope, text: str, session_id: str | None) -> tuple[str, list[Detection], list[Block]]:
    """One text (streaming): (output, detections, blocks) under ``scope``; NER always considered."""
    leaf = Leaf(0, "content", "content", text, text)
    dets = cc.detect([text], scope, [may_hold_names(leaf, scope)])[0]
    blocks: list[Block] = []
    rewrite = []
    for d in dets:
        pol = scope.entities[d.entity]
        if pol.action == "block":
            code = "secret_blocked" if d.entity in _SECRETS else "pii_blocked"
            blocks.append(Block(code, f"{d.entity} may not reach the output", pol.rule_id))
        elif pol.action in REWRITING_ACTIONS:
            rewrite.append(d)
    if blocks:
        return text, dets, blocks
    ops = _Ops(cc, session_id)
    out = ops.apply(text, rewrite, {d.entity: ops.operator(d.entity, scope.entities[d.entity]) for d in rewrite})
    return out, dets, blocks
