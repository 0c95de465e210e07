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
    "Attenuation": "fiveplane._identity",
    "AuthorizerLimits": "fiveplane._identity",
    "Capability": "fiveplane._identity",
    "CapabilityDenied": "fiveplane._identity",
    "CapabilityVerifier": "fiveplane._identity",
    "CustomRecognizer": "fiveplane._planes._data",
    "DataPlane": "fiveplane._planes._data",
    "DataPlaneConfig": "fiveplane._planes._data",
    "DataRule": "fiveplane._planes._data",
    "EgressBlocked": "fiveplane._net._transport",
    "EndpointConfig": "fiveplane._planes._endpoint",
    "EndpointPlane": "fiveplane._planes._endpoint",
    "EntityRule": "fiveplane._planes._data",
    "GovernedTransport": "fiveplane._net._transport",
    "GrantSpec": "fiveplane._identity",
    "GrantStore": "fiveplane._identity",
    "IdentityConfig": "fiveplane._planes._identity",
    "IdentityError": "fiveplane._identity",
    "IdentityPlane": "fiveplane._planes._identity",
    "MemoryRevocationStore": "fiveplane._identity",
    "NetworkConfig": "fiveplane._planes._network",
    "NetworkPlane": "fiveplane._planes._network",
    "OidcConfig": "fiveplane._identity",
    "OidcMapper": "fiveplane._identity",
    "PrincipalSelector": "fiveplane._identity",
    "RateLimitStore": "fiveplane._endpoint._ratelimit",
    "RevocationStore": "fiveplane._identity",
    "SqlRevocationStore": "fiveplane._identity",
    "StreamBlocked": "fiveplane._planes._data",
    "TokenService": "fiveplane._identity",
    "TokenVault": "fiveplane._identity",
    "UrlCheck": "fiveplane._net._egress",
    "VerifiedCapability": "fiveplane._identity",
    "generate_root_key": "fiveplane._identity",
    "load_public_key": "fiveplane._identity",
    "load_root_key": "fiveplane._identity",
    "oidc_mapper": "fiveplane._planes._identity",
    "planes_for": "fiveplane._planes._registry",
    "verify_capability": "fiveplane._identity",
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
    "Attenuation",
    "AuthorizerLimits",
    "BasePlane",
    "Capability",
    "CapabilityDenied",
    "CapabilityVerifier",
    "CustomRecognizer",
    "DataPlane",
    "DataPlaneConfig",
    "DataRule",
    "Decision",
    "EgressBlocked",
    "EndpointConfig",
    "EndpointPlane",
    "EntityRule",
    "EvidenceSink",
    "Finding",
    "GovernanceError",
    "GovernedTool",
    "GovernedTransport",
    "Governor",
    "GrantSpec",
    "GrantStore",
    "IdentityConfig",
    "IdentityError",
    "IdentityPlane",
    "InMemorySessionStore",
    "MediationPoint",
    "MemoryRevocationStore",
    "Mode",
    "NetworkConfig",
    "NetworkPlane",
    "Obligation",
    "ObligationKind",
    "OidcConfig",
    "OidcMapper",
    "Outcome",
    "OutcomeStatus",
    "PlaneContext",
    "PlaneResult",
    "Policy",
    "PolicyError",
    "Principal",
    "PrincipalKind",
    "PrincipalSelector",
    "RateLimitStore",
    "RevocationStore",
    "Run",
    "SessionState",
    "SessionStore",
    "Severity",
    "SqlRevocationStore",
    "Step",
    "StreamBlocked",
    "TokenService",
    "TokenVault",
    "UrlCheck",
    "Verdict",
    "VerifiedCapability",
    "__version__",
    "approver",
    "canonical_json",
    "current_run",
    "digest_value",
    "generate_root_key",
    "load_policy",
    "load_public_key",
    "load_root_key",
    "oidc_mapper",
    "planes_for",
    "strongest",
    "verify_capability",
]
