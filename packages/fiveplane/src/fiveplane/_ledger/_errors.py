"""Ledger exceptions."""

from __future__ import annotations

__all__ = ["LedgerError", "LedgerUnavailable"]


class LedgerError(Exception):
    """The ledger cannot do what was asked (no checkpoint to prove against, refused signature, ...)."""


class LedgerUnavailable(LedgerError):
    """A record could not be made durable: the database is unreachable, failing or too slow.

    Raised from ``record_decision`` this blocks the governed action (fail closed).
    """
