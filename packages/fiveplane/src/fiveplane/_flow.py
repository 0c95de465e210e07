"""Information flow: where did the values in a consequential action come from?

Content from untrusted sources (tool results and retrievals of connectors the policy marks
``trusted: false``: web pages, e-mail, CRM notes, documents) is indexed in the session as it enters:
e-mail addresses, URLs, hosts and domains, IBAN / account numbers, amounts with a currency, and hashed word
6-grams of the text, all normalized first (``_flowvalues.py``). Content from the user's own request and from trusted connectors is indexed as
trusted. When a later invoke/modify action's arguments carry a value found in untrusted content and
not in trusted content, the flow rule of the pack applies (require approval, block or allow), and the
finding names the step the value came from.

The index lives in process memory with the session state; only findings (with the source action id)
reach the evidence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ._flowvalues import KINDS as _KINDS
from ._flowvalues import extract_values, shingles, strings, text_of

__all__ = ["FlowIndex", "FlowMatch", "extract_values"]

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


@dataclass
class FlowIndex:
    """The values and shingles of untrusted and trusted content seen in one session."""

    untrusted_values: dict[str, Source] = field(default_factory=dict)
    untrusted_shingles: dict[bytes, Source] = field(default_factory=dict)
    trusted_values: set[str] = field(default_factory=set)
    trusted_shingles: set[bytes] = field(default_factory=set)
    sources: int = 0

    def add(self, content: Any, *, trusted: bool, action_id: str, tool: str | None) -> None:
        text = _text(content)
        values = extract_values(text)
        shingles = _shingles(text)
        if trusted:
            self.trusted_values |= values
            self.trusted_shingles |= shingles
            return
        src = Source(action_id, tool)
        self.sources += 1
        for v in values:
            self.untrusted_values.setdefault(v, src)
        for s in shingles:
            self.untrusted_shingles.setdefault(s, src)

    @property
    def empty(self) -> bool:
        return not self.untrusted_values and not self.untrusted_shingles

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
                if src is not None and v not in self.trusted_values:
                    matches.append(FlowMatch(path, v.split(":", 1)[1], "value", src, v))
            for s in _shingles(text):
                src = self.untrusted_shingles.get(s)
                if src is not None and s not in self.trusted_shingles:
                    matches.append(FlowMatch(path, text[:60], "text", src))
                    break
        return matches
