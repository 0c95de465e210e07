"""The in-process hand-off of bearer tokens from the identity plane to the governed tool.

The identity plane mints a token in ``on_decision`` and must not put it into the Decision (which
becomes evidence). It parks the :class:`Capability` here under the action id; the governed-tool
wrapper takes it (once) right before calling a tool that asked for a ``capability`` parameter.
Entries expire with their token; the vault is bounded, thread-safe and never persisted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import islice

from ._tokens import Capability

__all__ = ["TokenVault"]


class TokenVault:
    """Bearer tokens by action id, for one process. ``take`` hands a token out at most once."""

    def __init__(self, *, max_entries: int = 10_000, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self.clock = clock
        self._items: OrderedDict[str, Capability] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, action_id: str, capability: Capability) -> None:
        now = self.clock()
        with self._lock:
            self._items.pop(action_id, None)
            self._items[action_id] = capability
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
            # drop expired entries from the old end (cheap: oldest first)
            for key in [k for k in islice(self._items, 16) if self._items[k].expires_at <= now]:
                del self._items[key]

    def take(self, action_id: str) -> Capability | None:
        """Remove and return the unexpired token minted for ``action_id`` (``None`` if none)."""
        with self._lock:
            cap = self._items.pop(action_id, None)
        if cap is None or cap.expires_at <= self.clock():
            return None
        return cap

    def peek(self, action_id: str) -> Capability | None:
        with self._lock:
            cap = self._items.get(action_id)
        return cap if cap is not None and cap.expires_at > self.clock() else None

    def discard(self, action_id: str) -> Capability | None:
        with self._lock:
            return self._items.pop(action_id, None)

    def discard_session(self, session_id: str) -> int:
        with self._lock:
            gone = [k for k, c in self._items.items() if c.scope.session_id == session_id]
            for k in gone:
                del self._items[k]
        return len(gone)
