"""The root key of capability tokens: an Ed25519 key in a file (PKCS#8 PEM) or an environment variable.

The key never appears in a policy pack: the pack names a file (``root_key_file``) or a variable
(``root_key_env``). A key file must not be readable by group or others (like an SSH key). The
public key (``ed25519/<hex>``) is what connectors need to verify tokens; it is not secret.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from biscuit_auth import Algorithm, KeyPair, PrivateKey, PublicKey
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ._model import IdentityError

__all__ = ["generate_root_key", "load_public_key", "load_root_key", "parse_private_key", "public_key_text"]


def parse_private_key(text: str) -> KeyPair:
    """A key pair from PKCS#8 PEM (``openssl genpkey -algorithm ed25519``) or ``ed25519-private/<hex>``."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            return KeyPair.from_private_key(PrivateKey.from_pem(text))  # type: ignore[attr-defined]
        if text.startswith("ed25519-private/"):
            return KeyPair.from_private_key(PrivateKey(text))
    except Exception as exc:  # noqa: BLE001 - any parse failure is one clear error
        raise IdentityError(f"the root key could not be parsed ({type(exc).__name__})") from None
    raise IdentityError("the root key must be a PKCS#8 PEM Ed25519 private key or 'ed25519-private/<hex>'")


def load_root_key(*, file: str | Path | None = None, env: str | None = None, check_permissions: bool = True) -> KeyPair:
    """Load the root key from ``file`` or, if not given, from the environment variable ``env``.

    Raises :class:`IdentityError` with a fix-it message when neither is usable; never falls back
    to a generated key (a token nobody else can verify is worse than a clear failure).
    """
    if file is not None:
        path = Path(file).expanduser()
        try:
            st = path.stat()
        except FileNotFoundError:
            raise IdentityError(
                f"root key file {str(path)!r} not found (create one with `fiveplane grants keygen {path}`)"
            ) from None
        except OSError as exc:
            raise IdentityError(f"root key file {str(path)!r} is not readable: {exc.strerror}") from None
        if check_permissions and os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise IdentityError(
                f"root key file {str(path)!r} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise IdentityError(f"root key file {str(path)!r} is not readable: {exc.strerror}") from None
        return parse_private_key(text)
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise IdentityError(f"environment variable {env} holding the root key is not set")
        return parse_private_key(value)
    raise IdentityError("no root key configured: set planes.identity.root_key_file or root_key_env")


def generate_root_key(path: str | Path, *, overwrite: bool = False) -> PublicKey:
    """Write a new Ed25519 root key to ``path`` (PKCS#8 PEM, mode 600) and its public key to ``path.pub``."""
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise IdentityError(f"{path} exists; refusing to overwrite a root key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
    finally:
        os.close(fd)
    pair = parse_private_key(pem.decode())
    Path(str(path) + ".pub").write_text(public_key_text(pair.public_key) + "\n", encoding="utf-8")
    return pair.public_key


def public_key_text(key: PublicKey) -> str:
    """``ed25519/<hex>``: the form connectors are configured with."""
    return str(key)


def load_public_key(value: PublicKey | str | bytes | Path) -> PublicKey:
    """A root public key from a :class:`PublicKey`, ``ed25519/<hex>`` text, 32 raw bytes, or a file holding the text."""
    if isinstance(value, PublicKey):
        return value
    try:
        if isinstance(value, bytes):
            return PublicKey.from_bytes(value, Algorithm.Ed25519)  # type: ignore[attr-defined,call-arg]
        if isinstance(value, Path) or (isinstance(value, str) and not value.startswith("ed25519/") and Path(value).exists()):
            value = Path(value).read_text(encoding="utf-8").strip()
        if value.startswith("-----BEGIN"):
            return PublicKey.from_pem(value)  # type: ignore[attr-defined,no-any-return]
        return PublicKey(value)
    except IdentityError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise IdentityError(f"invalid root public key ({type(exc).__name__}: {exc})") from None
