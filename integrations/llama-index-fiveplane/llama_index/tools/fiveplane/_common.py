"""Small helpers shared by the adapter's modules: the current run, JSON-safe values, control flow."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from fiveplane import Run, current_run

__all__ = ["is_control_flow", "jsonable", "resolve_run"]


def resolve_run(explicit: Run | None) -> Run | None:
    """The run of this context (``Governor.run(...)``), else the one given at construction.

    Same order as :class:`fiveplane.GovernedTool`: a context run wins over a fixed ``run=``.
    """
    return current_run() or explicit


def jsonable(value: Any, *, depth: int = 0) -> Any:
    """A JSON value for ``value`` (what an Action may carry): non-finite floats become ``None``,
    unknown objects their ``repr``, pydantic models their JSON dump."""
    if depth > 20:
        return repr(value)
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth=depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, depth=depth + 1) for v in value]
    if isinstance(value, BaseModel):
        try:
            return jsonable(value.model_dump(mode="json"), depth=depth + 1)
        except Exception:  # noqa: BLE001 - a model that cannot dump itself is described, not dropped
            return repr(value)
    return repr(value)


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
