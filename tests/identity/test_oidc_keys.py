"""IAM mapping (OIDC/JWT → user principal and roles) and root-key handling."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pydantic import ValidationError

from fiveplane import PrincipalKind
from fiveplane._identity import (
    IdentityError,
    OidcConfig,
    OidcMapper,
    generate_root_key,
    load_public_key,
    load_root_key,
    parse_private_key,
)

ISS = "https://idp.acme.example/"


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem_public(key: Any) -> str:
    return str(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    )


def token(key: Any, alg: str = "ES256", headers: dict[str, Any] | None = None, **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": "rep-1",
        "iss": ISS,
        "aud": "fiveplane",
        "iat": now,
        "exp": now + 300,
        "email": "rep-1@acme.example",
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers=headers)


def mapper(tmp_path: Path, key: Any, **cfg: Any) -> OidcMapper:
    (tmp_path / "idp.pem").write_text(pem_public(key))
    data: dict[str, Any] = {
        "issuer": ISS,
        "audience": "fiveplane",
        "key_file": "idp.pem",
        "role_map": {"sales-team": "sales-rep", "sales-leads": "sales-manager"},
        "claim_roles": [{"claim": "department", "equals": "legal", "role": "legal-reviewer"}],
    }
    data.update(cfg)
    return OidcMapper(OidcConfig.model_validate(data), base_dir=tmp_path)


def test_claims_map_to_roles(tmp_path: Path, ec_key: Any) -> None:
    m = mapper(tmp_path, ec_key)
    p = m.principal(token(ec_key, groups=["sales-team", "all-staff"], department="legal"))
    assert p.kind is PrincipalKind.USER and p.id == "rep-1"
    assert p.roles == ("legal-reviewer", "sales-rep")  # unmapped "all-staff" is dropped
    assert p.claims == {"email": "rep-1@acme.example", "iss": ISS}
    passthrough = mapper(tmp_path, ec_key, passthrough_roles=True)
    assert "all-staff" in passthrough.principal(token(ec_key, groups=["all-staff"])).roles
    assert m.principal(token(ec_key, roles="sales-leads")).roles == ("sales-manager",)


@pytest.mark.parametrize(
    ("claims", "match"),
    [
        ({"exp": int(time.time()) - 600}, "expired"),
        ({"iss": "https://evil.example/"}, "issuer"),
        ({"aud": "someone-else"}, "(?i)audience"),
        ({"exp": None}, "exp"),
        ({"sub": None}, "sub"),
    ],
)
def test_invalid_identity_tokens_are_rejected(tmp_path: Path, ec_key: Any, claims: dict[str, Any], match: str) -> None:
    m = mapper(tmp_path, ec_key)
    with pytest.raises(IdentityError, match=match):
        m.principal(token(ec_key, **claims))


def test_wrong_key_symmetric_and_none_algorithms_are_rejected(tmp_path: Path, ec_key: Any) -> None:
    m = mapper(tmp_path, ec_key)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(IdentityError, match="rejected"):
        m.principal(token(other))
    # algorithm confusion: an HS256 token "signed" with the public key text
    forged = jwt.encode(
        {"sub": "admin", "iss": ISS, "aud": "fiveplane", "iat": int(time.time()), "exp": int(time.time()) + 60},
        "a-shared-secret-of-at-least-32-bytes!!",
        algorithm="HS256",
    )
    with pytest.raises(IdentityError):
        m.principal(forged)
    unsigned = jwt.encode(
        {"sub": "admin", "iss": ISS, "aud": "fiveplane", "iat": int(time.time()), "exp": int(time.time()) + 60},
        None,
        algorithm="none",
    )  # type: ignore[arg-type]
    with pytest.raises(IdentityError):
        m.principal(unsigned)
    with pytest.raises(IdentityError):
        m.principal("garbage")
    with pytest.raises(ValidationError, match="asymmetric"):
        OidcConfig(key_file="k.pem", algorithms=("HS256",))
    with pytest.raises(ValidationError, match="exactly one"):
        OidcConfig(algorithms=("ES256",))


def test_jwks_file_selects_key_by_kid(tmp_path: Path, ec_key: Any) -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    jwks = {
        "keys": [
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "k-ec", "alg": "ES256", "use": "sig"},
            {**json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(ed.public_key())), "kid": "k-ed", "alg": "EdDSA", "use": "sig"},
        ]
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    m = OidcMapper(
        OidcConfig(issuer=ISS, audience="fiveplane", jwks_file="jwks.json", role_map={"sales-team": "sales-rep"}),
        base_dir=tmp_path,
    )
    assert m.principal(token(ec_key, headers={"kid": "k-ec"}, groups=["sales-team"])).roles == ("sales-rep",)
    assert m.principal(token(ed, alg="EdDSA", headers={"kid": "k-ed"})).id == "rep-1"
    with pytest.raises(IdentityError, match="kid"):
        m.principal(token(ec_key, headers={"kid": "k-unknown"}))
    with pytest.raises(IdentityError, match="could not be loaded"):
        OidcMapper(OidcConfig(jwks_file="missing.json"), base_dir=tmp_path)


def test_oidc_mapper_from_policy(tmp_path: Path, ec_key: Any) -> None:
    from fiveplane import load_policy
    from fiveplane._planes._identity import oidc_mapper

    (tmp_path / "idp.pem").write_text(pem_public(ec_key))
    (tmp_path / "p.yaml").write_text(
        f"name: p\nunsafe_empty: true\nplanes:\n  identity:\n    oidc:\n      issuer: '{ISS}'\n      audience: fiveplane\n      key_file: idp.pem\n      role_map: {{sales-team: sales-rep}}\n"
    )
    m = oidc_mapper(load_policy(tmp_path / "p.yaml"))
    assert m.principal(token(ec_key, groups=["sales-team"])).roles == ("sales-rep",)


# ---- root keys -------------------------------------------------------------------------------------------


def test_keygen_writes_a_private_file_and_the_public_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "root.key"
    public = generate_root_key(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_root_key(file=path).public_key == public or str(load_root_key(file=path).public_key) == str(public)
    assert str(load_public_key(Path(str(path) + ".pub"))) == str(public)
    assert str(load_public_key(str(public))) == str(public)
    with pytest.raises(IdentityError, match="refusing"):
        generate_root_key(path)


def test_root_key_loading_fails_closed_with_fix_it_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(IdentityError, match=r"not found.*keygen"):
        load_root_key(file=tmp_path / "missing.key")
    path = tmp_path / "root.key"
    generate_root_key(path)
    path.chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_root_key(file=path)
    monkeypatch.delenv("FP_TEST_KEY", raising=False)
    with pytest.raises(IdentityError, match="FP_TEST_KEY"):
        load_root_key(env="FP_TEST_KEY")
    monkeypatch.setenv("FP_TEST_KEY", path.read_text())
    assert load_root_key(env="FP_TEST_KEY")
    monkeypatch.setenv("FP_TEST_KEY", "not a key")
    with pytest.raises(IdentityError, match="PKCS#8"):
        load_root_key(env="FP_TEST_KEY")
    with pytest.raises(IdentityError, match="no root key configured"):
        load_root_key()
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert parse_private_key(pem.decode())  # `openssl genpkey -algorithm ed25519` output
    with pytest.raises(IdentityError):
        load_public_key("ed25519/zz")
