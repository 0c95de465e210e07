"""Information flow: where did the values in a consequential action come from?

Content from untrusted sources (tool results and retrievals of connectors the policy marks
``trusted: false``: web pages, e-mail, CRM notes, documents) is indexed in the session as it enters:
e-mail addresses, URLs, hosts and domains, IBAN / account numbers, amounts with a currency, and hashed
word 6-grams of the text, all normalized first (``_flowvalues.py``). Content from the user's own
request and from trusted connectors is indexed as trusted. When a later invoke/modify action's
arguments carry a value found in untrusted content and not in trusted content, the flow rules of the
pack apply (require approval, block or allow), and the finding names the step the value came from.

Three refinements keep trust honest:

* **Per-field trust.** A result can be partly trusted: ``trusted_fields`` (JSON paths such as
  ``$[*].recipient``) of an untrusted tool are trusted, ``untrusted_fields`` of a trusted tool are
  not (:class:`JsonPath`, :func:`split_trust`).
* **Provenance survives echoes.** A trusted result that repeats a value an untrusted step brought
  earlier does not launder it: the value stays untrusted, with its original source. Only the user's
  own words (and the pack's lists) vouch for a value whatever came before.
* **Budgets fail closed.** Untrusted content beyond the per-content or per-session byte budget
  (``_flowvalues.MAX_CONTENT_BYTES`` / ``MAX_SESSION_BYTES``) counts as untrusted *in full*: from
  then on every value of a covered argument not known to be trusted is attributed to it.

Everything a content item contributes travels in its :class:`FlowContent` (values, markers and
shingles), so every session store persists it as it is and every worker rebuilds the same index.
The index is part of the session state (:mod:`fiveplane._session`): in process memory by default,
in the database with :class:`~fiveplane.SqlSessionStore`. Only findings (with the source action
id, never the value) reach the evidence.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ._flowvalues import KINDS as _KINDS
from ._flowvalues import _leaves as _value_leaves
from ._flowvalues import (
    extract,
    extract_values,
    number_values,
    phrase,
    phrases,
    shingles,
    strings,
    text_of,
    words,
)

__all__ = [
    "EVICTED",
    "FLOW_KINDS",
    "FlowContent",
    "FlowIndex",
    "FlowMatch",
    "JsonPath",
    "Source",
    "extract_values",
    "split_trust",
]

_text = text_of
"""The text of one content item, within the per-content budget (``_flowvalues.MAX_CONTENT_BYTES``)."""
_strings = strings
_shingles = shingles

FLOW_KINDS = frozenset({*_KINDS, "text"})
"""What a flow match can be: a typed value (``email``, ``url``, ``host``, ``domain``, ``account``,
``amount``) or ``text`` (six words copied)."""

# Markers inside FlowContent.values: the stores persist ``values`` as they are, so everything an item
# says about itself travels with it. Typed values look like ``kind:value`` (a letter first).
_VOUCHED = "+"
"""``+email:x``: a value from a trusted field of a partly trusted result."""
_USER = "!user"
"""The item is the user's own words."""
_OVER = "!over"
"""The item exceeded its byte budget: it counts as untrusted in full."""
_BYTES = "!bytes:"
"""``!bytes:N``: UTF-8 bytes of the item that were indexed (the session budget adds them up)."""
_PHRASE = "~"
"""``~<hex>``: a hashed word n-gram of the user's words (``from_user`` of short text)."""
_NUMBER = "#"
"""``#amount:12.00``: a bare number the user typed (``from_user`` of a number)."""


@dataclass(frozen=True)
class Source:
    action_id: str
    tool: str | None


@dataclass(frozen=True)
class FlowMatch:
    field: str
    value: str
    kind: str
    """``value`` (a typed value such as an address) or ``text`` (6 words in common)."""
    source: Source
    typed: str = ""
    """The typed value (``email:…``) for value matches."""

    def describe(self) -> str:
        """A PII-free description: the kind of value and a short digest of it."""
        if self.kind == "text":
            return "text copied"
        digest = hashlib.sha256(self.value.encode()).hexdigest()[:10]
        return f"{_KINDS.get(self.type, 'a value')} (sha256:{digest})"

    @property
    def type(self) -> str:
        """The kind of value: ``email``, ``url``, ``host``, ``domain``, ``account``, ``amount`` or ``text``."""
        return self.typed.split(":", 1)[0] if self.kind != "text" else "text"


# --------------------------------------------------------------------------------------------
# JSON paths (per-field trust)

_MISSING: Any = object()
_SEGMENT = re.compile(
    r"""\.\.(?P<desc>[A-Za-z0-9_$-]+|\*)|\.(?P<key>[A-Za-z0-9_$-]+)|\.(?P<star>\*)|\[(?P<bstar>\*)\]|\[(?P<idx>-?\d+)\]|\[(?P<q>'[^']*'|"[^"]*")\]"""
)


class JsonPath:
    """A small JSONPath subset naming fields of a tool result: ``$``, ``.key``, ``['key']``, ``[*]``,
    ``.*``, ``[N]`` and ``..key`` (any depth). ``$.transactions[*].iban``, ``$[*].subject``."""

    __slots__ = ("source", "steps")

    def __init__(self, source: str) -> None:
        self.source = source
        text = source.strip()
        if not text.startswith("$"):
            raise ValueError(f"JSON path {source!r} must start with '$'")
        steps: list[tuple[str, Any]] = []
        pos = 1
        while pos < len(text):
            m = _SEGMENT.match(text, pos)
            if m is None:
                raise ValueError(f"JSON path {source!r}: cannot read {text[pos:]!r} (supported: .key ['key'] [*] .* [N] ..key)")
            if m.group("desc") is not None:
                steps.append(("desc", None if m.group("desc") == "*" else m.group("desc")))
            elif m.group("key") is not None:
                steps.append(("key", m.group("key")))
            elif m.group("star") is not None or m.group("bstar") is not None:
                steps.append(("any", None))
            elif m.group("idx") is not None:
                steps.append(("index", int(m.group("idx"))))
            else:
                steps.append(("key", m.group("q")[1:-1]))
            pos = m.end()
        self.steps = tuple(steps)

    def __repr__(self) -> str:
        return f"JsonPath({self.source!r})"

    def advance(self, state: int, key: str | int, size: int) -> set[int]:
        """The states after stepping into child ``key`` of a container (``size`` items for lists)."""
        out: set[int] = set()
        if state >= len(self.steps):
            return out
        kind, arg = self.steps[state]
        if kind == "any":
            out.add(state + 1)
        elif kind == "key":
            if key == arg:
                out.add(state + 1)
        elif kind == "index":
            if isinstance(key, int) and (key == arg or (arg < 0 and key == size + arg)):
                out.add(state + 1)
        else:  # desc: match here, or stay and go deeper
            if arg is None or key == arg:
                out.add(state + 1)
            out.add(state)
        return out


def _split(value: Any, states: set[tuple[int, int]], paths: tuple[JsonPath, ...]) -> tuple[Any, Any]:
    """(the parts of ``value`` the paths select, the rest); ``_MISSING`` for an empty side."""
    if any(s >= len(paths[p].steps) for p, s in states):
        return value, _MISSING
    if not states or not isinstance(value, (dict, list, tuple)):
        return _MISSING, value
    items = value.items() if isinstance(value, dict) else enumerate(value)
    sel: dict[Any, Any] = {}
    rest: dict[Any, Any] = {}
    for k, v in items:
        nxt = {(p, n) for p, s in states for n in paths[p].advance(s, k, len(value))}
        a, b = _split(v, nxt, paths)
        if a is not _MISSING:
            sel[k] = a
        if b is not _MISSING:
            rest[k] = b
    if isinstance(value, dict):
        return (sel if sel else _MISSING), (rest if rest else _MISSING)
    return (list(sel.values()) if sel else _MISSING), (list(rest.values()) if rest else _MISSING)


def _structured(content: Any) -> Any:
    """A JSON string result read as its structure (paths apply to it); anything else as it is."""
    if isinstance(content, str):
        s = content.lstrip()
        if s[:1] in ("{", "["):
            try:
                return json.loads(content)
            except ValueError:
                return content
    return content


def split_trust(content: Any, *, trusted: bool, paths: tuple[JsonPath, ...]) -> tuple[Any, Any]:
    """(the untrusted part, the trusted part) of a result whose tool is ``trusted`` except for the
    fields ``paths`` select (untrusted fields of a trusted tool, trusted fields of an untrusted one).
    A side is ``None`` when nothing is in it."""
    if not paths:
        return (None, content) if trusted else (content, None)
    selected, rest = _split(_structured(content), {(i, 0) for i in range(len(paths))}, paths)
    selected = None if selected is _MISSING else selected
    rest = None if rest is _MISSING else rest
    return (selected, rest) if trusted else (rest, selected)


# --------------------------------------------------------------------------------------------
# content items


@dataclass(frozen=True)
class FlowContent:
    """What one content item adds to a session's flow index (extracted once, applied at commit).

    ``values`` holds the item's typed values and its markers (a trusted field's value as ``+kind:v``,
    ``!user``, ``!over``, ``!bytes:N``, the user's phrases and numbers): the stores persist it as it is.
    """

    action_id: str
    tool: str | None
    trusted: bool
    values: frozenset[str]
    shingles: frozenset[bytes]

    @property
    def size(self) -> int:
        return len(self.values) + len(self.shingles)

    @property
    def user(self) -> bool:
        """The user's own words."""
        return _USER in self.values

    @property
    def over_budget(self) -> bool:
        """Untrusted content beyond its byte budget: it counts as untrusted in full."""
        return _OVER in self.values

    @property
    def indexed_bytes(self) -> int:
        for v in self.values:
            if v.startswith(_BYTES):
                return int(v[len(_BYTES) :])
        return 0

    def typed(self) -> Iterable[str]:
        """The item's own typed values (no markers, no vouched values)."""
        return (v for v in self.values if v[:1].isalpha())

    def vouched(self) -> Iterable[str]:
        """Typed values of the trusted fields of a partly trusted item."""
        return (v[1:] for v in self.values if v.startswith(_VOUCHED))

    @classmethod
    def of(
        cls,
        content: Any,
        *,
        trusted: bool,
        action_id: str,
        tool: str | None,
        user: bool = False,
        vouched: Any = None,
        session_bytes: int = 0,
    ) -> FlowContent:
        """Index one content item. ``trusted=False`` with ``vouched`` (the trusted fields' part) makes
        a partly trusted item; ``user=True`` marks the user's own words (trusted, and remembered for
        ``from_user``). ``session_bytes`` already indexed in the session count against its budget."""
        fc = extract(content, session_bytes=session_bytes) if content is not None else None
        values: set[str] = set(fc.values) if fc else set()
        shing: frozenset[bytes] = fc.shingles if fc else frozenset()
        indexed = fc.indexed_bytes if fc else 0
        if not trusted and fc is not None and fc.over_budget:
            values.add(_OVER)
        if vouched is not None and not trusted:
            vc = extract(vouched, session_bytes=session_bytes + indexed)
            values |= {_VOUCHED + v for v in vc.values}
            indexed += vc.indexed_bytes
        if user and trusted and content is not None:
            text = text_of(content)
            values.add(_USER)
            values |= {_PHRASE + h for h in phrases(text)}
            values |= {_NUMBER + n for n in number_values(text)}
        values.add(f"{_BYTES}{indexed}")
        return cls(action_id, tool, trusted, frozenset(values), shing)


EVICTED = Source("evicted", None)
"""The source named when a session's flow index was truncated (its budget was exceeded)."""


@dataclass
class FlowIndex:
    """The values and shingles of untrusted and trusted content seen in one session.

    ``max_entries`` caps the index (values + shingles). Past it the oldest content is dropped and the
    index is marked ``truncated``: from then on every value of a covered argument that is not known
    to be trusted counts as untrusted (fail closed: nothing evicted can launder a value).
    """

    untrusted_values: dict[str, Source] = field(default_factory=dict)
    untrusted_shingles: dict[bytes, Source] = field(default_factory=dict)
    trusted_values: set[str] = field(default_factory=set)
    trusted_shingles: set[bytes] = field(default_factory=set)
    user_values: set[str] = field(default_factory=set)
    """Typed values, phrases and numbers of the user's own words (``from_user``)."""
    user_shingles: set[bytes] = field(default_factory=set)
    sources: int = 0
    contents: list[FlowContent] = field(default_factory=list)
    """Every applied content item, oldest first (what eviction drops and a store persists)."""
    entries: int = 0
    truncated: bool = False
    over_budget: Source | None = None
    """The first untrusted item that exceeded its byte budget (it counts as untrusted in full)."""
    indexed_bytes: int = 0
    """Bytes of content indexed in this session (against ``_flowvalues.MAX_SESSION_BYTES``)."""

    def add(
        self, content: Any, *, trusted: bool, action_id: str, tool: str | None, user: bool = False, vouched: Any = None
    ) -> FlowContent:
        fc = FlowContent.of(
            content,
            trusted=trusted,
            action_id=action_id,
            tool=tool,
            user=user,
            vouched=vouched,
            session_bytes=self.indexed_bytes,
        )
        self.apply(fc)
        return fc

    def apply(self, fc: FlowContent) -> None:
        self.contents.append(fc)
        self.entries += fc.size
        self._index(fc)

    def _index(self, fc: FlowContent) -> None:
        self.indexed_bytes += fc.indexed_bytes
        if fc.trusted:
            typed = set(fc.typed())
            if fc.user:
                # the user's own words vouch for a value whatever came before
                self.trusted_values |= typed
                self.trusted_shingles |= fc.shingles
                self.user_values |= typed
                self.user_values |= {v for v in fc.values if v[:1] in (_PHRASE, _NUMBER)}
                self.user_shingles |= fc.shingles
                return
            # a trusted result repeating what an untrusted step brought earlier does not launder it
            self.trusted_values |= {v for v in typed if v not in self.untrusted_values}
            self.trusted_shingles |= {s for s in fc.shingles if s not in self.untrusted_shingles}
            return
        self.trusted_values |= {v for v in fc.vouched() if v not in self.untrusted_values}
        src = Source(fc.action_id, fc.tool)
        self.sources += 1
        for v in fc.typed():
            self.untrusted_values.setdefault(v, src)
        for s in fc.shingles:
            self.untrusted_shingles.setdefault(s, src)
        if fc.over_budget and self.over_budget is None:
            self.over_budget = src

    def evict(self, max_entries: int) -> int:
        """Drop the oldest content until the index holds at most ``max_entries``; returns how many items went."""
        if self.entries <= max_entries:
            return 0
        dropped = 0
        while self.contents and self.entries > max_entries:
            self.entries -= self.contents.pop(0).size
            dropped += 1
        self.truncated = True
        self.untrusted_values, self.untrusted_shingles = {}, {}
        self.trusted_values, self.trusted_shingles = set(), set()
        self.user_values, self.user_shingles = set(), set()
        self.sources, self.over_budget, self.indexed_bytes = 0, None, 0
        for fc in self.contents:
            self._index(fc)
        return dropped

    @property
    def empty(self) -> bool:
        return not self.truncated and self.over_budget is None and not self.untrusted_values and not self.untrusted_shingles

    def _unknown(self) -> Source | None:
        """Where a value found nowhere comes from: the over-budget item, the evicted content, or nowhere."""
        if self.over_budget is not None:
            return self.over_budget
        return EVICTED if self.truncated else None

    def check(
        self,
        arguments: Any,
        fields: tuple[str, ...] = (),
        *,
        kinds: frozenset[str] | None = None,
        trusted: frozenset[str] | set[str] = frozenset(),
    ) -> list[FlowMatch]:
        """Argument values derived from untrusted content (and not also from trusted content).

        ``fields`` limits the check to some arguments, ``kinds`` to some kinds of match
        (:data:`FLOW_KINDS`); ``trusted`` adds typed values known good (the pack's lists)."""
        if self.empty:
            return []
        unknown = self._unknown()
        want_text = kinds is None or "text" in kinds
        matches: list[FlowMatch] = []
        for path, text in _strings(arguments):
            if fields and not any(path == f or path.startswith(f + ".") or path.startswith(f + "[") for f in fields):
                continue
            for v in extract_values(text):
                if kinds is not None and v.split(":", 1)[0] not in kinds:
                    continue
                if v in self.trusted_values or v in trusted:
                    continue
                src = self.untrusted_values.get(v, unknown)
                if src is not None:
                    matches.append(FlowMatch(path, v.split(":", 1)[1], "value", src, v))
            if not want_text:
                continue
            for s in _shingles(text):
                if s in self.trusted_shingles:
                    continue
                src = self.untrusted_shingles.get(s, unknown)
                if src is not None:
                    matches.append(FlowMatch(path, text[:60], "text", src))
                    break
        return matches

    # ---- provenance, for CEL (from_user, untrusted, source) ---------------------------------------

    def from_user(self, value: Any) -> bool:
        """Did the user type this value? Every typed value in it (an address, a URL, an IBAN, an
        amount) is one the user wrote; a value without typed values is a phrase (or, past five
        words, six-word runs) of the user's words; a number is one the user wrote."""
        parts = [t for _, t in _leaves(value)]
        if not parts:
            return False
        for text in parts:
            typed = extract_values(text)
            if typed:
                if not all(v in self.user_values for v in typed):
                    return False
                continue
            if _is_number(text):
                if not (number_values(text) and all(_NUMBER + n in self.user_values for n in number_values(text))):
                    return False
                continue
            h = phrase(text)
            if h is not None:
                if _PHRASE + h not in self.user_values:
                    return False
                continue
            sh = _shingles(text)
            if not sh or not sh <= self.user_shingles:
                return False
        return True

    def provenance(self, value: Any, trusted: frozenset[str] | set[str] = frozenset()) -> list[FlowMatch]:
        """Where the untrusted parts of ``value`` came from (empty: nothing untrusted in it)."""
        return self.check(value, trusted=trusted)


def _leaves(value: Any) -> list[tuple[str, str]]:
    return list(_value_leaves(value, "value"))


_NUMBER_TEXT = re.compile(r"^\s*[-+]?\d[\d,.' ]*\s*$")


def _is_number(text: str) -> bool:
    return bool(_NUMBER_TEXT.match(text)) and bool(words(text))
