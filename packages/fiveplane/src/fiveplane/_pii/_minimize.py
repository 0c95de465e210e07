"""Data minimization: a tool receives only the argument fields its data rule lists.

Field paths are dotted (``to``, ``customer.email``); each segment is a glob (``*``, ``?``, ``[..]``)
matched against dict keys (case-sensitive); lists are traversed (``items.sku`` keeps the ``sku`` of
every item). A path naming a field keeps its whole value.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

__all__ = ["field_matches", "minimize"]


def minimize(arguments: dict[str, Any], allowed: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """``(kept arguments, removed field paths)``."""
    patterns = [tuple(p.split(".")) for p in allowed]
    removed: list[str] = []
    kept = _filter(arguments, patterns, "", removed)
    return kept, removed


def _filter(value: Any, patterns: list[tuple[str, ...]], path: str, removed: list[str]) -> Any:
    """``value`` restricted to ``patterns`` (none of which is empty)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, child in value.items():
            sub = [p[1:] for p in patterns if fnmatchcase(str(key), p[0])]
            child_path = f"{path}.{key}" if path else str(key)
            if not sub:
                removed.append(child_path)
            elif any(len(p) == 0 for p in sub):
                out[key] = child
            elif isinstance(child, (dict, list, tuple)):
                out[key] = _filter(child, sub, child_path, removed)
            else:
                removed.append(child_path)
        return out
    items = []
    for i, item in enumerate(value):
        if isinstance(item, (dict, list, tuple)):
            items.append(_filter(item, patterns, f"{path}[{i}]", removed))
        else:
            removed.append(f"{path}[{i}]")
    return items


def field_matches(path: str, fieldname: str, globs: tuple[str, ...]) -> bool:
    """Does a leaf (dotted ``path``, nearest key ``fieldname``) fall under one of ``globs``?

    A glob without a dot matches the field name (case-insensitive); a dotted glob matches the path
    (list indices ignored) or a prefix of it.
    """
    if not globs:
        return False
    plain = _strip_indices(path.removesuffix(".<key>"))
    name = fieldname.lower()
    for g in globs:
        if "." in g:
            gl = g.lower()
            pl = plain.lower()
            if fnmatchcase(pl, gl) or fnmatchcase(pl, gl + ".*"):
                return True
        elif fnmatchcase(name, g.lower()):
            return True
    return False


def _strip_indices(path: str) -> str:
    out = []
    depth = 0
    for c in path:
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif depth == 0:
            out.append(c)
    return "".join(out)
