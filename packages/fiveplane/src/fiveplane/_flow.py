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
import threading
from collections.abc import Iterable
from dataclasses import FrozenInstanceError, dataclass
from typing import Any, Generic, TypeVar, overload

from ._flowvalues import KINDS as _KINDS
from ._flowvalues import _leaves as _value_leaves
from ._flowvalues import (
    cut_content,
    extract_values,
    normalize,
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


@dataclass(frozen=True, slots=True)
class _Deferred:
    """What a lazy :class:`FlowContent` extracts when its values are first read: the texts
    :meth:`FlowContent.of` would have extracted at once (cut to their budgets already)."""

    text: str | None
    """The item's text within its budgets (``None``: no content)."""
    vouched: str | None
    """The text of the trusted fields of a partly trusted item (``None``: none)."""
    user: str | None
    """The user's own words (phrases and numbers for ``from_user``; ``None``: not the user's)."""
    markers: frozenset[str]
    """The markers known without extracting (``!bytes:N``, ``!over``, ``!user``)."""
    bound: int
    """An upper bound of the item's :attr:`FlowContent.size` (lets the session cap skip extracting)."""

    def extract(self) -> tuple[frozenset[str], frozenset[bytes]]:
        """Exactly what the eager path computes (``extract`` of each text)."""
        values: set[str] = set(extract_values(self.text)) if self.text else set()
        shing: frozenset[bytes] = frozenset(shingles(self.text)) if self.text else frozenset()
        if self.vouched:
            values |= {_VOUCHED + v for v in extract_values(self.vouched)}
        if self.user is not None:
            values |= {_PHRASE + h for h in phrases(self.user)}
            values |= {_NUMBER + n for n in number_values(self.user)}
        values |= self.markers
        return frozenset(values), shing


_SIZE_PER_CHAR = 16
"""Entries (values + shingles) one character of a normalized text can give at most. Typed values:
≤ 2 per ``@``, ≤ 3 per URL (≥ 7 characters) or host (≥ 3) match, 1 per account or amount match
(≥ 2), matches not overlapping, in the text and in its de-obfuscated form (never longer): < 10.
Shingles: ≤ 1 per word, a word and its separator ≥ 2 characters of a case-folded text (≤ 3 times
longer): ≤ 1.5 (+1). The user's phrases: ≤ 5 per token (ditto): ≤ 7.5 (+5); numbers ≤ 1. The main
text gives < 12, the vouched text < 10, the user's text < 9."""


def _size_bound(*texts: str | None) -> int:
    """An upper bound of the entries the texts can add to a flow index (see :data:`_SIZE_PER_CHAR`)."""
    return 8 + _SIZE_PER_CHAR * sum(len(normalize(t)) for t in texts if t)


class FlowContent:
    """What one content item adds to a session's flow index (its budget figures known at once,
    its values extracted the first time they are read, then kept).

    ``values`` holds the item's typed values and its markers (a trusted field's value as ``+kind:v``,
    ``!user``, ``!over``, ``!bytes:N``, the user's phrases and numbers): the stores persist it as it is.

    Most items are never read: a session's index is consulted only when a consequential action is
    checked against the pack's flow rules or a condition calls a provenance function. So
    :meth:`of` defers the extraction (the regular expressions, the shingles) until then; the result
    is exactly that of extracting at once (``tests/flow/test_lazy_flow.py`` checks it against the
    eager extraction this replaced).
    """

    __slots__ = ("_lazy", "_shingles", "_values", "action_id", "tool", "trusted")

    action_id: str
    tool: str | None
    trusted: bool
    _values: frozenset[str]
    _shingles: frozenset[bytes]
    _lazy: _Deferred | None

    def __init__(
        self, action_id: str, tool: str | None, trusted: bool, values: frozenset[str], shingles: frozenset[bytes]
    ) -> None:
        object.__setattr__(self, "action_id", action_id)
        object.__setattr__(self, "tool", tool)
        object.__setattr__(self, "trusted", trusted)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_shingles", shingles)
        object.__setattr__(self, "_lazy", None)

    @classmethod
    def _deferred(cls, action_id: str, tool: str | None, trusted: bool, lazy: _Deferred) -> FlowContent:
        fc = cls(action_id, tool, trusted, frozenset(), frozenset())
        object.__setattr__(fc, "_lazy", lazy)
        return fc

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _force(self) -> None:
        lazy = self._lazy
        if lazy is not None:
            values, shing = lazy.extract()
            object.__setattr__(self, "_values", values)
            object.__setattr__(self, "_shingles", shing)
            object.__setattr__(self, "_lazy", None)  # last: a reader that sees None sees both sets

    @property
    def extracted(self) -> bool:
        """Whether the values are known (extracted, or given)."""
        return self._lazy is None

    @property
    def values(self) -> frozenset[str]:
        if self._lazy is not None:
            self._force()
        return self._values

    @property
    def shingles(self) -> frozenset[bytes]:
        if self._lazy is not None:
            self._force()
        return self._shingles

    def _key(self) -> tuple[str, str | None, bool, frozenset[str], frozenset[bytes]]:
        return (self.action_id, self.tool, self.trusted, self.values, self.shingles)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, FlowContent)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"FlowContent(action_id={self.action_id!r}, tool={self.tool!r}, trusted={self.trusted!r}, "
            f"values={self.values!r}, shingles={self.shingles!r})"
        )

    def __reduce__(self) -> Any:
        return (FlowContent, self._key())

    @property
    def size(self) -> int:
        return len(self.values) + len(self.shingles)

    @property
    def size_bound(self) -> int:
        """An upper bound of :attr:`size`, known without extracting (exact once extracted)."""
        lazy = self._lazy
        return lazy.bound if lazy is not None else len(self._values) + len(self._shingles)

    def _marked(self, marker: str) -> bool:
        lazy = self._lazy
        return marker in (lazy.markers if lazy is not None else self._values)

    @property
    def user(self) -> bool:
        """The user's own words."""
        return self._marked(_USER)

    @property
    def over_budget(self) -> bool:
        """Untrusted content beyond its byte budget: it counts as untrusted in full."""
        return self._marked(_OVER)

    @property
    def indexed_bytes(self) -> int:
        lazy = self._lazy
        for v in lazy.markers if lazy is not None else self._values:
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
        lazy: bool = True,
    ) -> FlowContent:
        """Index one content item. ``trusted=False`` with ``vouched`` (the trusted fields' part) makes
        a partly trusted item; ``user=True`` marks the user's own words (trusted, and remembered for
        ``from_user``). ``session_bytes`` already indexed in the session count against its budget.

        The texts are cut to their budgets at once (so :attr:`indexed_bytes`, :attr:`over_budget`
        and the next item's budget are exact); with ``lazy`` (the default) the values are extracted
        from those texts when first read, otherwise now."""
        markers: set[str] = set()
        text: str | None = None
        indexed = 0
        if content is not None:
            text, _, indexed, cut = cut_content(content, session_bytes=session_bytes)
            if not trusted and cut:
                markers.add(_OVER)
        vtext: str | None = None
        if vouched is not None and not trusted:
            vtext, _, vbytes, _ = cut_content(vouched, session_bytes=session_bytes + indexed)
            indexed += vbytes
        utext: str | None = None
        if user and trusted and content is not None:
            utext = text_of(content)
            markers.add(_USER)
        markers.add(f"{_BYTES}{indexed}")
        deferred = _Deferred(text, vtext, utext, frozenset(markers), _size_bound(text, vtext, utext) + len(markers))
        fc = cls._deferred(action_id, tool, trusted, deferred)
        if not lazy:
            fc._force()
        return fc


EVICT_TO = 0.9
"""Past its cap a flow index drops its oldest content down to this share of the cap (see :meth:`FlowIndex.evict`)."""

EVICTED = Source("evicted", None)
"""The source named when a session's flow index was truncated (its budget was exceeded)."""


_T = TypeVar("_T")


class _Settled(Generic[_T]):
    """A read of a :class:`FlowIndex`: its waiting items are indexed first, then the private attribute
    of the same name (``_name``) is returned."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = "_" + name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Settled[_T]: ...
    @overload
    def __get__(self, obj: FlowIndex, owner: type | None = None) -> _T: ...
    def __get__(self, obj: FlowIndex | None, owner: type | None = None) -> _T | _Settled[_T]:
        if obj is None:
            return self
        obj._settle()
        return getattr(obj, self._attr)  # type: ignore[no-any-return]


class FlowIndex:
    """The values and shingles of untrusted and trusted content seen in one session.

    ``max_entries`` caps the index (values + shingles). Past it the oldest content is dropped (down to
    90 % of the cap, so the rebuild this takes is rare) and the index is marked ``truncated``: from then on every value of a covered argument that is not known
    to be trusted counts as untrusted (fail closed: nothing evicted can launder a value).

    Content whose values are not extracted yet (a lazy :class:`FlowContent`) waits, in order, until
    the index is read (a check, a provenance function, :attr:`empty`, :attr:`entries`...): it is then
    indexed exactly as if it had been indexed on arrival. The cap is enforced without extracting as
    long as an upper bound of the entries proves it is not reached.
    """

    def __init__(
        self,
        untrusted_values: dict[str, Source] | None = None,
        untrusted_shingles: dict[bytes, Source] | None = None,
        trusted_values: set[str] | None = None,
        trusted_shingles: set[bytes] | None = None,
        user_values: set[str] | None = None,
        user_shingles: set[bytes] | None = None,
        sources: int = 0,
        contents: list[FlowContent] | None = None,
        entries: int = 0,
        truncated: bool = False,
        over_budget: Source | None = None,
        indexed_bytes: int = 0,
    ) -> None:
        self._untrusted_values: dict[str, Source] = {} if untrusted_values is None else untrusted_values
        self._untrusted_shingles: dict[bytes, Source] = {} if untrusted_shingles is None else untrusted_shingles
        self._trusted_values: set[str] = set() if trusted_values is None else trusted_values
        self._trusted_shingles: set[bytes] = set() if trusted_shingles is None else trusted_shingles
        self._user_values: set[str] = set() if user_values is None else user_values
        """Typed values, phrases and numbers of the user's own words (``from_user``)."""
        self._user_shingles: set[bytes] = set() if user_shingles is None else user_shingles
        self._sources = sources
        self.contents: list[FlowContent] = [] if contents is None else contents
        """Every applied content item, oldest first (what eviction drops and a store persists)."""
        self._entries = entries
        self.truncated = truncated
        self._over_budget = over_budget
        """The first untrusted item that exceeded its byte budget (it counts as untrusted in full)."""
        self.indexed_bytes = indexed_bytes
        """Bytes of content indexed in this session (against ``_flowvalues.MAX_SESSION_BYTES``)."""
        self._pending: list[FlowContent] = []
        """Applied items not indexed yet (oldest first): their values are extracted when the index is read."""
        self._pending_bound = 0
        self._settling = threading.Lock()

    def __repr__(self) -> str:
        return f"FlowIndex(contents={len(self.contents)}, pending={len(self._pending)}, truncated={self.truncated})"

    # ---- the index, brought up to date before it is read ----------------------------------------

    def _settle(self) -> None:
        """Index the waiting items, oldest first (extracting their values)."""
        if not self._pending:
            return
        with self._settling:  # two readers (a decision, a store's reader) never index an item twice
            pending = self._pending
            while pending:
                fc = pending[0]
                self._entries += fc.size
                self._index(fc)
                pending.pop(0)
            self._pending_bound = 0

    @property
    def pending(self) -> int:
        """Items applied but not indexed yet (their values not extracted)."""
        return len(self._pending)

    # reads of the index: the waiting items are indexed first
    untrusted_values: _Settled[dict[str, Source]] = _Settled()
    untrusted_shingles: _Settled[dict[bytes, Source]] = _Settled()
    trusted_values: _Settled[set[str]] = _Settled()
    trusted_shingles: _Settled[set[bytes]] = _Settled()
    user_values: _Settled[set[str]] = _Settled()
    user_shingles: _Settled[set[bytes]] = _Settled()
    sources: _Settled[int] = _Settled()
    entries: _Settled[int] = _Settled()
    over_budget: _Settled[Source | None] = _Settled()

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
        self.indexed_bytes += fc.indexed_bytes
        if self._pending or not fc.extracted:
            with self._settling:
                self._pending.append(fc)  # after every item waiting already: the order is the index's
                self._pending_bound += fc.size_bound
            return
        self._entries += fc.size
        self._index(fc)

    def _index(self, fc: FlowContent) -> None:
        if fc.trusted:
            typed = set(fc.typed())
            if fc.user:
                # the user's own words vouch for a value whatever came before
                self._trusted_values |= typed
                self._trusted_shingles |= fc.shingles
                self._user_values |= typed
                self._user_values |= {v for v in fc.values if v[:1] in (_PHRASE, _NUMBER)}
                self._user_shingles |= fc.shingles
                return
            # a trusted result repeating what an untrusted step brought earlier does not launder it
            self._trusted_values |= {v for v in typed if v not in self._untrusted_values}
            self._trusted_shingles |= {s for s in fc.shingles if s not in self._untrusted_shingles}
            return
        self._trusted_values |= {v for v in fc.vouched() if v not in self._untrusted_values}
        src = Source(fc.action_id, fc.tool)
        self._sources += 1
        for v in fc.typed():
            self._untrusted_values.setdefault(v, src)
        for s in fc.shingles:
            self._untrusted_shingles.setdefault(s, src)
        if fc.over_budget and self._over_budget is None:
            self._over_budget = src

    def evict(self, max_entries: int) -> int:
        """Past ``max_entries``, drop the oldest content until the index holds at most
        :data:`EVICT_TO` of it; returns how many items went.

        Dropping is a rebuild of the index from what is left (the order of the remaining items
        decides what counts as trusted), so it goes down to a low-water mark: a session at its cap
        rebuilds once per tenth of the cap added, not on every step. Dropping more is never less
        safe: the index is ``truncated`` from then on (unknown values count as untrusted) and what
        went can only have vouched for values, never laundered one."""
        if self._pending and self._entries + self._pending_bound <= max_entries:
            return 0  # the bound proves the cap is not reached: nothing to extract to know it
        self._settle()
        if self._entries <= max_entries:
            return 0
        low = int(max_entries * EVICT_TO)
        dropped = 0
        while self.contents and self._entries > low:
            self._entries -= self.contents.pop(0).size
            dropped += 1
        self.truncated = True
        self._untrusted_values, self._untrusted_shingles = {}, {}
        self._trusted_values, self._trusted_shingles = set(), set()
        self._user_values, self._user_shingles = set(), set()
        self._sources, self._over_budget, self.indexed_bytes = 0, None, 0
        for fc in self.contents:
            self.indexed_bytes += fc.indexed_bytes
            self._index(fc)
        return dropped

    @property
    def empty(self) -> bool:
        self._settle()
        return not self.truncated and self._over_budget is None and not self._untrusted_values and not self._untrusted_shingles

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
