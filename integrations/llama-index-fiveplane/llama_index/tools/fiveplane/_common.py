"""Small helpers shared by the adapter's modules: the current run, JSON-safe values, control flow."""

from __future__ import annotations

import functools

from fiveplane import Run, current_run
from fiveplane import jsonable as jsonable  # the core's: one conversion for every adapter

__all__ = ["is_control_flow", "jsonable", "resolve_run"]


def resolve_run(explicit: Run | None) -> Run | None:
    """The run of this context (``Governor.run(...)``), else the one given at construction.

    Same order as :class:`fiveplane.GovernedTool`: a context run wins over a fixed ``run=``.
    """
    return current_run() or explicit


@functools.cache
def _waiting_for_event() -> type[BaseException] | None:
    try:
        from workflows.runtime.types.results import WaitingForEvent
    except ImportError:  # pragma: no cover - llama-index-workflows < 2.9
        return None
    return WaitingForEvent


def is_control_flow(exc: BaseException) -> bool:
    """True for the workflows runtime's pause exception (``ctx.wait_for_event``): never an error."""
    waiting = _waiting_for_event()
    return waiting is not None and isinstance(exc, waiting)
