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
    "BasePlane",
    "Decision",
    "EvidenceSink",
    "Finding",
    "GovernanceError",
    "GovernedTool",
    "Governor",
    "InMemorySessionStore",
    "MediationPoint",
    "Mode",
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
    "Run",
    "SessionState",
    "SessionStore",
    "Severity",
    "Step",
    "Verdict",
    "__version__",
    "approver",
    "canonical_json",
    "current_run",
    "digest_value",
    "load_policy",
    "strongest",
]
