"""The data plane's configuration: the ``planes: {data: ...}`` section of a policy pack.

One set of pydantic models serves YAML and Python alike (a pack's section is validated with
:class:`DataPlaneConfig`; Python code builds the same objects), so both paths share every default
(the lesson of Presidio#2242, where the YAML path defaulted ``deny_list_score`` to 0.0 and the
Python path to 1.0). Defaults that mirror Presidio's Python API (``deny_list_score``, regex flags,
the supported language) are module constants checked against Presidio's own signatures by a test.

This module imports neither Presidio nor spaCy.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._actions import MediationPoint
from .._policy._models import ApprovalSpec

__all__ = [
    "BUILTIN_ENTITY_LABELS",
    "BUILTIN_RULES",
    "BUILTIN_THRESHOLDS",
    "DEFAULT_NER_SKIP_FIELDS",
    "DEFAULT_THRESHOLD",
    "DENY_LIST_SCORE",
    "ENTITY_GROUPS",
    "INBOUND_POINTS",
    "NER_ENTITIES",
    "OUTBOUND_POINTS",
    "PRESIDIO_ENTITIES",
    "PRESIDIO_REGEX_FLAGS",
    "RESERVED_TLDS",
    "REWRITING_ACTIONS",
    "SECRET_ENTITIES",
    "CustomRecognizer",
    "DataMatch",
    "DataPlaneConfig",
    "DataRule",
    "EntityAction",
    "EntityRule",
    "KeysConfig",
    "Limits",
    "NlpConfig",
    "PatternSpec",
]

EntityAction = Literal["block", "require_approval", "redact", "mask", "hash", "pseudonymize", "allow", "off"]
"""What happens to a detected value: ``block`` the action; ``require_approval`` (tool calls and
delegations only: the action waits for a person, the rule's ``approval:`` or the pack's
``defaults.approval`` naming who); rewrite it (``redact`` → ``<TYPE>``, ``mask`` → ``****1234``,
``hash`` → keyed HMAC, ``pseudonymize`` → a keyed, reversible token); ``allow`` it (report and label
only); or ``off`` (do not look for this entity here)."""

APPROVAL_POINTS = frozenset({MediationPoint.TOOL_CALL, MediationPoint.DELEGATION})
"""Where an entity may ask for approval: an action that has not run yet can wait for a person."""

REWRITING_ACTIONS = frozenset({"redact", "mask", "hash", "pseudonymize"})

SECRET_ENTITIES = ("API_KEY", "PASSWORD", "PRIVATE_KEY", "JWT", "CONNECTION_STRING")
"""Entities of the secrets recognizers (see :mod:`._recognizers`)."""

ENTITY_GROUPS: dict[str, tuple[str, ...]] = {"SECRETS": SECRET_ENTITIES}
"""Aliases usable as keys of ``entities:``; ``SECRETS: block`` sets all five secret entities."""

NER_ENTITIES = frozenset({"PERSON", "LOCATION", "NRP", "ORGANIZATION", "DATE_TIME"})
"""Entities that the spaCy NER model produces (``DATE_TIME`` also has a regex recognizer)."""

PRESIDIO_ENTITIES = frozenset(
    {
        "CREDIT_CARD",
        "CRYPTO",
        "DATE_TIME",
        "EMAIL_ADDRESS",
        "IBAN_CODE",
        "IP_ADDRESS",
        "LOCATION",
        "MAC_ADDRESS",
        "MEDICAL_LICENSE",
        "NRP",
        "PERSON",
        "PHONE_NUMBER",
        "UK_NHS",
        "URL",
        "US_BANK_NUMBER",
        "US_DRIVER_LICENSE",
        "US_ITIN",
        "US_PASSPORT",
        "US_SSN",
        "UUID",
    }
)
"""English entities of presidio-analyzer's predefined recognizers that packs may name (a test checks
each one is supported by the installed Presidio). ``ORGANIZATION`` is left out as Presidio's default
NER configuration ignores it (too many false positives)."""

INBOUND_POINTS = (MediationPoint.INPUT, MediationPoint.TOOL_RESULT, MediationPoint.RETRIEVAL)
"""Data coming towards the model."""
OUTBOUND_POINTS = (MediationPoint.TOOL_CALL, MediationPoint.MODEL_OUTPUT, MediationPoint.FINAL_OUTPUT, MediationPoint.DELEGATION)
"""Data leaving towards a tool, a sub-agent or the user."""

DENY_LIST_SCORE = 1.0
"""Presidio ``PatternRecognizer(deny_list_score=1.0)``: the Python default, used by YAML too."""
PRESIDIO_REGEX_FLAGS: tuple[Literal["DOTALL", "MULTILINE", "IGNORECASE"], ...] = ("DOTALL", "MULTILINE", "IGNORECASE")
"""Presidio ``PatternRecognizer(global_regex_flags=re.DOTALL | re.MULTILINE | re.IGNORECASE)``."""
PRESIDIO_LANGUAGE = "en"

DEFAULT_THRESHOLD = 0.3
"""Minimum score of a detection when neither the rule nor ``thresholds`` names its entity."""
BUILTIN_THRESHOLDS: dict[str, float] = {
    "US_SSN": 0.3,
    "PHONE_NUMBER": 0.3,
    "IP_ADDRESS": 0.5,
    "DATE_TIME": 0.6,
    "URL": 0.6,
    "US_DRIVER_LICENSE": 0.5,
    "US_BANK_NUMBER": 0.5,
}
"""Per-entity defaults chosen on the labelled corpus (``bench/bench_data.py``): they drop only the
"very weak" patterns Presidio scores at 0.05-0.1, which keeps recall equal to a bare engine's."""

BUILTIN_ENTITY_LABELS: dict[str, tuple[str, ...]] = {
    **{e: ("SECRET",) for e in SECRET_ENTITIES},
    "CREDIT_CARD": ("PII", "FINANCIAL"),
    "IBAN_CODE": ("PII", "FINANCIAL"),
    "US_BANK_NUMBER": ("PII", "FINANCIAL"),
    "CRYPTO": ("FINANCIAL",),
    "URL": (),
    "DATE_TIME": (),
    "UUID": (),
    "ORGANIZATION": (),
    "*": ("PII",),
}
"""Session labels a detection adds, by entity (``*``: any other entity)."""

DEFAULT_NER_SKIP_FIELDS = (
    "id",
    "*_id",
    "*Id",
    "*_ids",
    "uuid",
    "*_uuid",
    "url",
    "*_url",
    "uri",
    "href",
    "status",
    "*_at",
    "timestamp",
    "*hash",
    "checksum",
    "etag",
    "mime_type",
    "content_type",
)
"""Argument / result fields (globs on the field name) that cannot hold names: no NER runs on them
(regex recognizers still do)."""

RESERVED_TLDS = ("example", "test", "invalid", "localhost", "local", "internal", "corp", "home", "lan", "intranet")
"""Top-level domains accepted by the e-mail recognizer besides the public suffix list (RFC 2606 /
6761 / 6762 names and common internal ones): ``jane@globex.example`` is an e-mail address too."""

_ENTITY = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]*$")
_GLOB = re.compile(r"^[A-Za-z0-9_*?\[\]!][A-Za-z0-9_.:/*?\[\]!-]*$")
_LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _compile_regexes(values: tuple[str, ...], what: str) -> tuple[str, ...]:
    for v in values:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"invalid {what} {v!r}: {exc}") from None
    return values


def _labels(values: tuple[str, ...]) -> tuple[str, ...]:
    for v in values:
        if not _LABEL.match(v):
            raise ValueError(f"invalid label {v!r}")
    return tuple(v.upper() for v in values)


class EntityRule(_Strict):
    """How one entity is treated in a scope. YAML shorthand: ``PERSON: pseudonymize``."""

    action: EntityAction
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Minimum score; ``None``: the plane's ``thresholds`` / built-in default for the entity."""
    labels: tuple[str, ...] | None = None
    """Session labels a detection adds; ``None``: the plane's ``entity_labels``."""
    replacement: str | None = None
    """For ``redact``: the text put in place of the value (default ``<ENTITY>``)."""
    mask_char: str = Field(default="*", min_length=1, max_length=1)
    keep_last: int = Field(default=4, ge=0)
    """For ``mask``: how many trailing characters stay visible."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"action": value} if isinstance(value, str) else value

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if v is None else _labels(v)


class DataMatch(_Strict):
    """Which actions a data rule applies to; an empty list matches anything."""

    points: tuple[MediationPoint, ...] = ()
    tools: tuple[str, ...] = ()
    """Tool globs."""
    connectors: tuple[str, ...] = ()
    """Connector globs (the connector of the tool, from the policy's catalog)."""

    @field_validator("tools", "connectors")
    @classmethod
    def _globs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for g in v:
            if not _GLOB.match(g):
                raise ValueError(f"invalid glob {g!r}")
        return v

    @property
    def specificity(self) -> int:
        """Tool rules beat connector rules beat point-only rules (then file order)."""
        return 3 if self.tools else 2 if self.connectors else 1


class DataRule(_Strict):
    """One scope of data handling. Every matching rule applies; per setting, the most specific wins.

    Specificity: a rule naming ``tools`` beats one naming ``connectors`` beats one naming only
    ``points`` (or nothing); among equals the later rule wins; the built-in rules come first of
    all. ``entities`` merge per entity; lists (allow lists, context, labels, ``deny_labels``,
    ``evidence_keep``, ``ner_skip_fields``) add up; the other settings are taken from the most
    specific rule that sets them.
    """

    id: str
    description: str = ""
    match: DataMatch = Field(default_factory=DataMatch)
    entities: dict[str, EntityRule] = Field(default_factory=dict)
    """Entity → action (``SECRETS`` stands for the four secret entities)."""
    allow_list: tuple[str, ...] = ()
    """Values never treated as sensitive (exact, case-sensitive match of the detected text)."""
    allow_list_regex: tuple[str, ...] = ()
    """Regexes a detected text must match *entirely* (case-insensitive) to be allowed. Unlike
    Presidio's ``allow_list_match="regex"`` (``search``), a partial match does not allow."""
    context: tuple[str, ...] = ()
    """Words treated as surrounding every detection here (Presidio's ``context=``): a detection
    whose recognizer lists one of them as a context word gets its score raised."""
    labels: tuple[str, ...] = ()
    """Labels added to the session whenever this rule sees data (e.g. ``CUSTOMER_DATA``)."""
    deny_labels: tuple[str, ...] = ()
    """Block when the session (or the action) carries one of these labels."""
    minimize: tuple[str, ...] | None = None
    """For tool calls: the argument fields the tool may receive (dotted paths, ``*`` globs per
    segment; lists are traversed). Everything else is stripped (verdict ``modify``)."""
    pseudonyms: Literal["keep", "block", "restore"] | None = None
    """Pseudonym tokens found in the data: leave them (``keep``, default), ``block`` the action, or
    ``restore`` the clear values before the tool runs (a governed, recorded de-pseudonymization)."""
    evidence_keep: tuple[str, ...] = ()
    """Fields kept in clear in the evidence (e.g. an e-mail's ``to``); secrets are still redacted."""
    ner_skip_fields: tuple[str, ...] = ()
    """More field globs on which no NER runs (see ``DataPlaneConfig.ner_skip_fields``)."""
    oversize: Literal["block", "truncate"] | None = None
    """Overrides ``limits.oversize`` here."""
    binary: Literal["block", "strip"] | None = None
    """Overrides ``limits.binary`` here."""
    approval: ApprovalSpec | None = None
    """Who approves an action carrying an entity this rule sets to ``require_approval`` (default:
    the pack's ``defaults.approval``; with neither, such an action is blocked, saying so)."""

    @model_validator(mode="after")
    def _approval_points(self) -> DataRule:
        asks = sorted(e for e, r in self.entities.items() if r.action == "require_approval")
        if asks and (not self.match.points or not set(self.match.points) <= APPROVAL_POINTS):
            raise ValueError(
                f"{', '.join(asks)}: require_approval needs `match.points` limited to tool_call / delegation "
                "(only an action that has not run yet can wait for a person; use block elsewhere)"
            )
        if self.approval is not None and not asks:
            raise ValueError("`approval:` applies to a rule with a require_approval entity")
        return self

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"invalid rule id {v!r}")
        return v

    @field_validator("entities", mode="after")
    @classmethod
    def _entities(cls, v: dict[str, EntityRule]) -> dict[str, EntityRule]:
        out: dict[str, EntityRule] = {}
        for name, rule in v.items():
            if not _ENTITY.match(name):
                raise ValueError(f"invalid entity name {name!r} (upper case, e.g. EMAIL_ADDRESS)")
            for entity in ENTITY_GROUPS.get(name, (name,)):
                out[entity] = rule
        return out

    @field_validator("allow_list_regex")
    @classmethod
    def _regexes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _compile_regexes(v, "allow_list_regex")

    @field_validator("labels", "deny_labels")
    @classmethod
    def _label_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _labels(v)

    @field_validator("minimize")
    @classmethod
    def _minimize(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None:
            for path in v:
                if not path or any(not seg for seg in path.split(".")):
                    raise ValueError(f"invalid field path {path!r}")
        return v


class PatternSpec(_Strict):
    """A regex of a custom recognizer (Presidio ``Pattern(name, regex, score)``)."""

    name: str = Field(min_length=1)
    regex: str = Field(min_length=1)
    score: float = Field(ge=0.0, le=1.0)

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str) -> str:
        _compile_regexes((v,), "regex")
        return v


class CustomRecognizer(_Strict):
    """A pattern / deny-list recognizer, with the field names and defaults of Presidio's
    ``PatternRecognizer`` (and of its YAML recognizer format)."""

    name: str = Field(min_length=1)
    supported_entity: str
    patterns: tuple[PatternSpec, ...] = ()
    deny_list: tuple[str, ...] = ()
    deny_list_score: float = Field(default=DENY_LIST_SCORE, ge=0.0, le=1.0)
    context: tuple[str, ...] = ()
    supported_language: str = PRESIDIO_LANGUAGE
    regex_flags: tuple[Literal["DOTALL", "MULTILINE", "IGNORECASE"], ...] = PRESIDIO_REGEX_FLAGS

    @field_validator("supported_entity")
    @classmethod
    def _entity(cls, v: str) -> str:
        if not _ENTITY.match(v):
            raise ValueError(f"invalid entity name {v!r} (upper case, e.g. EMPLOYEE_ID)")
        return v

    @model_validator(mode="after")
    def _something(self) -> CustomRecognizer:
        if not self.patterns and not self.deny_list:
            raise ValueError(f"recognizer {self.name!r} needs `patterns` or `deny_list`")
        return self


class NlpConfig(_Strict):
    """The spaCy model behind NER (PERSON, LOCATION, ...). Nothing is ever downloaded at run time."""

    model: str = "en_core_web_lg"
    """The spaCy model package (production: ``en_core_web_lg``)."""
    fallback: tuple[str, ...] = ()
    """Models tried, in order, when ``model`` is not installed (each use logs a warning)."""
    language: str = PRESIDIO_LANGUAGE
    pipeline: Literal["fast", "full"] = "fast"
    """``fast`` loads only the NER component (lemmas fall back to lower-cased tokens, which
    Presidio's substring context matching handles); ``full`` loads everything but the parser."""
    on_missing: Literal["regex_only", "error"] = "regex_only"
    """No model installed: run the regex recognizers only (Presidio's ``NoOpNlpEngine``, with a
    visible warning and a finding on every decision that needed NER) or fail (every action blocks)."""


class Limits(_Strict):
    """Bad input: nothing passes unscanned; what cannot be scanned is blocked or cut."""

    max_text_chars: int = Field(default=100_000, ge=1)
    """One string longer than this is oversize."""
    max_total_chars: int = Field(default=2_000_000, ge=1)
    """All strings of one action together."""
    max_depth: int = Field(default=32, ge=1)
    """Nesting of dicts and lists."""
    max_leaves: int = Field(default=20_000, ge=1)
    """Strings, numbers and keys of one action."""
    oversize: Literal["block", "truncate"] = "block"
    """``truncate`` keeps (and scans) the first ``max_text_chars`` of a string and drops what is
    too deep or too many, marking the cut; ``block`` stops the action."""
    binary: Literal["block", "strip"] = "block"
    """Bytes that are not UTF-8 text, and base64 blobs that decode to binary: ``strip`` replaces
    them with a placeholder; ``block`` stops the action."""
    base64_min_chars: int = Field(default=256, ge=16)
    """A string of at least this many base64 characters (or a ``data:`` URL) is decoded and its
    content scanned (text) or treated as binary."""


class KeysConfig(_Strict):
    """Where the keys of ``pseudonymize`` and ``hash`` come from: environment variables (or the
    ``keys=`` argument of :class:`DataPlane`), never the policy file."""

    pseudonym_key_env: str = "FIVEPLANE_PSEUDONYM_KEY"
    """Base64 (or hex) of a 32-, 48- or 64-byte AES-SIV key."""
    previous_key_envs: tuple[str, ...] = ()
    """Older keys, still accepted to reveal tokens (key rotation)."""
    hash_key_env: str | None = None
    """HMAC key for ``hash``; default: derived from the pseudonym key (HKDF)."""
    missing: Literal["error", "ephemeral"] = "error"
    """No key set: fail (actions needing a key block) or use a random per-process key (with a
    warning; tokens cannot be revealed after a restart)."""
    per_session: bool = True
    """Bind pseudonyms to the session: the same value gets another token in another session, and
    a token only reveals inside its session."""


class DataPlaneConfig(_Strict):
    """``planes: {data: ...}`` of a policy pack."""

    nlp: NlpConfig = Field(default_factory=NlpConfig)
    limits: Limits = Field(default_factory=Limits)
    keys: KeysConfig = Field(default_factory=KeysConfig)
    builtin_rules: bool = True
    """Start from :data:`BUILTIN_RULES` (secrets blocked outbound and redacted inbound; card
    numbers, SSNs and IBANs redacted; contact details reported and labelled)."""
    rules: tuple[DataRule, ...] = ()
    default_threshold: float = Field(default=DEFAULT_THRESHOLD, ge=0.0, le=1.0)
    thresholds: dict[str, float] = Field(default_factory=dict)
    """Per-entity minimum scores, over :data:`BUILTIN_THRESHOLDS`."""
    entity_labels: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Per-entity session labels, over :data:`BUILTIN_ENTITY_LABELS`."""
    metadata_label_keys: tuple[str, ...] = ("classification", "sensitivity", "labels")
    """In results and retrievals, the values of these keys (e.g. a document's
    ``metadata.classification: CONFIDENTIAL``) become session labels."""
    recognizers: tuple[CustomRecognizer, ...] = ()
    email_extra_tlds: tuple[str, ...] = RESERVED_TLDS
    ner_skip_fields: tuple[str, ...] = DEFAULT_NER_SKIP_FIELDS
    parse_json_strings: bool = True
    """Strings holding a JSON object or array (a tool result as ``json.dumps(rows)``) are parsed and
    scanned field by field (field rules apply); a rewritten one is serialized again."""
    cache_size: int = Field(default=4096, ge=0)
    """Analysis results kept per process for identical content (0: no cache)."""
    stream_window: int = Field(default=256, ge=32)
    """Look-back window (characters) of the streaming redactor: a value split across chunks up to
    this long is still caught; at most this much output is held back."""
    reveal_tool: str | None = None
    """The catalogued tool through which pseudonyms are revealed (see ``DataPlane.reveal_tool``);
    its results are not rewritten again (the evidence still is)."""

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: dict[str, float]) -> dict[str, float]:
        for name, score in v.items():
            if not _ENTITY.match(name):
                raise ValueError(f"invalid entity name {name!r}")
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"threshold of {name} must be between 0 and 1")
        return v

    @field_validator("entity_labels")
    @classmethod
    def _entity_labels(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        return {k: _labels(tuple(labels)) for k, labels in v.items()}

    @model_validator(mode="after")
    def _check(self) -> DataPlaneConfig:
        ids = [r.id for r in self.all_rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate data rule ids: {', '.join(dupes)}")
        known = self.known_entities
        for rule in self.rules:
            unknown = sorted(set(rule.entities) - known)
            if unknown:
                raise ValueError(
                    f"rule {rule.id!r} names entities no recognizer detects: {', '.join(unknown)} "
                    f"(add a custom recognizer under `recognizers:`)"
                )
        names = [r.name for r in self.recognizers]
        if len(set(names)) != len(names):
            raise ValueError("custom recognizer names must be unique")
        for r in self.recognizers:
            if r.supported_language != self.nlp.language:
                raise ValueError(
                    f"recognizer {r.name!r} is for {r.supported_language!r}, but the plane analyzes {self.nlp.language!r}: it would never run"
                )
        return self

    @property
    def known_entities(self) -> frozenset[str]:
        return PRESIDIO_ENTITIES | frozenset(SECRET_ENTITIES) | {r.supported_entity for r in self.recognizers}

    @property
    def all_rules(self) -> tuple[DataRule, ...]:
        """The built-in rules (if enabled) followed by the pack's rules."""
        return (BUILTIN_RULES if self.builtin_rules else ()) + self.rules

    def threshold(self, entity: str) -> float:
        return self.thresholds.get(entity, BUILTIN_THRESHOLDS.get(entity, self.default_threshold))

    def labels_of(self, entity: str) -> tuple[str, ...]:
        merged = {**BUILTIN_ENTITY_LABELS, **self.entity_labels}
        return merged.get(entity, merged.get("*", ()))

    @classmethod
    def from_policy(cls, policy: Any) -> DataPlaneConfig:
        """The validated ``planes: {data: ...}`` section of a :class:`fiveplane.Policy` (or defaults)."""
        return cls.model_validate(policy.planes.get("data", {}))


BUILTIN_RULES: tuple[DataRule, ...] = (
    DataRule(
        id="data.builtin.pii",
        description="Everywhere: card numbers, SSNs and IBANs are redacted; contact details are reported and labelled.",
        entities={
            "CREDIT_CARD": EntityRule(action="redact"),
            "US_SSN": EntityRule(action="redact"),
            "IBAN_CODE": EntityRule(action="redact"),
            "EMAIL_ADDRESS": EntityRule(action="allow"),
            "PHONE_NUMBER": EntityRule(action="allow"),
            "IP_ADDRESS": EntityRule(action="allow"),
            "PERSON": EntityRule(action="allow"),
        },
    ),
    DataRule(
        id="data.builtin.secrets-inbound",
        description="Secrets in data coming towards the model are redacted.",
        match=DataMatch(points=INBOUND_POINTS),
        entities={e: EntityRule(action="redact") for e in SECRET_ENTITIES},
    ),
    DataRule(
        id="data.builtin.secrets-outbound",
        description="Secrets never leave: tool arguments, model output, final answers and delegations carrying one are blocked.",
        match=DataMatch(points=OUTBOUND_POINTS),
        entities={e: EntityRule(action="block") for e in SECRET_ENTITIES},
    ),
)
"""The rules every data plane starts from (``builtin_rules: false`` to start empty)."""
