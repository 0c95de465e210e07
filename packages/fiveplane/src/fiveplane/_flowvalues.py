"""Value extraction and normalization for information flow.

The flow index (``_flow.py``) asks two questions of a text: which *typed values* does it carry
(e-mail addresses, URLs, hosts, registrable domains, account numbers, amounts) and which *word
6-grams*. Both sides of a check — the untrusted content that entered the session and the arguments
of a later action — go through the same functions here, so a value is found whatever surface form
the agent gives it:

* **Text**: HTML entities and percent-encoding decoded (twice at most, for double encoding),
  Unicode NFKC (full-width letters, ligatures), invisible characters removed (zero-width spaces and
  joiners, soft hyphens, word joiners, variation selectors, Unicode tag characters), case folded.
* **Obfuscation**: ``legal-review at acme dot example``, ``legal-review [at] acme [dot] example``
  and ``legal-review @ acme.example`` are read as the address.
* **Hosts**: with or without a scheme (``https://www.evil.example/x``, ``www.evil.example``,
  ``evil.example/p.exe``), IDNA/punycode canonical (``bücher.example`` = ``xn--bcher-kva.example``),
  a leading ``www.`` dropped; every host is also indexed as its registrable domain (kind ``domain``),
  from tldextract's bundled public-suffix snapshot (never fetched; ``a.b.co.uk`` → ``b.co.uk``), or
  the last two labels when tldextract is not installed. A schemeless name counts as a host when its
  top-level domain is a public suffix or a reserved one (``.example``, ``.test``, ``.internal``…), and
  not when it looks like a file name (``notes.md``, ``setup.py``) unless it has ``www.`` or a path.
* **E-mail**: lower-cased, the ``+tag`` sub-address stripped (``jane+x@acme.example`` =
  ``jane@acme.example``); the address's domain is also indexed as kind ``domain``.
* **Accounts**: IBANs in any case, with spaces or dashes (``de89-3704-…``), and long digit runs,
  canonical without separators, upper-case.
* **Amounts**: with a currency sign, code or word, ``$12,500.00`` = ``12.500,00 EUR`` = ``12500 dollars``
  (canonical ``amount:12500.00``).
* **Split across fields**: :func:`strings` yields, after each argument, the concatenation of the
  action's short string fields (path ``*``) and of each field's own parts, so an address or an
  IBAN split over two arguments is still found by rules that check every field.

**Budgets.** One content item is indexed up to :data:`MAX_CONTENT_BYTES` (UTF-8) and a session up
to :data:`MAX_SESSION_BYTES`; :func:`extract` reports ``over_budget`` when a content item exceeds
its budget or would take the session past its own, so that the index can treat that content as
untrusted *in full* (every consequential action after it carries possibly-untrusted data) instead of
silently indexing a prefix.
"""

from __future__ import annotations

import hashlib
import html
import re
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

__all__ = [
    "JOINED",
    "KINDS",
    "MAX_CONTENT_BYTES",
    "MAX_SESSION_BYTES",
    "SHINGLE",
    "FlowContent",
    "Values",
    "cut_content",
    "email_canonical",
    "extract",
    "extract_values",
    "host_canonical",
    "normalize",
    "number_values",
    "phrase",
    "phrases",
    "registrable_domain",
    "shingles",
    "strings",
    "text_of",
    "tokens",
    "words",
]

SHINGLE = 6
"""Words per shingle: an argument sharing 6 consecutive words with untrusted text is derived from it."""
MAX_CONTENT_BYTES = 4 * 1024 * 1024
"""Budget of one content item (UTF-8 bytes of its text): beyond it the item is flagged ``over_budget``."""
MAX_SESSION_BYTES = 32 * 1024 * 1024
"""Budget of one session (all content items indexed in it): beyond it every new item is flagged."""
JOINED = "*"
"""The field path of the concatenation of an action's short string fields."""
_JOIN_LEAF_MAX = 2048
"""Only fields up to this many characters take part in the joined value (a long body is checked alone)."""
_JOIN_MAX = 64 * 1024

KINDS = {
    "email": "an e-mail address",
    "url": "a URL",
    "host": "a host name",
    "domain": "a domain",
    "account": "an account number",
    "amount": "an amount",
}
"""The kinds of typed values, as findings name them."""

# ---------------------------------------------------------------------------------------------
# text normalization

_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f]"
)
_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9a-f]{1,6}|[a-z]{2,8});", re.IGNORECASE)
_PCT = re.compile(r"%[0-9a-f]{2}", re.IGNORECASE)


def normalize(text: str) -> str:
    """The text with entities and percent-encoding decoded, NFKC applied and invisible characters
    removed (case is kept: callers fold it where it does not matter)."""
    if "&" in text and _ENTITY.search(text):
        text = html.unescape(text)
    if "%" in text:
        for _ in range(2):
            if not _PCT.search(text):
                break
            text = unquote(text, errors="replace")
    if not text.isascii():
        text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    return text


# obfuscated "at" / "dot": "jane at acme dot example", "jane [at] acme [dot] example", "jane @ acme.example"
_OBF_AT = re.compile(r"\s*[\[({<]\s*(?:at|@)\s*[\])}>]\s*|\s+at\s+|\s*@\s*", re.IGNORECASE)
_OBF_DOT = re.compile(r"\s*[\[({<]\s*(?:dot|\.)\s*[\])}>]\s*|\s+dot\s+", re.IGNORECASE)


_AT_SPACED = (" @", "@ ", "\t@", "@\t", "\n@", "@\n")
_OBF_WORD = re.compile(r"[\[({<]\s*(?:at|dot)\s*[\])}>]|\s(?:at|dot)\s")


def _deobfuscate(text: str) -> str | None:
    """The text with obfuscated "at" / "dot" written as ``@`` / ``.``; ``None`` when it has none."""
    if not ("@" in text and any(p in text for p in _AT_SPACED)):
        low = text.lower()
        if not ("at" in low or "dot" in low) or not _OBF_WORD.search(low):
            return None
    return _OBF_AT.sub("@", _OBF_DOT.sub(".", text))


# ---------------------------------------------------------------------------------------------
# hosts and domains

_RESERVED_TLDS = frozenset(
    {"example", "test", "invalid", "localhost", "local", "internal", "intranet", "lan", "home", "corp", "private"}
)
_FILE_EXTENSIONS = frozenset(
    [
        "txt",
        "pdf",
        "exe",
        "json",
        "yaml",
        "yml",
        "csv",
        "tsv",
        "log",
        "doc",
        "docx",
        "xls",
        "xlsx",
        "ppt",
        "pptx",
        "png",
        "jpg",
        "jpeg",
        "gif",
        "svg",
        "webp",
        "html",
        "htm",
        "xml",
        "py",
        "md",
        "sh",
        "rs",
        "pl",
        "pm",
        "so",
        "zip",
        "mov",
        "cc",
        "cpp",
        "hpp",
        "ps",
        "mk",
        "ml",
        "ts",
        "js",
        "jsx",
        "tsx",
        "tar",
        "gz",
        "tgz",
        "bz2",
        "xz",
        "ini",
        "cfg",
        "conf",
        "toml",
        "lock",
        "sql",
        "db",
        "bak",
        "tmp",
        "dat",
        "bin",
        "iso",
        "mp3",
        "mp4",
        "wav",
        "css",
        "rb",
        "go",
        "java",
        "kt",
        "swift",
        "c",
        "h",
        "o",
        "a",
        "env",
        "pem",
        "key",
        "crt",
    ]
)
"""Top-level labels that, in a schemeless name without ``www.`` or a path, mean a file name."""

_TLD_LOCK = threading.Lock()
_TLD: Any = None
_TLD_MISSING = False


def _tld_extractor() -> Any:
    """tldextract on its bundled public-suffix snapshot: no network, no cache directory. ``None``
    when tldextract is not installed (the ``pii`` extra brings it)."""
    global _TLD, _TLD_MISSING
    if _TLD is not None or _TLD_MISSING:
        return _TLD
    with _TLD_LOCK:
        if _TLD is None and not _TLD_MISSING:
            try:
                import tldextract
            except ImportError:
                _TLD_MISSING = True
                return None
            _TLD = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)
    return _TLD


_IPV4 = re.compile(r"^(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}$")


def _idna(name: str) -> str:
    name = name.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            pass
    return name


def host_canonical(host: str) -> str:
    """Lower-case, IDNA (punycode) ASCII, no trailing dot, no leading ``www.``."""
    host = _idna(host)
    if host.startswith("www.") and host.count(".") >= 2:
        host = host[4:]
    return host


@lru_cache(maxsize=65536)
def _suffix(host: str) -> tuple[str, str] | None:
    """(registrable domain, public suffix) of a canonical host, or ``None`` when its suffix is unknown."""
    if _IPV4.match(host):
        return host, ""
    tld = host.rsplit(".", 1)[-1]
    ext = _tld_extractor()
    if ext is not None:
        r = ext(host)
        if r.suffix and r.domain:
            return f"{r.domain}.{r.suffix}", r.suffix
        if r.suffix:  # the host is itself a public suffix
            return host, r.suffix
        if tld not in _RESERVED_TLDS:
            return None
    elif not (tld.isalpha() and len(tld) >= 2) and not tld.startswith("xn--"):
        return None
    labels = host.split(".")
    return ".".join(labels[-2:]), tld


def registrable_domain(host: str) -> str:
    """The registrable domain of a host (``www.a.b.co.uk`` → ``b.co.uk``); reserved and unknown
    suffixes, and hosts without tldextract, use the last two labels."""
    h = host_canonical(host)
    found = _suffix(h)
    return found[0] if found else ".".join(h.split(".")[-2:])


def _host_values(host: str, out: set[str]) -> str | None:
    h = host_canonical(host)
    if not h:
        return None
    out.add(f"host:{h}")
    if "." in h:
        out.add(f"domain:{registrable_domain(h)}")
    return h


# ---------------------------------------------------------------------------------------------
# e-mail

_LOCAL_BEFORE = re.compile(r"(?<![\w.%+-])[\w.%+-]{1,64}\Z")
_DOMAIN_AFTER = re.compile(r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+(?:[^\W\d_]{2,63}|xn--[\w-]{1,59})(?![\w-])")


def _email_parts(local: str, domain: str) -> tuple[str, str]:
    local = local.strip().strip(".").lower()
    return local.split("+", 1)[0] or local, _idna(domain)


def email_canonical(address: str) -> str:
    """``Jane.Roe+promo@Globex.Example`` → ``jane.roe@globex.example``."""
    local, _, domain = address.rpartition("@")
    local, domain = _email_parts(local, domain)
    return f"{local}@{domain}"


def _emails(text: str, out: set[str]) -> None:
    # anchored on each "@": the local part just before it, the domain just after it
    at = text.find("@")
    while at != -1:
        before = _LOCAL_BEFORE.search(text, max(0, at - 65), at)
        after = _DOMAIN_AFTER.match(text, at + 1)
        if before is not None and after is not None:
            local, domain = _email_parts(before.group(0), after.group(0))
            if local:
                out.add(f"email:{local}@{domain}")
                out.add(f"domain:{registrable_domain(domain)}")
        at = text.find("@", at + 1)


# ---------------------------------------------------------------------------------------------
# URLs and schemeless hosts

_URL = re.compile(r"\b(?:https?|ftps?|wss?)://[^\s\"'<>`\\]+", re.IGNORECASE)
_URL_TRAIL = ".,;:!?)]}'\""
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_SCHEMELESS = re.compile(
    rf"(?<![\w@.%/:+-])((?:{_LABEL}\.)+(?:[^\W\d_]{{2,63}}|xn--[\w-]{{1,59}})|(?:\d{{1,3}}\.){{3}}\d{{1,3}})"
    r"(?::(\d{1,5}))?(/[^\s\"'<>`\\]*)?(?![\w@-])"
)


def _url_value(host: str, port: str | None, rest: str, out: set[str]) -> None:
    h = _host_values(host, out)
    if h is None:
        return
    rest = rest.rstrip(_URL_TRAIL).lower()
    rest = rest.split("#", 1)[0].rstrip("/")
    hostport = h if not port or port in ("80", "443") else f"{h}:{port}"
    out.add(f"url:{hostport}{rest}")


def _urls(text: str, out: set[str]) -> None:
    for m in _URL.finditer(text):
        after = m.group(0).split("://", 1)[1].rstrip(_URL_TRAIL)
        authority, slash, rest = after.partition("/")
        for sep in ("?", "#"):
            if sep in authority:
                authority, tail = authority.split(sep, 1)
                rest, slash = sep + tail + slash + rest, ""
        authority = authority.rsplit("@", 1)[-1]
        host, _, port = authority.partition(":") if not authority.startswith("[") else (authority, "", "")
        if host:
            _url_value(host, port or None, (slash and "/") + rest, out)


_NAME_DOT = re.compile(r"[^\W_]\.[^\W_]")
"""A dot between two letters or digits: where a schemeless host may be."""
_TOKEN_TAIL = re.compile(r"[\w.-]{0,253}\Z")


def _schemeless(text: str, out: set[str]) -> None:
    # candidates first (a cheap scan for "x.y"), then the full pattern from the start of that token
    done = 0
    for c in _NAME_DOT.finditer(text):
        if c.start() < done:
            continue
        back = _TOKEN_TAIL.search(text, max(done, c.start() - 253), c.start() + 1)
        m = _SCHEMELESS.match(text, back.start() if back else c.start())
        if m is None:
            done = c.end() - 1
            continue
        done = m.end()
        name, port, path = m.group(1), m.group(2), m.group(3)
        h = host_canonical(name)
        if not _IPV4.match(h) and _suffix(h) is None and not (port or path):
            # "see www.our-company.com.They sent…": a sentence glued to the host after its dot
            head, _, last = name.rpartition(".")
            if head.count(".") >= 1 and last[:1].isupper() and _suffix(host_canonical(head)) is not None:
                name, h = head, host_canonical(head)
        if not _IPV4.match(h):
            if _suffix(h) is None:
                continue
            if h.rsplit(".", 1)[-1] in _FILE_EXTENSIONS and not (name.lower().startswith("www.") or path or port):
                continue
        if path or port:
            _url_value(name, port, path or "", out)
        else:
            _host_values(name, out)


# ---------------------------------------------------------------------------------------------
# accounts and amounts

_IBAN = re.compile(r"\b([A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,4})?)\b", re.IGNORECASE)
_DIGITS = re.compile(r"(?<![\w.])\d(?:[ -]?\d){7,33}(?![\w])")
_NUM = r"\d{1,3}(?:[,.' ]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_CUR = r"[$€£¥]|\b(?:USD|EUR|GBP|CHF|JPY|CAD|AUD)\b"
_AMOUNT = re.compile(
    rf"(?:(?:{_CUR})\s?({_NUM}))|(?:({_NUM})\s?(?:{_CUR}|\b(?:dollars?|euros?|pounds?|francs?)\b))",
    re.IGNORECASE,
)
_HAS_DIGIT = re.compile(r"\d")
_HAS_CURRENCY = re.compile(r"[$€£¥]|usd|eur|gbp|chf|jpy|cad|aud|dollar|pound|franc", re.IGNORECASE)


def _norm_amount(raw: str) -> str:
    digits = re.sub(r"[^\d.,]", "", raw)
    # the last separator followed by 1-2 digits is the decimal point
    m = re.match(r"^(.*?)([.,](\d{1,2}))?$", digits)
    whole = re.sub(r"[.,]", "", m.group(1) if m else digits)
    cents = (m.group(3) or "") if m else ""
    whole = whole.lstrip("0") or "0"
    return f"amount:{whole}.{cents.ljust(2, '0')}"


def _accounts(text: str, out: set[str]) -> None:
    for m in _IBAN.finditer(text):
        iban = re.sub(r"[ -]", "", m.group(1)).upper()
        if 15 <= len(iban) <= 34 and sum(c.isdigit() for c in iban[4:]) >= 6:
            out.add("account:" + iban)
    for m in _DIGITS.finditer(text):
        out.add("account:" + re.sub(r"\D", "", m.group(0)))
    if _HAS_CURRENCY.search(text):
        for m in _AMOUNT.finditer(text):
            out.add(_norm_amount(m.group(1) or m.group(2)))


# ---------------------------------------------------------------------------------------------
# the public functions


def _typed(text: str, out: set[str]) -> None:
    if "@" in text:
        _emails(text, out)
    if "://" in text:
        _urls(text, out)
    if "." in text:
        _schemeless(text, out)
    if _HAS_DIGIT.search(text):
        _accounts(text, out)


_RANK = {"email": 0, "account": 1, "url": 2, "amount": 3, "host": 4, "domain": 5}


class Values(set[str]):
    """A set of typed values that iterates the most specific first (an address before its domain),
    so that the first match of a check names the most precise value and its own source."""

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set.__iter__(self), key=lambda v: (_RANK.get(v.split(":", 1)[0], 9), v)))


def extract_values(text: str) -> Values:
    """Typed, canonical values in a text: ``email:``, ``url:``, ``host:``, ``domain:``, ``account:``, ``amount:``."""
    text = normalize(text)
    out = Values()
    _typed(text, out)
    plain = _deobfuscate(text)
    if plain is not None:
        _typed(plain, out)
    return out


_WORD = re.compile(r"[^\W_]+")

PHRASE_MAX = 5
"""Word n-grams up to this length of the user's own words are indexed (hashed) for ``from_user``."""
_PHRASE_WORDS = 4096
"""Words of one user message that take part in phrases (a longer paste is matched by shingles)."""
_BARE_NUM = re.compile(rf"(?<![\w.,])(?:{_NUM})(?![\w]|[.,]\d)")


def _hash(words: list[str]) -> str:
    return hashlib.blake2b("\x1f".join(words).encode(), digest_size=8).hexdigest()


def words(text: str) -> list[str]:
    """The normalized, case-folded words of a text (what shingles are made of)."""
    return _WORD.findall(normalize(text).casefold())


_EDGE_PUNCT = "\"'`“”‘’«»()[]{}<>.,;:!?"


def tokens(text: str) -> list[str]:
    """The normalized, case-folded white-space tokens of a text without the punctuation around
    them (``'1j1l-2k3j'.`` → ``1j1l-2k3j``; ``new_password`` stays one token): what phrases are made of."""
    out = []
    for t in normalize(text).casefold().split():
        t = t.strip(_EDGE_PUNCT)
        if t:
            out.append(t)
    return out


def phrase(text: str) -> str | None:
    """The hashed phrase of a short value (at most :data:`PHRASE_MAX` tokens), ``None`` otherwise."""
    ts = tokens(text)
    return _hash(ts) if 0 < len(ts) <= PHRASE_MAX else None


def phrases(text: str) -> set[str]:
    """Hashed token n-grams (1..:data:`PHRASE_MAX`) of a text: the user's words, for ``from_user``."""
    ts = tokens(text)[:_PHRASE_WORDS]
    return {_hash(ts[i : i + n]) for n in range(1, PHRASE_MAX + 1) for i in range(len(ts) - n + 1)}


def number_values(text: str) -> set[str]:
    """Every bare number of a text as a canonical amount (``100``, ``100.00``, ``1,000`` →
    ``amount:100.00``, ``amount:1000.00``): what the user typed, for ``from_user`` of a number."""
    if not _HAS_DIGIT.search(text):
        return set()
    return {_norm_amount(m.group(0)) for m in _BARE_NUM.finditer(normalize(text))}


def shingles(text: str) -> set[bytes]:
    """Hashed word 6-grams of the normalized, case-folded text (none for joined fields)."""
    if isinstance(text, _Joined):
        return set()
    words = _WORD.findall(normalize(text).casefold())
    if len(words) < SHINGLE:
        return set()
    return {
        hashlib.blake2b(" ".join(words[i : i + SHINGLE]).encode(), digest_size=8).digest()
        for i in range(len(words) - SHINGLE + 1)
    }


def _leaves(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path or "content", value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, (int, float)):
        yield path or "content", str(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path or "content", repr(value)


class _Joined(str):
    """Fields joined: checked for typed values only (text copied from untrusted content is found
    field by field; 6 words spread over several fields are not)."""

    __slots__ = ()


def _join(leaves: list[tuple[str, str]]) -> str | None:
    parts = [t for _, t in leaves if len(t) <= _JOIN_LEAF_MAX]
    if len(parts) < 2:
        return None
    return _Joined(" ".join(parts)[:_JOIN_MAX])


def strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(field path, text) for every string or number in a JSON-like value; then, for each top-level
    field holding several parts, those parts joined (path = the field); then all short fields
    joined (path :data:`JOINED`), so that a value split across fields is still found."""
    leaves = list(_leaves(value, path))
    yield from leaves
    if len(leaves) < 2:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list, tuple)):
                sub = [leaf for leaf in leaves if leaf[0].startswith(f"{k}.") or leaf[0].startswith(f"{k}[")]
                joined = _join(sub)
                if joined is not None:
                    yield str(k) if not path else f"{path}.{k}", joined
    joined = _join(leaves)
    if joined is not None:
        yield JOINED, joined


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return "\n".join(f"{k}: {_content_text(v)}" for k, v in content.items())
    if isinstance(content, (list, tuple)):
        return "\n".join(_content_text(v) for v in content)
    if isinstance(content, bool) or content is None:
        return ""
    if isinstance(content, (int, float)):
        return str(content)
    return repr(content)


def _cut(text: str, budget: int) -> tuple[str, int, bool]:
    """(text within ``budget`` UTF-8 bytes, the full size in bytes, whether it was cut)."""
    if len(text) * 4 <= budget:  # fast path: cannot exceed even if every character took 4 bytes
        return text, len(text.encode("utf-8", "surrogatepass")), False
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= budget:
        return text, len(raw), False
    return raw[:budget].decode("utf-8", "ignore"), len(raw), True


def text_of(content: Any) -> str:
    """The text of a content item as the index reads it: strings as they are, structures one field
    per line (keys included; no JSON escaping, so ``\\n`` never glues a value to a letter), within
    :data:`MAX_CONTENT_BYTES`."""
    return _cut(_content_text(content), MAX_CONTENT_BYTES)[0]


@dataclass(frozen=True)
class FlowContent:
    """What one content item contributes to the flow index."""

    values: frozenset[str]
    shingles: frozenset[bytes]
    nbytes: int
    """The full size of the item's text in UTF-8 bytes (whether or not it was all indexed)."""
    indexed_bytes: int
    over_budget: bool
    """The item exceeded :data:`MAX_CONTENT_BYTES`, or the session's budget: only a prefix (possibly
    empty) was indexed, so the whole item must be treated as untrusted."""


def extract(
    content: Any,
    *,
    session_bytes: int = 0,
    content_budget: int = MAX_CONTENT_BYTES,
    session_budget: int = MAX_SESSION_BYTES,
) -> FlowContent:
    """Values and shingles of one content item, within the per-content budget and what is left of
    the session's (``session_bytes`` already indexed in this session)."""
    text, nbytes, indexed, cut = cut_content(
        content, session_bytes=session_bytes, content_budget=content_budget, session_budget=session_budget
    )
    return FlowContent(
        values=frozenset(extract_values(text)) if text else frozenset(),
        shingles=frozenset(shingles(text)) if text else frozenset(),
        nbytes=nbytes,
        indexed_bytes=indexed,
        over_budget=cut,
    )


def cut_content(
    content: Any,
    *,
    session_bytes: int = 0,
    content_budget: int = MAX_CONTENT_BYTES,
    session_budget: int = MAX_SESSION_BYTES,
) -> tuple[str, int, int, bool]:
    """The part of one content item :func:`extract` reads, without extracting anything: (the text
    within the budgets, its full size in UTF-8 bytes, the bytes indexed, whether it was cut).
    Cheap next to the extraction (no regular expression runs): a lazy flow item learns its budget
    figures from it at once and extracts its values only when they are read."""
    left = max(0, min(content_budget, session_budget - session_bytes))
    text, nbytes, cut = _cut(_content_text(content), left)
    indexed = len(text.encode("utf-8", "surrogatepass")) if cut else nbytes
    return text, nbytes, indexed, cut
