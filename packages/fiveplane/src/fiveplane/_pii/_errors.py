"""Exceptions of the data plane (importable without Presidio)."""

from __future__ import annotations

__all__ = ["StreamBlocked"]


class StreamBlocked(RuntimeError):
    """A streamed output carried something that may not leave (e.g. a secret): stop sending it.

    Everything emitted before was scanned and is clean.
    """

    def __init__(self, message: str, rule_ids: tuple[str, ...], emitted: int) -> None:
        super().__init__(message)
        self.rule_ids = rule_ids
        """The data rules that stopped the stream."""
        self.emitted = emitted
        """Characters already emitted (all scanned and clean)."""
