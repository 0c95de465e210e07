"""fiveplane: runtime governance for production AI agents.

One engine (:class:`Governor`) turns every step of an agent into an :class:`Action`, lets the five
planes judge it, combines their findings into one :class:`Decision`, enforces it where execution
can be stopped, and records intent, decision and outcome as evidence.
"""

from ._actions import Action, ActionClass, MediationPoint, Principal, PrincipalKind, canonical_json
from ._approvals import ApprovalError, ApprovalRequest, ApprovalStatus, ApprovalStore, approver
from ._decisions import Decision, Finding, Mode, Obligation, ObligationKind, Severity, Verdict, strongest
from ._engine import (
    ActionBlocked,
    ActionDeferred,
    ApprovalRequired,
    GovernanceError,
    GovernedTool,
    Governor,
    Run,
    current_run,
)
from ._evidence import EvidenceSink, Outcome, OutcomeStatus, digest_value
from ._planes._base import BasePlane, PlaneContext, PlaneResult
from ._policy._load import Policy, load_policy
from ._policy._yaml import PolicyError
from ._session import InMemorySessionStore, SessionState, SessionStore, Step
from ._version import __version__

# Planes and their helpers are imported on first use: `import fiveplane` stays light, and a plane
# whose engine is an optional extra fails only when it is used, with a fix-it message.
_LAZY = {
    "AsyncGovernedTransport": "fiveplane._net._transport",
    "EgressBlocked": "fiveplane._net._transport",
    "EndpointConfig": "fiveplane._planes._endpoint",
    "EndpointPlane": "fiveplane._planes._endpoint",
    "GovernedTransport": "fiveplane._net._transport",
    "NetworkConfig": "fiveplane._planes._network",
    "NetworkPlane": "fiveplane._planes._network",
    "RateLimitStore": "fiveplane._endpoint._ratelimit",
    "UrlCheck": "fiveplane._net._egress",
    "planes_for": "fiveplane._planes._registry",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fiveplane' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Action",
    "ActionBlocked",
    "ActionClass",
    "ActionDeferred",
    "ApprovalError",
    "ApprovalRequest",
    "ApprovalRequired",
    "ApprovalStatus",
    "ApprovalStore",
    "AsyncGovernedTransport",
    "BasePlane",
    "Decision",
    "EgressBlocked",
    "EndpointConfig",
    "EndpointPlane",
    "EvidenceSink",
    "Finding",
    "GovernanceError",
    "GovernedTool",
    "GovernedTransport",
    "Governor",
    "InMemorySessionStore",
    "MediationPoint",
    "Mode",
    "NetworkConfig",
    "NetworkPlane",
    "Obligation",
    "ObligationKind",
    "Outcome",
    "OutcomeStatus",
    "PlaneContext",
    "PlaneResult",
    "Policy",
    "PolicyError",
    "Principal",
    "PrincipalKind",
    "RateLimitStore",
    "Run",
    "SessionState",
    "SessionStore",
    "Severity",
    "Step",
    "UrlCheck",
    "Verdict",
    "__version__",
    "approver",
    "canonical_json",
    "current_run",
    "digest_value",
    "load_policy",
    "planes_for",
    "strongest",
]
