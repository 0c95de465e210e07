"""Information flow: where did the values in a consequential action come from?

Content from untrusted sources (tool results and retrievals of connectors the policy marks
``trusted: false``: web pages, e-mail, CRM notes, documents) is indexed in the session as it enters:
e-mail addresses, URLs, hosts and domains, IBAN / account numbers, amounts with a currency, and hashed word
6-grams of the text, all normalized first (``_flowvalues.py``). Content from the user's own request and from trusted connectors is indexed as
trusted. When a later invoke/modify action's arguments carry a value found in untrusted content and
not in trusted content, the flow rule of the pack applies (require approval, block or allow), and the
finding names the step the value came from.

The index is part of the session state (:mod:`fiveplane._session`): in process memory by default, in
the database with :class:`~fiveplane.SqlSessionStore` so every worker sees the same index. Only
findings (with the source action id, never the value) reach the evidence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ._flowvalues import KINDS as _KINDS
from ._flowvalues import extract_values, shingles, strings, text_of

__all__ = ["EVICTED", "FlowContent", "FlowIndex", "FlowMatch", "Source", "extract_values"]

_text = text_of
"""The text of one content item, within the per-content budget (``_flowvalues.MAX_CONTENT_BYTES``)."""
_strings = strings
_shingles = shingles


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
        return self.typed.split(":", 1)[0]


@dataclass(frozen=True)
class FlowContent:
    """What one content item adds to a session's flow index (extracted once, applied at commit)."""

    action_id: str
    tool: str | None
    trusted: bool
    values: frozenset[str]
    shingles: frozenset[bytes]

    @property
    def size(self) -> int:
        return len(self.values) + len(self.shingles)

    @classmethod
    def of(cls, content: Any, *, trusted: bool, action_id: str, tool: str | None) -> FlowContent:
        text = _text(content)
        return cls(action_id, tool, trusted, frozenset(extract_values(text)), frozenset(_shingles(text)))


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
    sources: int = 0
    contents: list[FlowContent] = field(default_factory=list)
    """Every applied content item, oldest first (what eviction drops and a store persists)."""
    entries: int = 0
    truncated: bool = False

    def add(self, content: Any, *, trusted: bool, action_id: str, tool: str | None) -> FlowContent:
        fc = FlowContent.of(content, trusted=trusted, action_id=action_id, tool=tool)
        self.apply(fc)
        return fc

    def apply(self, fc: FlowContent) -> None:
        self.contents.append(fc)
        self.entries += fc.size
        self._index(fc)

    def _index(self, fc: FlowContent) -> None:
        if fc.trusted:
            self.trusted_values |= fc.values
            self.trusted_shingles |= fc.shingles
            return
        src = Source(fc.action_id, fc.tool)
        self.sources += 1
        for v in fc.values:
            self.untrusted_values.setdefault(v, src)
        for s in fc.shingles:
            self.untrusted_shingles.setdefault(s, src)

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
        self.sources = 0
        for fc in self.contents:
            self._index(fc)
        return dropped

    @property
    def empty(self) -> bool:
        return not self.truncated and not self.untrusted_values and not self.untrusted_shingles

    def check(self, arguments: Any, fields: tuple[str, ...] = ()) -> list[FlowMatch]:
        """Argument values derived from untrusted content (and not also from trusted content)."""
        if self.empty:
            return []
        matches: list[FlowMatch] = []
        for path, text in _strings(arguments):
            if fields and not any(path == f or path.startswith(f + ".") or path.startswith(f + "[") for f in fields):
                continue
            for v in extract_values(text):
                src = self.untrusted_values.get(v)
                if src is None and self.truncated:
                    src = EVICTED
                if src is not None and v not in self.trusted_values:
                    matches.append(FlowMatch(path, v.split(":", 1)[1], "value", src, v))
            for s in _shingles(text):
                src = self.untrusted_shingles.get(s)
                if src is None and self.truncated:
                    src = EVICTED
                if src is not None and s not in self.trusted_shingles:
                    matches.append(FlowMatch(path, text[:60], "text", src))
                    break
        return matches
