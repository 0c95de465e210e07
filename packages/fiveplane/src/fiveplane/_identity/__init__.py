"""The identity plane's machinery: grants store, composite authority, IAM mapping, capability tokens.

Private package; the public names are re-exported from :mod:`fiveplane`. The plane itself is
:class:`fiveplane._planes._identity.IdentityPlane`.
"""

from ._authority import (
    Authority,
    DelegatedRight,
    Delegation,
    Denial,
    LinkAuthority,
    Request,
    authorize,
    check_delegation,
)
from ._db import DATABASE_ENV, DEFAULT_DATABASE_URL, Recorder, create_tables, default_database_url, make_engine
from ._grants import GrantIndex, GrantStore, SyncReport
from ._keys import generate_root_key, load_public_key, load_root_key, parse_private_key, public_key_text
from ._model import Grant, GrantSpec, IdentityError, PrincipalSelector, glob_covers
from ._oidc import ClaimRole, OidcConfig, OidcMapper
from ._revocation import MemoryRevocationStore, RevocationStatus, RevocationStore, SqlRevocationStore, TokenRecord
from ._tokens import Attenuation, Capability, TokenScope, TokenService, arguments_digest, attenuate, attenuate_token
from ._vault import TokenVault
from ._verify import AuthorizerLimits, CapabilityDenied, CapabilityVerifier, VerifiedCapability, verify_capability

__all__ = [
    "DATABASE_ENV",
    "DEFAULT_DATABASE_URL",
    "Attenuation",
    "Authority",
    "AuthorizerLimits",
    "Capability",
    "CapabilityDenied",
    "CapabilityVerifier",
    "ClaimRole",
    "DelegatedRight",
    "Delegation",
    "Denial",
    "Grant",
    "GrantIndex",
    "GrantSpec",
    "GrantStore",
    "IdentityError",
    "LinkAuthority",
    "MemoryRevocationStore",
    "OidcConfig",
    "OidcMapper",
    "PrincipalSelector",
    "Recorder",
    "Request",
    "RevocationStatus",
    "RevocationStore",
    "SqlRevocationStore",
    "SyncReport",
    "TokenRecord",
    "TokenScope",
    "TokenService",
    "TokenVault",
    "VerifiedCapability",
    "arguments_digest",
    "attenuate",
    "attenuate_token",
    "authorize",
    "check_delegation",
    "create_tables",
    "default_database_url",
    "generate_root_key",
    "glob_covers",
    "load_public_key",
    "load_root_key",
    "make_engine",
    "parse_private_key",
    "public_key_text",
    "verify_capability",
]
