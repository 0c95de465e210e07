"""Normalization before detection: scan the text as a reader (or a URL decoder) would see it.

Obfuscated values slip past regex and NER recognizers: ``dana.whitfield%40globex-corp.com``
(percent-encoding), ``ｄａｎａ＠ｇｌｏｂｅｘ．ｃｏｍ`` and ``４１１１ １１１１ １１１１ １１１１`` (full-width
forms), ``dana\\u200b.whitfield@globex.com`` (a zero-width space splitting the address, so only a
suffix matches and the prefix survives redaction). :func:`normalize` undoes all three, repeatedly
until nothing changes (``%25 40`` → ``%40`` → ``@``; ``％４０`` → ``%40`` → ``@``):

1. percent-decoding of ``%XX`` runs that are valid UTF-8 (other ``%`` stay as they are);
2. removal of invisible characters: every format character (Unicode category ``Cf``: zero-width
   space / joiners, word joiner, BOM, soft hyphen, bidi controls, tag characters, ...), variation
   selectors, the combining grapheme joiner and the Hangul fillers;
3. NFKC (full-width and compatibility forms to their plain equivalents), per base character with
   its combining marks.

Every character of the normalized text remembers the span of the original it came from, so a
detection on the normalized text maps back to the *whole* original span (:meth:`Normalized.span`)
and redaction removes the obfuscated value entirely, zero-width characters and ``%XX`` included.

Plain ASCII without ``%XX`` (most traffic) is returned as it is, with no mapping. Imports neither
Presidio nor spaCy.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["Normalized", "canonical", "is_invisible", "normalize"]

_PCT = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_EXTRA_INVISIBLE = frozenset({0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0, *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)})
"""Invisible characters outside category Cf: combining grapheme joiner, Hangul fillers, variation selectors."""
_MAX_ROUNDS = 4


def is_invisible(ch: str) -> bool:
    """A character that renders as nothing and is dropped before detection."""
    return unicodedata.category(ch) == "Cf" or ord(ch) in _EXTRA_INVISIBLE


@dataclass(frozen=True, slots=True)
class Normalized:
    """A normalized text and, unless it equals the original, where each character came from."""

    text: str
    starts: tuple[int, ...] | None = None
    """Original start offset of each character of ``text`` (``None``: ``text`` is the original)."""
    ends: tuple[int, ...] | None = None
    """Original end offset of each character of ``text``."""

    @property
    def changed(self) -> bool:
        return self.starts is not None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of ``text[start:end]`` (covering every original character it came from)."""
        if self.starts is None or self.ends is None:
            return start, end
        if end <= start:
            pos = self.starts[start] if start < len(self.starts) else (self.ends[-1] if self.ends else 0)
            return pos, pos
        return self.starts[start], self.ends[end - 1]


def _utf8_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _percent(chars: list[str], starts: list[int], ends: list[int]) -> bool:
    """Decode ``%XX`` runs in place (units stay one code point each); True if anything changed."""
    text = "".join(chars)
    if "%" not in text:
        return False
    out_c: list[str] = []
    out_s: list[int] = []
    out_e: list[int] = []
    pos = 0
    changed = False
    for m in _PCT.finditer(text):
        a, b = m.span()
        out_c += chars[pos:a]
        out_s += starts[pos:a]
        out_e += ends[pos:a]
        raw = bytes.fromhex(text[a:b].replace("%", ""))
        i = 0
        while i < len(raw):
            n = _utf8_length(raw[i])
            piece = raw[i : i + n] if n else b""
            ch: str | None = None
            if n and len(piece) == n:
                try:
                    ch = piece.decode("utf-8")
                except UnicodeDecodeError:
                    ch = None
            u = a + 3 * i
            if ch is None:  # not UTF-8: the three characters stay as they were
                out_c += chars[u : u + 3]
                out_s += starts[u : u + 3]
                out_e += ends[u : u + 3]
                i += 1
                continue
            out_c.append(ch)
            out_s.append(starts[u])
            out_e.append(ends[u + 3 * n - 1])
            changed = True
            i += n
        pos = b
    if not changed:
        return False
    out_c += chars[pos:]
    out_s += starts[pos:]
    out_e += ends[pos:]
    chars[:], starts[:], ends[:] = out_c, out_s, out_e
    return True


def _fold(chars: list[str], starts: list[int], ends: list[int]) -> bool:
    """Drop invisible characters and apply NFKC per base character + combining marks, in place."""
    out_c: list[str] = []
    out_s: list[int] = []
    out_e: list[int] = []
    changed = False
    n = len(chars)
    i = 0
    while i < n:
        c = chars[i]
        if c < "\x80":
            j = i + 1
            if j >= n or chars[j] < "\x80" or not unicodedata.combining(chars[j]):
                out_c.append(c)
                out_s.append(starts[i])
                out_e.append(ends[i])
                i = j
                continue
        if is_invisible(c):
            changed = True
            i += 1
            continue
        j = i + 1
        while j < n and chars[j] >= "\x80" and (unicodedata.combining(chars[j]) or is_invisible(chars[j])):
            j += 1
        group = "".join(ch for ch in chars[i:j] if not is_invisible(ch))
        folded = unicodedata.normalize("NFKC", group)
        if folded != "".join(chars[i:j]):
            changed = True
        s, e = starts[i], ends[j - 1]
        for ch in folded:
            out_c.append(ch)
            out_s.append(s)
            out_e.append(e)
        i = j
    if changed:
        chars[:], starts[:], ends[:] = out_c, out_s, out_e
    return changed


def _needs_work(text: str) -> bool:
    if text.isascii():
        return "%" in text and _PCT.search(text) is not None
    if _PCT.search(text) is not None or not unicodedata.is_normalized("NFKC", text):
        return True
    return any(is_invisible(m.group()) for m in _NON_ASCII.finditer(text))


def normalize(text: str) -> Normalized:
    """The text to scan for ``text`` (see the module docstring)."""
    if not _needs_work(text):
        return Normalized(text)
    chars = list(text)
    starts = list(range(len(text)))
    ends = list(range(1, len(text) + 1))
    for _ in range(_MAX_ROUNDS):
        a = _percent(chars, starts, ends)
        b = _fold(chars, starts, ends)
        if not (a or b):
            break
    out = "".join(chars)
    if out == text:
        return Normalized(text)
    return Normalized(out, tuple(starts), tuple(ends))


def canonical(value: str) -> str:
    """The normalized form of a detected value (what keyed operators hash and pseudonymize, so an
    obfuscated and a plain spelling of one value get the same token)."""
    return normalize(value).text
