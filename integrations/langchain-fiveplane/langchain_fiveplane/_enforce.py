"""LangGraph's side of the core call protocol (:class:`fiveplane.CallProtocol`).

The path of a governed call — decide, approve, capability, execute, record, mediate the result — is
the core's, shared with every adapter. What is LangGraph's is how a call pauses for a person and what
must never be taken for an error:

- :func:`ask` pauses with ``interrupt()`` (the payload is LangChain's per-call ``ToolApprovalRequest``
  shape plus the fiveplane request); the run resumes with ``Command(resume=answer)``, which the core
  hands to the approval store (see :mod:`._resume` for the answers);
- :func:`is_control_flow`: ``GraphBubbleUp`` (an interrupt, a ``Command`` bubbling up) passes through.
"""

from __future__ import annotations

from typing import Any

from langgraph.errors import GraphBubbleUp
from langgraph.types import interrupt

from fiveplane import ApprovalMode, ApproverResolver, Ask, CapabilityProvider, current_capability

__all__ = ["ApprovalMode", "ApproverResolver", "CapabilityProvider", "aask", "ask", "current_capability", "is_control_flow"]


def is_control_flow(exc: BaseException) -> bool:
    """LangGraph's own control flow (interrupts, commands): never an outcome, never swallowed."""
    return isinstance(exc, GraphBubbleUp)


def ask(effect: Ask) -> Any:
    """Pause the graph for the approver's answer (raises the interrupt the first time, returns the answer on resume)."""
    return interrupt(effect.payload)


async def aask(effect: Ask) -> Any:
    return interrupt(effect.payload)
