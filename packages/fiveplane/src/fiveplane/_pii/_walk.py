"""Walking a payload (tool arguments, a result, documents) into scannable text leaves, and back.

:func:`walk` turns any JSON-like value into a skeleton plus a list of :class:`Leaf` texts (string
values, numbers, dict keys, UTF-8 bytes, the decoded text of base64 blobs, the values inside strings
that hold a JSON object or array) and a list of
:class:`Issue` for what cannot be scanned as it is: strings over the size cap, nesting too deep,
too many leaves, binary data, cycles, values of unknown types, text that is not valid Unicode.
Nothing is skipped silently: every issue is decided by the scanner (block, or cut with a marker),
and :func:`rebuild` puts the (rewritten) leaves back into the original shape (a JSON string whose
values changed is serialized again; an unchanged one is kept byte for byte).

A tool result is often a JSON *string* (``json.dumps(rows)``): parsed, its fields get the per-field
treatment (``ner_skip_fields``, ``evidence_keep``, field names in findings) instead of one long text.

No recursion beyond ``max_depth``, so hostile nesting cannot raise ``RecursionError``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as _dt
import enum
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import PurePath
from typing import Any, Literal

from pydantic import BaseModel

__all__ = ["Cut", "Issue", "IssueKind", "Leaf", "Walk", "rebuild", "walk"]

IssueKind = Literal["oversize", "total", "depth", "leaves", "binary", "unsupported", "cycle", "invalid_text"]

_B64 = re.compile(r"^(data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,)?([A-Za-z0-9+/\r\n]+={0,2})\s*$")
_HEX = re.compile(r"^[0-9A-Fa-f\s]+$")
_LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")


@dataclass
class Leaf:
    """One text to scan, with where it sits."""

    index: int
    path: str
    """``body``, ``items[2].name``, ``metadata.<key>`` (a key itself), ``content`` for a bare string."""
    field: str
    """The nearest dict key (for field globs); empty at the top of a bare value."""
    text: str
    """What is scanned (sanitized, truncated, decoded)."""
    original: Any
    is_key: bool = False
    origin: Literal["str", "int", "float", "bytes", "base64"] = "str"
    b64_prefix: str = ""
    truncated_from: int | None = None
    """Original length when only the first ``max_text_chars`` are kept."""
    sanitized: bool = False
    """Lone surrogates were replaced by U+FFFD: the leaf must be rewritten even with no detection."""


@dataclass
class Issue:
    kind: IssueKind
    path: str
    detail: str


@dataclass(frozen=True)
class Cut:
    """A subtree replaced by a marker (truncate / strip), or kept out of the evidence (block)."""

    marker: str
    issue: Issue


@dataclass(frozen=True)
class _LeafRef:
    index: int


@dataclass
class _DictNode:
    items: list[tuple[_LeafRef | Any, Any]]


@dataclass
class _JsonNode:
    """A string holding JSON, walked as its parsed value."""

    inner: Any
    original: str
    first: int
    """Leaves ``first <= index < end`` come from this string."""
    end: int
    cut: bool
    """Something inside was cut (truncate / strip): the string must be rebuilt."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


@dataclass
class Walk:
    skeleton: Any
    leaves: list[Leaf] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    """Values of metadata label keys met on the way (upper-cased)."""
    total_chars: int = 0


class _Walker:
    def __init__(
        self,
        *,
        max_text_chars: int,
        max_total_chars: int,
        max_depth: int,
        max_leaves: int,
        base64_min_chars: int,
        label_keys: frozenset[str],
        parse_json: bool = True,
    ) -> None:
        self.parse_json = parse_json
        self.max_text = max_text_chars
        self.max_total = max_total_chars
        self.max_depth = max_depth
        self.max_leaves = max_leaves
        self.b64_min = base64_min_chars
        self.label_keys = label_keys
        self.out = Walk(skeleton=None)
        self._open: set[int] = set()

    # ---- leaves ------------------------------------------------------------------------------

    def _issue(self, kind: IssueKind, path: str, detail: str) -> Cut:
        issue = Issue(kind, path, detail)
        self.out.issues.append(issue)
        return Cut(f"[{detail}]", issue)

    def _leaf(self, path: str, fieldname: str, text: str, original: Any, **kw: Any) -> _LeafRef | Cut:
        if len(self.out.leaves) >= self.max_leaves:
            return self._issue("leaves", path, f"removed: more than {self.max_leaves} values")
        sanitized = False
        if _has_surrogates(text):
            # one U+FFFD per lone surrogate keeps offsets 1:1 with the original
            text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
            sanitized = True
            self.out.issues.append(Issue("invalid_text", path, "text with invalid code points (lone surrogates) was normalized"))
        truncated_from = None
        if len(text) > self.max_text:
            truncated_from = len(text)
            text = text[: self.max_text]
            self.out.issues.append(Issue("oversize", path, f"{truncated_from} characters, over the {self.max_text} cap"))
        if self.out.total_chars + len(text) > self.max_total:
            return self._issue("total", path, f"removed: the payload exceeds {self.max_total} characters")
        self.out.total_chars += len(text)
        leaf = Leaf(
            len(self.out.leaves), path, fieldname, text, original, truncated_from=truncated_from, sanitized=sanitized, **kw
        )
        self.out.leaves.append(leaf)
        return _LeafRef(leaf.index)

    def _string(self, value: str, path: str, fieldname: str, depth: int) -> Any:
        if self.parse_json and len(value) >= 2 and value[0] in "{[ \t\r\n" and len(value) <= self.max_text:
            parsed = self._json(value, path, fieldname, depth)
            if parsed is not None:
                return parsed
        if len(value) >= self.b64_min:
            blob = _as_base64(value)
            if blob is not None:
                prefix, raw = blob
                text = _as_text(raw)
                if text is None:
                    return self._issue("binary", path, f"binary data removed ({len(raw)} bytes, base64)")
                return self._leaf(path, fieldname, text, value, origin="base64", b64_prefix=prefix)
        return self._leaf(path, fieldname, value, value)

    def _json(self, value: str, path: str, fieldname: str, depth: int) -> _JsonNode | None:
        text = value.strip()
        if not text or (text[0], text[-1]) not in (("{", "}"), ("[", "]")):
            return None
        try:
            parsed = json.loads(text, parse_constant=_no_constants)
        except (ValueError, RecursionError):
            return None  # not JSON (or hostile nesting): scanned as text
        first, issues = len(self.out.leaves), len(self.out.issues)
        inner = self.node(parsed, path, fieldname, depth)
        cut = any(i.kind != "invalid_text" for i in self.out.issues[issues:])
        return _JsonNode(inner, value, first, len(self.out.leaves), cut)

    # ---- structure ---------------------------------------------------------------------------

    def node(self, value: Any, path: str, fieldname: str, depth: int) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return self._string(value, path, fieldname, depth)
        if isinstance(value, int):
            return self._leaf(path, fieldname, str(value), value, origin="int")
        if isinstance(value, float):
            return self._leaf(path, fieldname, repr(value), value, origin="float")
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            text = _as_text(raw)
            if text is None:
                return self._issue("binary", path, f"binary data removed ({len(raw)} bytes)")
            return self._leaf(path, fieldname, text, raw, origin="bytes")
        if isinstance(value, enum.Enum):
            return self.node(value.value, path, fieldname, depth)
        if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
            return self._leaf(path, fieldname, value.isoformat(), value.isoformat())
        if isinstance(value, (uuid.UUID, Decimal, PurePath)):
            return self._leaf(path, fieldname, str(value), str(value))
        if isinstance(value, BaseModel):
            return self.node(value.model_dump(mode="json"), path, fieldname, depth)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self.node(dataclasses.asdict(value), path, fieldname, depth)
        if isinstance(value, Mapping):
            return self._container(value, path, fieldname, depth, is_map=True)
        if isinstance(value, (list, tuple, set, frozenset)):
            return self._container(value, path, fieldname, depth, is_map=False)
        return self._issue("unsupported", path or "content", f"a value of type {type(value).__name__} cannot be scanned")

    def _container(self, value: Any, path: str, fieldname: str, depth: int, *, is_map: bool) -> Any:
        if depth >= self.max_depth:
            return self._issue("depth", path or "content", f"removed: nested deeper than {self.max_depth} levels")
        if id(value) in self._open:
            return self._issue("cycle", path or "content", "removed: the value contains itself")
        self._open.add(id(value))
        try:
            if is_map:
                items: list[tuple[_LeafRef | Any, Any]] = []
                for k, v in value.items():
                    key = k if isinstance(k, str) else str(k)
                    child_path = f"{path}.{key}" if path else key
                    if key.lower() in self.label_keys:
                        self._labels(v)
                    key_ref = self._leaf(f"{child_path}.<key>", key, key, key, is_key=True) if key else key
                    if isinstance(key_ref, Cut):
                        break
                    items.append((key_ref, self.node(v, child_path, key, depth + 1)))
                return _DictNode(items)
            children = []
            seq = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
            for i, v in enumerate(seq):
                children.append(self.node(v, f"{path}[{i}]", fieldname, depth + 1))
            return children
        finally:
            self._open.discard(id(value))

    def _labels(self, value: Any) -> None:
        values = [value] if isinstance(value, str) else value if isinstance(value, (list, tuple)) else []
        for v in values:
            if isinstance(v, str) and _LABEL.match(v.strip()):
                self.out.labels.add(v.strip().upper())


def walk(
    value: Any,
    *,
    max_text_chars: int,
    max_total_chars: int,
    max_depth: int,
    max_leaves: int,
    base64_min_chars: int = 256,
    label_keys: frozenset[str] = frozenset(),
    root: str = "",
    parse_json: bool = True,
) -> Walk:
    """Walk ``value`` into leaves and issues (see the module docstring)."""
    w = _Walker(
        max_text_chars=max_text_chars,
        max_total_chars=max_total_chars,
        max_depth=max_depth,
        max_leaves=max_leaves,
        base64_min_chars=base64_min_chars,
        label_keys=label_keys,
        parse_json=parse_json,
    )
    w.out.skeleton = w.node(value, root, root, 0)
    return w.out


def rebuild(skeleton: Any, leaves: list[Leaf], replacements: Mapping[int, str], *, cut: bool) -> Any:
    """The value with each leaf replaced by ``replacements[index]`` (or its original).

    ``cut``: replace :class:`Cut` subtrees by their marker (truncate / strip / evidence); otherwise
    a Cut is an error (the action must have been blocked).
    """

    def build(node: Any) -> Any:
        if isinstance(node, _LeafRef):
            leaf = leaves[node.index]
            new = replacements.get(node.index)
            if new is None:
                return leaf.original
            if leaf.origin == "bytes":
                return new.encode("utf-8")
            if leaf.origin == "base64":
                return leaf.b64_prefix + base64.b64encode(new.encode("utf-8")).decode("ascii")
            return new
        if isinstance(node, _JsonNode):
            if not (node.cut and cut) and not any(i in replacements for i in range(node.first, node.end)):
                return node.original
            return _dumps(build(node.inner), node.original)
        if isinstance(node, Cut):
            if not cut:
                raise ValueError(f"unscannable data at {node.issue.path}: {node.issue.detail}")
            return node.marker
        if isinstance(node, _DictNode):
            out: dict[str, Any] = {}
            for key, child in node.items:
                k = build(key) if isinstance(key, _LeafRef) else key
                k = k.decode("utf-8") if isinstance(k, bytes) else str(k)
                base, n = k, 2
                while k in out:
                    k, n = f"{base}#{n}", n + 1
                out[k] = build(child)
            return out
        if isinstance(node, list):
            return [build(c) for c in node]
        return node

    return build(skeleton)


def _dumps(value: Any, original: str) -> str:
    """JSON text of a rewritten value, in the layout of the string it came from (indented or not,
    compact separators or not)."""
    indent = 2 if "\n" in original.strip() else None
    compact = indent is None and '": ' not in original and ", " not in original
    return json.dumps(value, ensure_ascii=False, indent=indent, separators=(",", ":") if compact else None)


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _as_text(raw: bytes) -> str | None:
    """Decode UTF-8 bytes that look like text; ``None`` for binary."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text:
        return text
    controls = sum(1 for c in text if ord(c) < 32 and c not in "\t\n\r\f")
    return None if controls > max(2, len(text) // 100) else text


def _as_base64(value: str) -> tuple[str, bytes] | None:
    m = _B64.match(value)
    if m is None:
        return None
    prefix, body = m.group(1) or "", m.group(2)
    if not prefix and _HEX.match(body):
        return None  # a long hex string is text, not base64
    compact = re.sub(r"\s", "", body)
    if not prefix and (len(compact) % 4 != 0 or not re.search(r"[A-Za-z]", compact) or not re.search(r"[0-9+/]", compact)):
        return None
    try:
        return prefix, base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
