"""IAM mapping: a verified OIDC / JWT identity becomes the user link of a principal chain.

The ID or access token is verified with PyJWT against a configured public key file (PEM) or JWKS
file: signature, ``exp``/``nbf``/``iat``, issuer and audience. Symmetric (``HS*``) and ``none``
algorithms are refused. Roles come from the claims: groups/roles claims mapped through
``role_map`` (unmapped values are dropped unless ``passthrough_roles``), and ``claim_roles`` rules
(``department == sales`` → ``sales-rep``). Only the claims listed in ``keep_claims`` travel in
the principal (they reach evidence); the token itself never does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._actions import Principal, PrincipalKind
from ._model import IdentityError

__all__ = ["ClaimRole", "OidcConfig", "OidcMapper"]

_ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})


class ClaimRole(BaseModel):
    """Grant ``role`` when claim ``claim`` equals ``equals`` (or is a list holding it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    claim: str
    equals: str | int | bool
    role: str


class OidcConfig(BaseModel):
    """How identities from the organisation's IdP map to fiveplane users and roles."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str | None = None
    """Required ``iss``; strongly recommended."""
    audience: str | tuple[str, ...] | None = None
    """Required ``aud`` (one of)."""
    key_file: str | None = None
    """A PEM public key file."""
    jwks_file: str | None = None
    """A JWKS JSON file (keys chosen by ``kid``)."""
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    user_id_claim: str = "sub"
    role_claims: tuple[str, ...] = ("roles", "groups")
    role_map: dict[str, str] = Field(default_factory=dict)
    """IdP role/group → fiveplane role."""
    claim_roles: tuple[ClaimRole, ...] = ()
    passthrough_roles: bool = False
    """Keep IdP roles/groups not in ``role_map`` under their own names (off: least privilege)."""
    keep_claims: tuple[str, ...] = ("email", "name")
    required_claims: tuple[str, ...] = ("exp", "iat")
    leeway_seconds: int = Field(default=30, ge=0, le=600)

    @field_validator("algorithms")
    @classmethod
    def _algs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in v if a not in _ASYMMETRIC]
        if bad or not v:
            raise ValueError(
                f"only asymmetric JWT algorithms are accepted ({', '.join(sorted(_ASYMMETRIC))}); got {', '.join(bad) or 'none'}"
            )
        return v

    @model_validator(mode="after")
    def _one_key(self) -> OidcConfig:
        if (self.key_file is None) == (self.jwks_file is None):
            raise ValueError("give exactly one of key_file or jwks_file")
        return self


class OidcMapper:
    """Verifies identity tokens and maps them to a user :class:`~fiveplane.Principal`.

    Args:
        config: the ``oidc`` section.
        base_dir: directory that relative key paths are resolved against (the pack's directory).
    """

    def __init__(self, config: OidcConfig, *, base_dir: Path | None = None) -> None:
        self.config = config
        base = base_dir or Path.cwd()
        self._key: Any = None
        self._jwks: jwt.PyJWKSet | None = None
        try:
            if config.key_file is not None:
                self._key = (base / Path(config.key_file).expanduser()).read_text(encoding="utf-8")
            else:
                assert config.jwks_file is not None
                data = json.loads((base / Path(config.jwks_file).expanduser()).read_text(encoding="utf-8"))
                self._jwks = jwt.PyJWKSet.from_dict(data)
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise IdentityError(f"the OIDC verification key could not be loaded: {exc}") from None

    def _signing_key(self, token: str) -> Any:
        if self._jwks is None:
            return self._key
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        keys = [k for k in self._jwks.keys if kid is None or k.key_id == kid]
        if len(keys) != 1:
            raise IdentityError(f"no unique JWKS key for kid {kid!r}")
        return keys[0].key

    def verify(self, token: str) -> dict[str, Any]:
        """The verified claims; raises :class:`IdentityError` for any invalid token."""
        cfg = self.config
        try:
            key = self._signing_key(token)
            options: dict[str, Any] = {"require": list(cfg.required_claims), "verify_aud": cfg.audience is not None}
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(cfg.algorithms),
                audience=list(cfg.audience) if isinstance(cfg.audience, tuple) else cfg.audience,
                issuer=cfg.issuer,
                leeway=cfg.leeway_seconds,
                options=options,  # type: ignore[arg-type]
            )
        except IdentityError:
            raise
        except jwt.PyJWTError as exc:
            raise IdentityError(f"identity token rejected: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - malformed tokens fail closed
            raise IdentityError(f"identity token rejected: {type(exc).__name__}") from None
        return claims

    def roles(self, claims: dict[str, Any]) -> tuple[str, ...]:
        cfg = self.config
        out: set[str] = set()
        for name in cfg.role_claims:
            values = claims.get(name)
            if isinstance(values, str):
                values = values.split() if " " in values else [values]
            if not isinstance(values, list):
                continue
            for v in values:
                if not isinstance(v, str):
                    continue
                if v in cfg.role_map:
                    out.add(cfg.role_map[v])
                elif cfg.passthrough_roles:
                    out.add(v)
        for rule in cfg.claim_roles:
            have = claims.get(rule.claim)
            if have == rule.equals or (isinstance(have, list) and rule.equals in have):
                out.add(rule.role)
        return tuple(sorted(out))

    def principal(self, token: str) -> Principal:
        """Verify ``token`` and return the user link (id from ``user_id_claim``, mapped roles, kept claims)."""
        claims = self.verify(token)
        uid = claims.get(self.config.user_id_claim)
        if not isinstance(uid, str) or not uid:
            raise IdentityError(f"identity token has no usable {self.config.user_id_claim!r} claim")
        kept = {k: claims[k] for k in self.config.keep_claims if k in claims}
        if self.config.issuer is not None:
            kept.setdefault("iss", claims.get("iss"))
        return Principal(kind=PrincipalKind.USER, id=uid, roles=self.roles(claims), claims=kept)
