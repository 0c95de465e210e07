"""NIST AI RMF tags for evidence records, from the one mapping file ``nist_ai_rmf.yaml``.

Every exported event carries the functions (GOVERN, MAP, MEASURE, MANAGE) and the subcategories
(``MEASURE 2.7``…) its record serves. The rules match on the record's envelope only — kind, point,
verdicts, mode, rule ids, planes with findings, obligations, outcome status — so a record keeps its
tags after its payload is erased.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["FUNCTIONS", "NistMapping", "NistTags", "load_nist_mapping"]

FUNCTIONS = ("GOVERN", "MAP", "MEASURE", "MANAGE")

_MATCH_KEYS = frozenset(
    {
        "kinds",
        "points",
        "verdicts",
        "policy_verdicts",
        "modes",
        "rule_ids",
        "planes",
        "obligations",
        "statuses",
        "errors",
        "divergent",
    }
)


@dataclass(frozen=True)
class NistTags:
    """What one record serves: functions, subcategories and the ids of the rules that matched."""

    functions: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, list[str]]:
        return {"functions": list(self.functions), "categories": list(self.categories)}


def _category_key(cat: str) -> tuple[int, int, int]:
    fn, _, num = cat.partition(" ")
    major, _, minor = num.partition(".")
    return (FUNCTIONS.index(fn) if fn in FUNCTIONS else 9, int(major or 0), int(minor or 0))


@dataclass(frozen=True)
class _Rule:
    id: str
    match: dict[str, Any]
    categories: tuple[str, ...]
    why: str

    def matches(self, kind: str, meta: dict[str, Any]) -> bool:
        m = self.match
        kinds = m.get("kinds")
        if kinds is not None and not any(fnmatchcase(kind, k) for k in kinds):
            return False
        if "points" in m and meta.get("point") not in m["points"]:
            return False
        if "verdicts" in m and meta.get("verdict") not in m["verdicts"]:
            return False
        if "policy_verdicts" in m and meta.get("policy_verdict") not in m["policy_verdicts"]:
            return False
        if "modes" in m and meta.get("mode") not in m["modes"]:
            return False
        if "statuses" in m and meta.get("status") not in m["statuses"]:
            return False
        if "rule_ids" in m:
            ids = meta.get("rule_ids") or []
            if not any(fnmatchcase(str(r), g) for r in ids for g in m["rule_ids"]):
                return False
        if "planes" in m:
            planes = meta.get("planes") or {}
            if not any(p in planes for p in m["planes"]):
                return False
        if "obligations" in m:
            obs = meta.get("obligations") or []
            if not any(o in obs for o in m["obligations"]):
                return False
        if "errors" in m and bool(meta.get("errors")) is not bool(m["errors"]):
            return False
        if "divergent" in m:
            div = meta.get("policy_verdict") is not None and meta.get("policy_verdict") != meta.get("verdict")
            if div is not bool(m["divergent"]):
                return False
        return True


@dataclass(frozen=True)
class NistMapping:
    """The mapping table: functions, subcategory statements, evidence rules and policy controls."""

    framework: str
    source: str
    functions: dict[str, str]
    categories: dict[str, str]
    rules: tuple[_Rule, ...]
    controls: dict[str, Any] = field(default_factory=dict)
    _cache: dict[tuple[Any, ...], NistTags] = field(default_factory=dict, compare=False, repr=False)

    def tags(self, kind: str, meta: dict[str, Any] | None = None) -> NistTags:
        """The functions and subcategories a record (its kind and envelope metadata) serves."""
        meta = meta or {}
        key = (
            kind,
            *(str(meta.get(k)) for k in ("point", "verdict", "policy_verdict", "mode", "status")),
            tuple(str(r) for r in meta.get("rule_ids") or ()),
            tuple(sorted(meta.get("planes") or ())),
            tuple(str(o) for o in meta.get("obligations") or ()),
            bool(meta.get("errors")),
        )
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        cats: set[str] = set()
        rules: list[str] = []
        for rule in self.rules:
            if rule.matches(kind, meta):
                cats.update(rule.categories)
                rules.append(rule.id)
        ordered = tuple(sorted(cats, key=_category_key))
        fns = tuple(f for f in FUNCTIONS if any(c.startswith(f + " ") for c in ordered))
        tags = NistTags(fns, ordered, tuple(rules))
        if len(self._cache) < 4096:
            self._cache[key] = tags
        return tags

    def title(self, category: str) -> str:
        return self.categories.get(category, "")

    def control_categories(self, *path: str) -> list[str]:
        """Subcategories of a policy control, e.g. ``control_categories("rule-verdicts", "block")``."""
        node: Any = self.controls
        for p in path:
            if not isinstance(node, dict):
                return []
            node = node.get(p)
        return sorted((str(c) for c in node or []), key=_category_key) if isinstance(node, list) else []


def _parse(data: Any, where: str) -> NistMapping:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: not a mapping")
    categories = {str(k): str(v) for k, v in (data.get("categories") or {}).items()}
    functions = {str(k): str(v) for k, v in (data.get("functions") or {}).items()}
    if set(functions) != set(FUNCTIONS):
        raise ValueError(f"{where}: functions must be exactly {', '.join(FUNCTIONS)}")
    for cat in categories:
        if cat.partition(" ")[0] not in FUNCTIONS:
            raise ValueError(f"{where}: category {cat!r} does not start with a function name")
    rules: list[_Rule] = []
    for i, raw in enumerate(data.get("evidence") or []):
        if not isinstance(raw, dict) or "id" not in raw:
            raise ValueError(f"{where}: evidence[{i}] needs an id")
        match = dict(raw.get("match") or {})
        unknown = set(match) - _MATCH_KEYS
        if unknown:
            raise ValueError(f"{where}: evidence rule {raw['id']}: unknown match keys {sorted(unknown)}")
        cats = tuple(str(c) for c in raw.get("categories") or [])
        missing = [c for c in cats if c not in categories]
        if missing or not cats:
            raise ValueError(f"{where}: evidence rule {raw['id']}: categories {missing or '(none)'} are not in the table")
        rules.append(_Rule(str(raw["id"]), match, cats, str(raw.get("why", ""))))
    controls = data.get("controls") or {}

    def _check(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                _check(v, f"{path}.{k}")
        elif isinstance(node, list):
            bad = [c for c in node if c not in categories]
            if bad:
                raise ValueError(f"{where}: controls{path}: categories {bad} are not in the table")

    _check(controls, "")
    return NistMapping(
        framework=str(data.get("framework", "NIST AI RMF 1.0")),
        source=str(data.get("source", "")),
        functions=functions,
        categories=categories,
        rules=tuple(rules),
        controls=dict(controls),
    )


@functools.cache
def _default() -> NistMapping:
    text = resources.files("fiveplane._export").joinpath("nist_ai_rmf.yaml").read_text(encoding="utf-8")
    return _parse(yaml.safe_load(text), "nist_ai_rmf.yaml")


def load_nist_mapping(path: str | Path | None = None) -> NistMapping:
    """The shipped mapping (``fiveplane/_export/nist_ai_rmf.yaml``), or your own file of the same shape."""
    if path is None:
        return _default()
    p = Path(path)
    return _parse(yaml.safe_load(p.read_text(encoding="utf-8")), str(p))
