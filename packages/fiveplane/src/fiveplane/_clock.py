"""The default clock: the current UTC time (a ``partial``, not a lambda: one Python frame fewer on
every decision)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

__all__ = ["utcnow"]

utcnow = functools.partial(datetime.now, UTC)
"""``datetime.now(UTC)``."""
