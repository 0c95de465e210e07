"""Named lists of a pack (``lists:``): payees, contacts, channel members, allowed sites.

A list is inline, read from a file beside the pack, or read from a SQL table; file and SQL lists are
read at load (an unreadable list is a load error naming ``file:line``) and again on their ``ttl`` or
when :meth:`Lists.reload` (``Governor.reload_lists()``) is called. CEL conditions read them as
``lists.NAME``; the information-flow index treats their typed values (addresses, IBANs, hosts…) as
trusted.

Fail closed: a list whose reload fails is *unavailable* until a reload succeeds — a condition reading
it fails (the rule blocks, naming the list and the cause) and its values stop counting as trusted.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._flowvalues import extract_values
from ._models import ListSpec

__all__ = ["ListError", "Lists"]


class ListError(RuntimeError):
    """A list could not be read (or its last reload failed)."""


@dataclass
class _Entry:
    name: str
    spec: ListSpec
    base: Path
    where: str
    """``file:line`` of the list's declaration."""
    values: tuple[str, ...] = ()
    loaded_at: float = 0.0
    error: str | None = None
    typed: frozenset[str] = field(default_factory=frozenset)


def _read_file(path: Path) -> tuple[str, ...]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        if data is None:
            return ()
        if not isinstance(data, list) or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in data):
            raise ListError(f"{path}: a list file holds one list of strings")
        return tuple(str(v) for v in data)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return tuple(out)


def _read_sql(spec: ListSpec) -> tuple[str, ...]:
    import sqlalchemy as sa

    from .._db import make_engine

    sql = spec.sql
    assert sql is not None
    url = sql.url if sql.url is not None else os.environ.get(sql.url_env or "")
    if not url:
        raise ListError(f"${sql.url_env} is not set (the list's database URL)")
    engine = make_engine(url, pre_ping=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(sql.query)).fetchall()
    finally:
        engine.dispose()
    return tuple(str(r[0]) for r in rows if r and r[0] is not None)


class Lists:
    """The lists of a composed policy, with their reload state (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self.clock = clock
        self._version = 0
        self._snapshot: tuple[int, dict[str, list[str]]] | None = None
        self._trusted: tuple[int, frozenset[str]] | None = None

    def declare(self, name: str, spec: ListSpec, base: Path, where: str) -> None:
        self._entries[name] = _Entry(name, spec, base, where)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def _read(self, e: _Entry) -> tuple[str, ...]:
        spec = e.spec
        if spec.values is not None:
            return spec.values
        if spec.file is not None:
            return _read_file(e.base / spec.file)
        return _read_sql(spec)

    def _load(self, e: _Entry) -> None:
        try:
            values = self._read(e)
        except Exception as exc:  # noqa: BLE001 - reported; the list becomes unavailable (fail closed)
            e.error = f"{type(exc).__name__}: {exc}"
            e.loaded_at = self.clock()
            e.typed = frozenset()
        else:
            e.values, e.error, e.loaded_at = values, None, self.clock()
            typed: set[str] = set()
            for v in values:
                typed |= extract_values(v)
            e.typed = frozenset(typed)
        self._version += 1

    def load_all(self) -> list[str]:
        """Read every list; the problems as ``file:line: message`` (load errors)."""
        errors = []
        with self._lock:
            for e in self._entries.values():
                self._load(e)
                if e.error is not None:
                    errors.append(f"{e.where}: list {e.name!r} could not be read: {e.error}")
        return errors

    def reload(self, *names: str) -> dict[str, int]:
        """Read file and SQL lists again (all, or ``names``); returns the number of values of each.
        Raises :class:`ListError` naming every list that failed (those are unavailable until a
        reload succeeds)."""
        unknown = [n for n in names if n not in self._entries]
        if unknown:
            raise ListError(f"unknown list(s) {', '.join(unknown)}; the pack declares {', '.join(self._entries) or 'none'}")
        failed = []
        with self._lock:
            for e in self._entries.values():
                if names and e.name not in names:
                    continue
                self._load(e)
                if e.error is not None:
                    failed.append(f"{e.name}: {e.error}")
        if failed:
            raise ListError("list reload failed (unavailable until a reload succeeds): " + "; ".join(failed))
        return {e.name: len(e.values) for e in self._entries.values() if not names or e.name in names}

    def _fresh(self) -> None:
        now = self.clock()
        stale = [
            e
            for e in self._entries.values()
            if e.spec.ttl is not None and e.spec.values is None and now - e.loaded_at >= e.spec.ttl
        ]
        if stale:
            with self._lock:
                for e in stale:
                    if e.spec.ttl is not None and self.clock() - e.loaded_at >= e.spec.ttl:
                        self._load(e)

    def failed(self) -> dict[str, str]:
        """The lists that are unavailable, with why."""
        return {e.name: e.error for e in self._entries.values() if e.error is not None}

    def get(self, name: str) -> tuple[str, ...]:
        self._fresh()
        e = self._entries.get(name)
        if e is None:
            raise ListError(f"unknown list {name!r}")
        if e.error is not None:
            raise ListError(f"list {name!r} is unavailable ({e.error})")
        return e.values

    def cel_view(self) -> dict[str, Any]:
        """``lists`` as CEL sees it. Reading an unavailable list fails the condition (fail closed)."""
        self._fresh()
        snap = self._snapshot
        if snap is not None and snap[0] == self._version:
            view: dict[str, Any] = snap[1]
        else:
            view = {e.name: list(e.values) for e in self._entries.values() if e.error is None}
            self._snapshot = (self._version, view)
        return view

    def trusted_values(self) -> frozenset[str]:
        """Typed values of every available list (trusted for information flow)."""
        if not self._entries:
            return frozenset()
        self._fresh()
        cached = self._trusted
        if cached is not None and cached[0] == self._version:
            return cached[1]
        out: frozenset[str] = frozenset().union(*(e.typed for e in self._entries.values() if e.error is None))
        self._trusted = (self._version, out)
        return out
