"""Recognizers the data plane adds to Presidio's: secrets, an offline e-mail recognizer, and the
custom pattern / deny-list recognizers of a policy pack. Imports Presidio (loaded lazily).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import threading
from collections import Counter
from typing import Any

from presidio_analyzer import EntityRecognizer, LocalRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import EmailRecognizer

from ._config import CustomRecognizer

__all__ = [
    "AssignmentRecognizer",
    "OfflineEmailRecognizer",
    "build_custom",
    "offline_tld_extractor",
    "secret_recognizers",
    "secrets_in_field",
    "supplementary_recognizers",
]

_SECRET_FLAGS = re.DOTALL | re.MULTILINE  # case matters for key prefixes (AKIA, ghp_, ...)

_TLD_LOCK = threading.Lock()
_TLD: Any = None


def offline_tld_extractor() -> Any:
    """A ``tldextract.TLDExtract`` that never touches the network or the disk: the public suffix list
    comes from the snapshot bundled with tldextract (``suffix_list_urls=()``, ``cache_dir=None``)."""
    global _TLD
    with _TLD_LOCK:
        if _TLD is None:
            import tldextract

            _TLD = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)
        return _TLD


class OfflineEmailRecognizer(EmailRecognizer):  # type: ignore[misc]
    """Presidio's e-mail recognizer, validating the domain against the bundled public suffix list
    (the stock one calls ``tldextract.extract``, which downloads the list on first use) and also
    accepting reserved / internal top-level domains (``.example``, ``.internal``, ...)."""

    def __init__(self, extra_tlds: tuple[str, ...] = (), supported_language: str = "en") -> None:
        super().__init__(supported_language=supported_language, name="OfflineEmailRecognizer")
        self.extra_tlds = frozenset(t.lower().lstrip(".") for t in extra_tlds)

    def validate_result(self, pattern_text: str) -> bool:
        domain = pattern_text.rsplit("@", 1)[-1].lower().rstrip(".")
        if offline_tld_extractor()(domain).fqdn:
            return True
        return "." in domain and domain.rsplit(".", 1)[-1] in self.extra_tlds


def _entropy(s: str) -> float:
    counts = Counter(s)
    return -sum(n / len(s) * math.log2(n / len(s)) for n in counts.values())


class _JwtRecognizer(PatternRecognizer):  # type: ignore[misc]
    """A JWT: its header must decode to a JSON object naming ``alg`` or ``typ``."""

    def validate_result(self, pattern_text: str) -> bool | None:
        header = pattern_text.split(".", 1)[0]
        try:
            data = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return False
        return None if isinstance(data, dict) and ("alg" in data or "typ" in data) else False


# ---- secrets assigned to a key: ``password=…``, ``aws_secret_access_key = …``, ``Authorization: Bearer …``

_ASSIGN = r"""["']?[ \t]*(?P<op>=>|:=|[:=])[ \t]*"""
"""The operator between a key and its value (``=``, ``:``, ``=>``, ``:=``; JSON / YAML / env / code)."""
_VALUE = r"""(?:"(?P<dq>[^"\r\n]{1,512}+)"|'(?P<sq>[^'\r\n]{1,512}+)'|(?P<bare>[^\s"'`,;<>{}\[\]()]{1,512}+)(?![(\[]))"""
"""A quoted value (up to its closing quote) or a bare one (up to white space or punctuation; a
bare value followed by ``(`` or ``[`` is code, not a literal)."""
_META = (
    r"(?!(?:[\w.-]{0,40}?[_.-])?(?:policy|hint|length|len|min|max|count|required|reset|expir\w*|changed|updated|created|rules?|"
    r"strength|field|label|prompt|type|format|pattern|regex|algorithm|enabled|mode|url|uri|file|path|name|id|ref|arn|"
    r"version|rotation|rate|ratio|percent|score|threshold|status|result|fail\w*|through|level|grade)(?![A-Za-z]))"
)
"""Not when the key names something *about* the secret (``password_policy``, ``secret_name``, ``token_count``)."""
_PASSWORD_KEY = (
    r"(?:password|passwd|passphrase|(?<![A-Za-z])pass(?![A-Za-z])|secret(?!(?:[_.-]?access[_.-]?key)))(?-i:(?![a-z]))"
    + _META
    + r"[\w.-]{0,40}"
)
_API_KEY_KEY = (
    r"(?:api[_.-]?key|apikey|api[_.-]?token|access[_.-]?token|auth[_.-]?token|refresh[_.-]?token|private[_.-]?key|"
    r"(?<![A-Za-z])pwd(?![A-Za-z])|credentials?(?-i:(?![a-z]))|"
    r"(?<!page[_.-])(?<!next[_.-])(?<!cursor[_.-])(?<!continuation[_.-])(?<!sync[_.-])(?<!resume[_.-])"
    r"(?<![A-Za-z])token(?-i:(?![a-z])))" + _META + r"[\w.-]{0,40}"
)
_AWS_SECRET_KEY = r"(?:aws[_.-]?)?secret[_.-]?access[_.-]?key(?:[_.-]?id)?|aws[_.-]?secret(?:[_.-]?key)?"
_ASSIGNMENTS: tuple[tuple[str, str, re.Pattern[str], float], ...] = (
    # (entity, name, regex with a value group, score) in order of precedence: one detection per value
    (
        "API_KEY",
        "aws-secret-access-key",
        re.compile(rf"(?i:{_AWS_SECRET_KEY}){_ASSIGN}[\"']?(?P<bare>[A-Za-z0-9/+=]{{40}}+)(?![A-Za-z0-9/+=])"),
        0.95,
    ),
    (
        "API_KEY",
        "authorization-header",
        re.compile(
            r"(?i:\b(?:proxy-)?authorization)[\"']?[ \t]*[:=][ \t]*[\"']?(?i:bearer|token|basic|apikey|api-key|sso-key)[ \t]+"
            r"(?P<bare>[A-Za-z0-9\-._~+/]{8,4096}+=*)"
        ),
        0.95,
    ),
    ("API_KEY", "bearer-token", re.compile(r"(?i:\bbearer)[ \t]+(?P<bare>[A-Za-z0-9\-._~+/]{16,4096}+=*)"), 0.85),
    ("PASSWORD", "password-assignment", re.compile(rf"(?i:{_PASSWORD_KEY}){_ASSIGN}{_VALUE}"), 0.85),
    ("API_KEY", "secret-assignment", re.compile(rf"(?i:{_API_KEY_KEY}){_ASSIGN}{_VALUE}"), 0.7),
)
_NOT_A_SECRET = frozenset(
    [
        "none",
        "null",
        "nil",
        "true",
        "false",
        "yes",
        "no",
        "on",
        "off",
        "undefined",
        "required",
        "optional",
        "empty",
        "hidden",
        "redacted",
        "masked",
        "removed",
        "unknown",
        "n/a",
        "na",
        "tbd",
        "todo",
        "reset",
        "expired",
        "invalid",
        "incorrect",
        "wrong",
        "provided",
        "missing",
        "set",
        "unset",
        "changed",
        "please",
        "here",
        "below",
        "above",
        "see",
        "same",
        "default",
        "string",
        "str",
        "text",
        "value",
        "secret",
        "password",
        "passwd",
    ]
)
_REFERENCE = re.compile(
    r"""^(?:\$\{?[A-Za-z_]|\{\{|%\(|<[A-Za-z_ -]*>$|\[[A-Z_ -]*\]$|(?:os\.environ|os\.getenv|process\.env|env\(|getenv\(|vault:|secretsmanager:|ssm:|arn:aws:secretsmanager))"""
)
_CODE_REFERENCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")
_RANDOM_MIN = 12
_ASSIGNMENT_RECOGNIZER = "fiveplane-secret-assignments"


def _classes(value: str) -> int:
    return sum(bool(re.search(p, value)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]"))


def _placeholder(value: str) -> bool:
    v = value.strip()
    if not v or v.lower() in _NOT_A_SECRET or len(set(v)) == 1 or _REFERENCE.match(v):
        return True
    return v.startswith("<") and v.endswith(">")  # our own placeholders, <your-password>


class AssignmentRecognizer(LocalRecognizer):  # type: ignore[misc]
    """Secrets assigned to a key, the value only (the key stays readable):

    * ``API_KEY``: ``aws_secret_access_key = …`` (40 characters), ``Authorization: Bearer|Basic|Token …``,
      ``Bearer …``, and ``api_key`` / ``access_token`` / ``auth_token`` / ``private_key`` / ``token`` /
      ``credentials`` / ``pwd`` assignments whose value looks random (12+ characters, entropy, two
      character classes);
    * ``PASSWORD``: ``password`` / ``passwd`` / ``passphrase`` / ``pass`` / ``secret`` (with prefixes
      and suffixes: ``DB_PASSWORD``, ``client_secret``) assigned any value that is not a placeholder
      (``****``, ``${VAR}``, ``<password>``, ``null``, ...); a bare (unquoted) value after ``:`` needs
      two character classes (``hunter2``), so prose such as ``password: please reset it`` is not a
      secret, while ``secret=opensesame`` (config, environment, URL query) is.

    Written with Python ``re`` (atomic groups, bounded quantifiers: linear time), one detection per
    value, the first pattern of :data:`_ASSIGNMENTS` winning.
    """

    def __init__(self, supported_language: str = "en") -> None:
        super().__init__(
            supported_entities=["API_KEY", "PASSWORD"], name=_ASSIGNMENT_RECOGNIZER, supported_language=supported_language
        )

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        wanted = set(entities or self.supported_entities)
        out: list[RecognizerResult] = []
        taken: list[tuple[int, int]] = []
        for entity, name, pattern, score in _ASSIGNMENTS:
            if entity not in wanted:
                continue
            for m in pattern.finditer(text):
                group = next(g for g in ("dq", "sq", "bare") if g in pattern.groupindex and m.group(g) is not None)
                value, (start, end) = m.group(group), m.span(group)
                op = m.group("op") if "op" in pattern.groupindex else ""
                if any(s < end and start < e for s, e in taken) or not self._plausible(entity, name, value, group, op):
                    continue
                taken.append((start, end))
                out.append(
                    RecognizerResult(
                        entity,
                        start,
                        end,
                        score,
                        recognition_metadata={
                            RecognizerResult.RECOGNIZER_NAME_KEY: _ASSIGNMENT_RECOGNIZER,
                            RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                            "pattern_name": name,
                        },
                    )
                )
        return out

    @staticmethod
    def _plausible(entity: str, name: str, value: str, group: str, op: str) -> bool:
        if _placeholder(value):
            return False
        if name in ("aws-secret-access-key", "authorization-header"):
            return True
        if name == "bearer-token":
            return not value.startswith("eyJ") and _classes(value) >= 2  # a JWT is the JWT recognizer's
        if entity == "PASSWORD":
            if group != "bare":
                return len(value) >= 3
            if len(value) < 4 or _CODE_REFERENCE.match(value):
                return False
            # `secret=opensesame` (config, env, URL) is a secret; `password: please reset it` is prose
            return op != ":" or _classes(value) >= 2
        # API_KEY assignment: random-looking values only
        return len(value) >= _RANDOM_MIN and _entropy(value) >= 3.0 and _classes(value) >= 2


_ASSIGNMENT = AssignmentRecognizer()
_SECRET_FIELD = re.compile(r"(?i)pass|secret|key|token|auth|credential|pwd")


def secrets_in_field(field: str, value: str, entities: frozenset[str] | set[str]) -> list[tuple[str, int, int, float]]:
    """Secrets of a value by the name of the field holding it (``{"password": "hunter2"}``,
    ``{"headers": {"Authorization": "Bearer …"}}``): the value is judged as if written
    ``field="value"`` (``field: value`` when it holds quotes or line breaks); (entity, start, end,
    score) in the value's coordinates."""
    if not field or len(field) > 64 or not _SECRET_FIELD.search(field) or not value.strip():
        return []
    quoted = '"' not in value and "\n" not in value and "\r" not in value
    prefix = f'{field}="' if quoted else f"{field}: "
    probe = prefix + value + ('"' if quoted else "")
    found = _ASSIGNMENT.analyze(probe, [e for e in ("API_KEY", "PASSWORD") if e in entities])
    n = len(prefix)
    return [(r.entity_type, r.start - n, r.end - n, float(r.score)) for r in found if r.start >= n and r.end <= n + len(value)]


_API_KEY_PATTERNS = [
    Pattern("aws-access-key-id", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b", 0.95),
    Pattern("github-token", r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b", 0.95),
    Pattern("github-pat", r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b", 0.95),
    Pattern("gitlab-token", r"\bglpat-[A-Za-z0-9_-]{20,}\b", 0.95),
    Pattern("slack-token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b", 0.95),
    Pattern("slack-webhook", r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,}", 0.95),
    Pattern("stripe-key", r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b", 0.95),
    Pattern("anthropic-key", r"\bsk-ant-[A-Za-z0-9_-]{20,}", 0.95),
    Pattern("openai-key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", 0.9),
    Pattern("google-api-key", r"\bAIza[0-9A-Za-z_-]{35}\b", 0.95),
    Pattern("sendgrid-key", r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b", 0.95),
    Pattern("npm-token", r"\bnpm_[A-Za-z0-9]{36}\b", 0.95),
    Pattern("pypi-token", r"\bpypi-[A-Za-z0-9_-]{50,}", 0.95),
    Pattern("huggingface-token", r"\bhf_[A-Za-z0-9]{34,}\b", 0.9),
]
_PRIVATE_KEY = Pattern(
    "pem-private-key",
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|.*\Z)",
    1.0,
)
_PUTTY_KEY = Pattern("putty-private-key", r"PuTTY-User-Key-File-\d+:.*?Private-MAC: ?[0-9a-f]+", 1.0)
_JWT = Pattern("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", 0.95)
_CONNECTION = [
    Pattern(
        "url-with-credentials",
        r"\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver|oracle|"
        r"jdbc:[a-z0-9]+|s?ftp|smtps?|ldaps?|https?|nats|kafka|couchbase|neo4j(?:\+s)?)"
        r"://[^\s:/@'\"]+:[^\s@'\"/]+@[^\s'\"<>]+",
        0.95,
    ),
    Pattern(
        "ado-odbc-with-password",
        r"(?i)\b(?:server|data source|host|address)\s*=[^;'\"\n]+;(?:[^;'\"\n]*;)*?\s*(?:password|pwd)\s*=[^;'\"\n]+;?",
        0.9,
    ),
    Pattern(
        "azure-storage",
        r"(?i)\b(?:DefaultEndpointsProtocol=https?;)?AccountName=[^;\s]+;AccountKey=[A-Za-z0-9+/=]{40,}(?:;[^\s'\"]*)?",
        0.95,
    ),
]


def secret_recognizers(language: str = "en") -> list[EntityRecognizer]:
    """Recognizers of API_KEY, PASSWORD, PRIVATE_KEY, JWT and CONNECTION_STRING."""
    return [
        PatternRecognizer(
            "API_KEY",
            name="fiveplane-api-keys",
            supported_language=language,
            patterns=_API_KEY_PATTERNS,
            global_regex_flags=_SECRET_FLAGS,
        ),
        AssignmentRecognizer(language),
        PatternRecognizer(
            "PRIVATE_KEY",
            name="fiveplane-private-keys",
            supported_language=language,
            patterns=[_PRIVATE_KEY, _PUTTY_KEY],
            global_regex_flags=_SECRET_FLAGS,
        ),
        _JwtRecognizer(
            "JWT", name="fiveplane-jwt", supported_language=language, patterns=[_JWT], global_regex_flags=_SECRET_FLAGS
        ),
        PatternRecognizer(
            "CONNECTION_STRING",
            name="fiveplane-connection-strings",
            supported_language=language,
            patterns=_CONNECTION,
            global_regex_flags=_SECRET_FLAGS,
        ),
    ]


class _LuhnCardRecognizer(PatternRecognizer):  # type: ignore[misc]
    """Card numbers Presidio's pattern misses (Mastercard 2-series, 19-digit Visa, Maestro, JCB 15,
    UnionPay), only when the Luhn checksum holds."""

    def validate_result(self, pattern_text: str) -> bool | None:
        digits = [int(c) for c in pattern_text if c.isdigit()]
        total = 0
        for i, d in enumerate(reversed(digits)):
            if i % 2:
                d *= 2
                if d > 9:
                    d -= 9
            total += d
        return total % 10 == 0


class _PhonePatternRecognizer(PatternRecognizer):  # type: ignore[misc]
    """Phone numbers in common written forms that ``phonenumbers`` rejects (e.g. North American
    numbers with unassigned area codes, extensions): a low score, raised by context words."""

    def validate_result(self, pattern_text: str) -> bool | None:
        n = sum(c.isdigit() for c in pattern_text)
        return None if 7 <= n <= 15 else False


_CARD = Pattern(
    "card-iin-luhn",
    r"\b(?:2(?:22[1-9]|2[3-9]\d|[3-6]\d{2}|7[01]\d|720)\d{12}|4\d{15,18}|(?:5[06-9]|6\d)\d{10,17}|(?:2131|1800)\d{11}|35\d{14,17})\b",
    0.5,
)
_PHONES = [
    Pattern(
        "nanp",
        r"(?<![\w+.-])(?:\+?1[\s.-]?|001[\s.-]?)?\(?[2-9]\d{2}\)?[\s.-]?\d{3}[\s.-]\d{4}(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w-])",
        0.4,
    ),
    Pattern("international", r"(?<![\w+])\+\d{1,3}(?:[\s.-]?(?:\(\d{1,4}\)|\d{1,4})){2,5}(?![\w-])", 0.4),
]


def supplementary_recognizers(language: str = "en") -> list[PatternRecognizer]:
    """Extra card and phone patterns that raise recall over Presidio's defaults."""
    return [
        _LuhnCardRecognizer(
            "CREDIT_CARD",
            name="fiveplane-card-numbers",
            supported_language=language,
            patterns=[_CARD],
            context=["credit", "card", "visa", "mastercard", "cc", "amex", "discover", "jcb", "maestro", "unionpay"],
        ),
        _PhonePatternRecognizer(
            "PHONE_NUMBER",
            name="fiveplane-phone-patterns",
            supported_language=language,
            patterns=_PHONES,
            context=["phone", "number", "telephone", "tel", "cell", "mobile", "call", "fax", "callback", "contact"],
        ),
    ]


_FLAGS = {"DOTALL": re.DOTALL, "MULTILINE": re.MULTILINE, "IGNORECASE": re.IGNORECASE}


def build_custom(spec: CustomRecognizer) -> PatternRecognizer:
    """A Presidio ``PatternRecognizer`` from a pack's recognizer entry (same defaults as Python)."""
    flags = 0
    for f in spec.regex_flags:
        flags |= _FLAGS[f]
    kwargs: dict[str, Any] = {
        "supported_entity": spec.supported_entity,
        "name": spec.name,
        "supported_language": spec.supported_language,
        "deny_list_score": spec.deny_list_score,
        "global_regex_flags": flags,
    }
    if spec.patterns:
        kwargs["patterns"] = [Pattern(p.name, p.regex, p.score) for p in spec.patterns]
    if spec.deny_list:
        kwargs["deny_list"] = list(spec.deny_list)
    if spec.context:
        kwargs["context"] = list(spec.context)
    return PatternRecognizer(**kwargs)
