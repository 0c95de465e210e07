"""Who is deciding: OIDC/JWT bearer tokens, console sessions after a token login, or a dev user.

* ``Authorization: Bearer <JWT>``: verified on every request by the pack's ``planes.identity.oidc``
  mapping (the one ``fiveplane approvals approve --token`` uses); no cookie, so no CSRF token needed.
* The login form takes the same token once, verifies it and opens a server-side session (an opaque
  random cookie: ``HttpOnly``, ``SameSite=Strict``, ``Secure`` behind https); the session ends with
  the token's ``exp`` (at most ``max_session``), at sign-out, or when the console restarts.
* ``--dev-user``: every browser is that user, unverified (local demos; a red banner on every page).

Unsafe requests made with a session cookie carry the session's synchronizer token (a hidden form
field or ``X-CSRF-Token``); every unsafe request must come from the console's own origin
(``Origin`` / ``Sec-Fetch-Site``), whatever its credentials.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .._actions import Principal
from .._identity._model import IdentityError
from .._identity._oidc import OidcMapper

__all__ = ["Authenticator", "Identity", "Sessions", "origin_problem"]

Method = Literal["oidc-bearer", "oidc-session", "dev"]
COOKIE = "fiveplane_console"
LOGIN_COOKIE = "fiveplane_console_login"


@dataclass(frozen=True)
class Identity:
    """A verified (or, in dev mode, asserted) approver."""

    principal: Principal
    method: Method
    issuer: str | None
    expires_at: datetime
    session: str | None = None
    """The console session id (cookie credentials), ``None`` for a bearer token."""
    csrf: str | None = None

    @property
    def verified(self) -> bool:
        return self.method != "dev"

    def evidence(self) -> dict[str, Any]:
        """What the ledger keeps about the approver of a decision made through the console."""
        return {
            "id": self.principal.id,
            "roles": list(self.principal.roles),
            "verified_by": "oidc" if self.verified else "dev-user (unverified)",
            "issuer": self.issuer,
            "credential": "bearer" if self.method == "oidc-bearer" else "session",
            "via": "console",
        }


@dataclass
class _Session:
    identity: Identity
    flash: list[tuple[str, str]] = field(default_factory=list)


class Sessions:
    """Console sessions in memory (one console process; a restart signs everyone out)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._by_id: dict[str, _Session] = {}

    def open(self, identity: Identity) -> Identity:
        sid = secrets.token_urlsafe(32)
        ident = replace(identity, session=sid, csrf=secrets.token_urlsafe(32))
        with self._lock:
            now = self._clock()
            for k in [k for k, s in self._by_id.items() if s.identity.expires_at <= now]:
                del self._by_id[k]
            self._by_id[sid] = _Session(ident)
        return ident

    def get(self, sid: str | None) -> Identity | None:
        if not sid:
            return None
        with self._lock:
            s = self._by_id.get(sid)
            if s is None:
                return None
            if s.identity.expires_at <= self._clock():
                del self._by_id[sid]
                return None
            return s.identity

    def close(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)

    def flash(self, sid: str | None, kind: str, message: str) -> None:
        with self._lock:
            s = self._by_id.get(sid or "")
            if s is not None:
                s.flash.append((kind, message))

    def take_flash(self, sid: str | None) -> list[tuple[str, str]]:
        with self._lock:
            s = self._by_id.get(sid or "")
            if s is None:
                return []
            out, s.flash = s.flash, []
            return out


class Authenticator:
    """Turns a request's credentials into an :class:`Identity` (or refuses)."""

    def __init__(
        self,
        mapper: OidcMapper | None,
        *,
        dev_user: Principal | None = None,
        max_session: timedelta = timedelta(hours=8),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if mapper is None and dev_user is None:
            raise ValueError(
                "the console needs a way to authenticate approvers: configure planes.identity.oidc in the pack, "
                "or pass --dev-user for a local demo"
            )
        self.mapper = mapper
        self.dev_user = dev_user
        self.max_session = max_session
        self.clock = clock
        self.sessions = Sessions(clock)

    def from_token(self, token: str, method: Method) -> Identity:
        """Verify an OIDC/JWT token; raises :class:`IdentityError` when it is not acceptable."""
        if self.mapper is None:
            raise IdentityError("this console accepts no tokens: the pack configures no planes.identity.oidc")
        token = token.strip()
        claims = self.mapper.verify(token)
        principal = self.mapper.principal(token)
        now = self.clock()
        exp = claims.get("exp")
        until = now + self.max_session
        if isinstance(exp, int | float):
            until = min(until, datetime.fromtimestamp(float(exp), UTC))
        iss = claims.get("iss")
        return Identity(principal, method, iss if isinstance(iss, str) else None, until)

    def login(self, token: str) -> Identity:
        return self.sessions.open(self.from_token(token, "oidc-session"))

    def dev_session(self) -> Identity:
        assert self.dev_user is not None
        return self.sessions.open(Identity(self.dev_user, "dev", None, self.clock() + self.max_session))

    def identify(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> tuple[Identity | None, str | None]:
        """The identity of a request, or ``(None, why)``; a bad bearer token is refused, never ignored."""
        auth = headers.get("authorization")
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None, "the Authorization header must be 'Bearer <token>'"
            try:
                return self.from_token(token, "oidc-bearer"), None
            except IdentityError as exc:
                return None, str(exc)
        ident = self.sessions.get(cookies.get(COOKIE))
        if ident is not None:
            return ident, None
        return None, "not signed in"


def csrf_ok(identity: Identity, presented: str | None) -> bool:
    """A cookie session must present its synchronizer token; a bearer token is no ambient credential."""
    if identity.session is None:
        return True
    return bool(presented) and identity.csrf is not None and hmac.compare_digest(identity.csrf, presented or "")


def origin_problem(headers: Mapping[str, str], host: str | None, also: tuple[str, ...] = ()) -> str | None:
    """Why an unsafe request does not come from the console's own pages, or ``None``.

    ``Sec-Fetch-Site`` (sent by current browsers) must be ``same-origin`` or ``none``; an ``Origin``
    must name the host the request was sent to (or one of ``also``: the public address when a proxy
    rewrites ``Host``). The console's pages use ``Referrer-Policy:
    no-referrer``, under which browsers send ``Origin: null`` on form posts: that is accepted only
    together with ``Sec-Fetch-Site: same-origin``. Clients that send neither (scripts with a bearer
    token) pass this check and still need their credentials.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = headers.get("origin")
    if origin is None:
        return None
    if origin == "null":
        return None if site == "same-origin" else "request from an opaque origin refused (Origin: null)"
    _scheme, sep, netloc = origin.partition("://")
    allowed = {h.lower() for h in (host, *also) if h}
    if not sep or netloc.lower() not in allowed:
        return f"cross-origin request refused (Origin {origin} is not this console)"
    return None
