"""The approval console: a Starlette app over the approval store and the evidence ledger.

Pages are rendered on the server (Jinja2, autoescaped); ``static/console.js`` only adds countdowns,
"select all" and a notice when the queue changes. Every decision goes through
:meth:`ApprovalStore.approve` / :meth:`ApprovalStore.deny`, which enforce the role, separation of
duties and expiry, and record the decision in the ledger (with the approver's verified identity)
before it takes effect. URLs carry ids only.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._actions import Principal
from .._approvals import ApprovalError, ApprovalRequest, ApprovalStatus, ApprovalStore
from .._identity._model import IdentityError
from .._identity._oidc import OidcMapper
from .._ledger._errors import LedgerError
from .._ledger._sink import Ledger
from .._policy._load import Policy
from .._policy._models import ApprovalsSpec
from ._auth import COOKIE, LOGIN_COOKIE, Authenticator, Identity, csrf_ok, origin_problem
from ._diff import diff_arguments, last_approved
from ._evidence import Evidence
from ._links import console_base
from ._notify import Channel, Notifier

__all__ = ["Console", "create_app"]

log = logging.getLogger("fiveplane.console")

HERE = Path(__file__).resolve().parent
MAX_REASON = 1000
MAX_BATCH = 100
PAGE = 50
_SEVERITY = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
_CLASS_RISK = {"read": "low", "invoke": "medium", "modify": "high"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_approver: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("fiveplane_console_approver", default=None)


# ---- headers and origin ------------------------------------------------------------------------


class SecureHeaders:
    """Adds the console's security headers to every response (pages, JSON, static files, errors)."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                h = MutableHeaders(scope=message)
                h["Content-Security-Policy"] = CSP
                h["X-Frame-Options"] = "DENY"
                h["Referrer-Policy"] = "no-referrer"
                h["X-Content-Type-Options"] = "nosniff"
                h["Cross-Origin-Opener-Policy"] = "same-origin"
                h["Cross-Origin-Resource-Policy"] = "same-origin"
                h["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), payment=()"
                h["Cache-Control"] = "private, max-age=300" if static else "no-store"
                if self.hsts:
                    h["Strict-Transport-Security"] = "max-age=31536000"
            await send(message)

        await self.app(scope, receive, wrapped)


class OriginGuard:
    """Refuses every unsafe request (POST, PUT, PATCH, DELETE) not sent from the console's own pages."""

    def __init__(self, app: ASGIApp, *, public: tuple[str, ...] = ()) -> None:
        self.app = app
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            why = origin_problem(headers, headers.get("host"), self.public)
            if why is not None:
                wants_json = "application/json" in headers.get("accept", "") or str(scope.get("path", "")).startswith("/api/")
                body: Response = (
                    JSONResponse({"error": why}, status_code=403) if wants_json else PlainTextResponse(why, status_code=403)
                )
                await body(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ---- the console ---------------------------------------------------------------------------------


@dataclass
class Refusal(Exception):
    status: int
    message: str


def _status_for(exc: ApprovalError) -> int:
    text = str(exc)
    return 409 if ("not pending" in text or "expired" in text or "meanwhile" in text) else 403


def _reason(preset: str | None, text: str | None) -> str | None:
    parts = [p.strip() for p in (preset, text) if p and p.strip()]
    if not parts:
        return None
    reason = ": ".join(parts)
    reason = "".join(ch for ch in reason if ch == "\n" or ch >= " ")
    if len(reason) > MAX_REASON:
        raise Refusal(400, f"the reason is longer than {MAX_REASON} characters")
    return reason


def _human(seconds: float) -> str:
    s = int(abs(seconds))
    if s < 60:
        out = f"{s}s"
    elif s < 3600:
        out = f"{s // 60}m {s % 60:02d}s"
    elif s < 86400:
        out = f"{s // 3600}h {s % 3600 // 60:02d}m"
    else:
        out = f"{s // 86400}d {s % 86400 // 3600}h"
    return out


def _local_path(target: str | None) -> str:
    """A redirect target inside the console (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/queue"
    return target


class Console:
    """The state behind the app: the store, the ledger, the policy, who is signed in."""

    def __init__(
        self,
        store: ApprovalStore,
        ledger: Ledger,
        policy: Policy,
        *,
        mapper: OidcMapper | None,
        dev_user: Principal | None = None,
        public_url: str | None = None,
        channels: Sequence[Channel] = (),
        settings: ApprovalsSpec | None = None,
        secure_cookies: bool | None = None,
        tick_seconds: float | None = 2.0,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.policy = policy
        self.settings = settings or policy.approvals or ApprovalsSpec()
        self.public_url = public_url or self.settings.console_url
        self.auth = Authenticator(mapper, dev_user=dev_user, clock=store.clock)
        self.evidence = Evidence(ledger)
        self.notifier = Notifier(store, channels, base_url=console_base(self.public_url))
        self.secure_cookies = secure_cookies if secure_cookies is not None else urlsplit(self.public_url or "").scheme == "https"
        self.tick_seconds = tick_seconds
        self.verify_every = 60.0
        """Seconds between the background verifications of the whole ledger (shown on every request page)."""
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
        self.env.filters["pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, sort_keys=True, default=str)
        self.env.filters["ts"] = lambda d: d.strftime("%Y-%m-%d %H:%M:%SZ") if d else "-"
        self.env.filters["iso"] = lambda d: d.isoformat() if d else ""
        self.ticks = 0
        # every decision made through the console reaches the ledger with the approver's identity
        store.record = self._record

    # -- recording -------------------------------------------------------------------------------

    def _record(self, kind: str, payload: dict[str, Any]) -> None:
        who = _approver.get()
        if who is not None and kind in ("approval.approved", "approval.denied"):
            payload = {**payload, "approver": who.evidence()}
        elif kind == "approval.expired":
            payload = {**payload, "approver": {"id": payload.get("decided_by"), "verified_by": "console expiry sweeper"}}
        self.ledger.record(kind, payload)

    def decide(self, request_id: str, who: Identity, verb: str, reason: str | None) -> ApprovalRequest:
        """Approve or deny as ``who`` (blocking: the store and the ledger are written)."""
        token = _approver.set(who)
        try:
            if verb == "approve":
                return self.store.approve(request_id, who.principal, reason)
            return self.store.deny(request_id, who.principal, reason)
        finally:
            _approver.reset(token)

    # -- background: expiry sweeper and notifications ---------------------------------------------

    def tick(self) -> tuple[int, int]:
        """Deny what expired unanswered (fail closed), then announce new requests; ``(denied, sent)``.

        Each half runs even when the other fails (a ledger that cannot record an expiry must not stop
        the announcements); the failure is logged and retried at the next tick.
        """
        self.ticks += 1
        denied: list[ApprovalRequest] = []
        sent = 0
        try:
            denied = self.store.deny_expired()
        except Exception:
            log.exception("expiry sweep failed (retried at the next tick)")
        for req in denied:
            log.warning("approval %s (%s) expired unanswered: denied", req.id, req.tool)
        try:
            sent = self.notifier.poll()
        except Exception:
            log.exception("notification round failed (retried at the next tick)")
        return len(denied), sent

    async def run_background(self) -> None:
        """The sweeper and the notifier every ``tick_seconds``; ledger verification in its own loop."""
        assert self.tick_seconds is not None
        verifier = asyncio.create_task(self._verify_loop())
        try:
            while True:
                await asyncio.to_thread(self.tick)
                await asyncio.sleep(self.tick_seconds)
        finally:
            verifier.cancel()

    async def _verify_loop(self) -> None:
        while True:
            await asyncio.to_thread(self.evidence.verify_status, max_age=self.verify_every)
            await asyncio.sleep(self.verify_every)

    # -- views: helpers ---------------------------------------------------------------------------

    def render(
        self, request: Request, name: str, ctx: dict[str, Any], *, who: Identity | None, status: int = 200
    ) -> HTMLResponse:
        base = {
            "me": who,
            "csrf": who.csrf if who is not None else None,
            "dev": self.auth.dev_user is not None,
            "flash": self.auth.sessions.take_flash(who.session if who else None),
            "policy": self.policy,
            "path": request.url.path,
            "now": self.store.clock(),
        }
        html = self.env.get_template(name).render(**base, **ctx)
        return HTMLResponse(html, status_code=status)

    def identify(self, request: Request) -> tuple[Identity | None, str | None]:
        return self.auth.identify(request.headers, request.cookies)

    def _risk(self, req: ApprovalRequest, findings: list[dict[str, Any]]) -> dict[str, Any]:
        cls = req.action.get("action_class")
        worst = max((_SEVERITY.get(str(f.get("severity", "info")), 0) for f in findings), default=0)
        level = _CLASS_RISK.get(str(cls), "medium")
        if worst >= _SEVERITY["high"]:
            level = "high"
        sev = next((k for k, v in _SEVERITY.items() if v == worst), "info")
        return {"level": level, "class": cls, "connector": req.action.get("connector"), "worst_finding": sev}

    def row(self, req: ApprovalRequest, now: datetime) -> dict[str, Any]:
        action = req.action
        chain = [p for p in action.get("principal", []) if isinstance(p, dict)]
        return {
            "req": req,
            "chain": chain,
            "connector": action.get("connector"),
            "class": action.get("action_class"),
            "risk": _CLASS_RISK.get(str(action.get("action_class")), "medium"),
            "age": _human((now - req.created_at).total_seconds()),
            "left": _human((req.expires_at - now).total_seconds()),
            "expired": req.expired(now),
        }

    def detail(self, req: ApprovalRequest, who: Identity | None) -> dict[str, Any]:
        """Everything the request page shows (blocking)."""
        now = self.store.clock()
        story = None
        ledger_error = None
        try:
            story = self.evidence.story(req.action_id)
        except Exception as exc:  # noqa: BLE001 - the page still shows the request, with the ledger's problem
            ledger_error = f"{type(exc).__name__}: {exc}"
        findings = [f for fs in (story.planes.values() if story else ()) for f in fs]
        previous = last_approved(req, self.store.requests(include_expired=True))
        diff = diff_arguments(previous.action.get("arguments", {}), req.action.get("arguments", {})) if previous else []
        provenance = self.evidence.provenance(story) if story else []
        decision = story.decision if story else None
        me = who.principal if who else None
        return {
            **self.row(req, now),
            "arguments": req.action.get("arguments", {}),
            "content": req.action.get("content"),
            "intent": req.action.get("intent"),
            "purpose": req.action.get("purpose"),
            "previous": previous,
            "diff": diff,
            "provenance": provenance,
            "decision": decision,
            "rule_ids": list(decision["rule_ids"]) if decision and decision.get("rule_ids") else [r for r in [req.rule_id] if r],
            "planes": {p: fs for p, fs in (story.planes.items() if story else ()) if fs},
            "risk": self._risk(req, findings),
            "decision_seq": self.evidence.decision_seq(story) if story else None,
            "in_ledger": story is not None,
            "ledger_error": ledger_error,
            "verify": self.evidence.cached_verify(),
            "deliveries": self.notifier.deliveries(req.id),
            "tool_spec": self.policy.tools.get(req.tool or ""),
            "is_requester": me is not None and me.id == req.requester,
            "has_role": me is not None and req.role in me.roles,
            "approve_reasons": self.settings.approve_reasons,
            "deny_reasons": self.settings.deny_reasons,
        }


# ---- the app ------------------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]


def create_app(
    store: ApprovalStore,
    ledger: Ledger,
    policy: Policy,
    *,
    mapper: OidcMapper | None,
    dev_user: Principal | None = None,
    public_url: str | None = None,
    allowed_hosts: Sequence[str] = ("127.0.0.1", "localhost", "::1"),
    channels: Sequence[Channel] = (),
    secure_cookies: bool | None = None,
    tick_seconds: float | None = 2.0,
) -> Starlette:
    """The console as an ASGI app (``app.state.console`` is the :class:`Console`).

    Args:
        store: the approval store the agents file into (its recorder is replaced by the ledger's).
        ledger: the evidence ledger (decisions are recorded there; the explorer reads it).
        policy: the pack: its ``planes.identity.oidc`` verifies approvers (``mapper``), its
            ``approvals`` section gives preset reasons, notifications and the public URL.
        dev_user: accept every browser as this user, unverified (local demos only).
        allowed_hosts: ``Host`` headers accepted (DNS rebinding); the public URL's host is added.
        channels: notification channels (see :func:`~fiveplane._console._notify.build_channels`).
        tick_seconds: how often the expiry sweeper and the notifier run (``None``: never; call
            ``console.tick()`` yourself).
    """
    console = Console(
        store,
        ledger,
        policy,
        mapper=mapper,
        dev_user=dev_user,
        public_url=public_url,
        channels=channels,
        secure_cookies=secure_cookies,
        tick_seconds=tick_seconds,
    )
    hosts = list(allowed_hosts)
    if console.public_url:
        host = urlsplit(console.public_url).hostname
        if host:
            hosts.append(host)

    def html_or_json(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    def refuse(request: Request, status: int, message: str, who: Identity | None) -> Response:
        if html_or_json(request):
            return JSONResponse({"error": message}, status_code=status)
        return console.render(request, "error.html", {"status": status, "message": message}, who=who, status=status)

    async def authenticated(request: Request) -> Identity | Response:
        who, why = console.identify(request)
        if who is not None:
            return who
        if console.auth.dev_user is not None and "authorization" not in request.headers and not html_or_json(request):
            who = console.auth.dev_session()
            # a dev browser gets its session cookie on this response and the page renders at once
            request.state.new_session = who
            return who
        if html_or_json(request) or "authorization" in request.headers:
            return JSONResponse({"error": why}, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="fiveplane"'})
        if request.method != "GET":
            return PlainTextResponse(f"not signed in: {why}", status_code=401)
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    def finish(request: Request, response: Response) -> Response:
        new: Identity | None = getattr(request.state, "new_session", None)
        if new is not None and new.session is not None:
            response.set_cookie(
                COOKIE, new.session, httponly=True, samesite="strict", secure=console.secure_cookies, path="/", max_age=8 * 3600
            )
        return response

    def page(fn: Callable[[Request, Identity], Awaitable[Response]]) -> Handler:
        async def handler(request: Request) -> Response:
            who = await authenticated(request)
            if isinstance(who, Response):
                return who
            try:
                return finish(request, await fn(request, who))
            except Refusal as exc:
                return finish(request, refuse(request, exc.status, exc.message, who))

        return handler

    def unsafe(fn: Callable[[Request, Identity, dict[str, Any]], Awaitable[Response]]) -> Handler:
        """An unsafe route: authenticated, then (cookie sessions) the synchronizer token."""

        async def handler(request: Request) -> Response:
            who, why = console.identify(request)
            if who is None:
                if html_or_json(request) or "authorization" in request.headers:
                    return JSONResponse({"error": why}, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="fiveplane"'})
                return PlainTextResponse(f"not signed in: {why}", status_code=401)
            data: dict[str, Any]
            if request.headers.get("content-type", "").startswith("application/json"):
                try:
                    raw = await request.json()
                except ValueError:
                    return refuse(request, 400, "the body is not valid JSON", who)
                data = raw if isinstance(raw, dict) else {}
            else:
                form: FormData = await request.form()
                data = {k: form.getlist(k) if k == "ids" else form.get(k) for k in form}
            presented = request.headers.get("x-csrf-token") or data.get("csrf")
            if not csrf_ok(who, presented if isinstance(presented, str) else None):
                return refuse(request, 403, "missing or wrong CSRF token: reload the page and try again", who)
            try:
                return await fn(request, who, data)
            except Refusal as exc:
                return refuse(request, exc.status, exc.message, who)

        return handler

    async def get_request(request_id: str) -> ApprovalRequest:
        try:
            return await run_in_threadpool(store.get, request_id)
        except ApprovalError as exc:
            raise Refusal(404, str(exc)) from None

    # -- login ------------------------------------------------------------------------------------

    async def login_form(request: Request) -> Response:
        who, _ = console.identify(request)
        token = secrets.token_urlsafe(24)
        resp = console.render(
            request,
            "login.html",
            {
                "login_csrf": token,
                "next": _local_path(request.query_params.get("next")),
                "error": None,
                "oidc": console.auth.mapper is not None,
            },
            who=who,
        )
        resp.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=console.secure_cookies, path="/login")
        return resp

    async def login(request: Request) -> Response:
        form = await request.form()
        cookie = request.cookies.get(LOGIN_COOKIE)
        sent = form.get("login_csrf")
        nxt = _local_path(str(form.get("next") or ""))
        if not cookie or not isinstance(sent, str) or not secrets.compare_digest(cookie, sent):
            return PlainTextResponse("missing or wrong login CSRF token: reload the sign-in page", status_code=403)
        token = form.get("token")
        try:
            if not isinstance(token, str) or not token.strip():
                raise IdentityError("paste your identity token (a JWT from your identity provider)")
            who = await run_in_threadpool(console.auth.login, token)
        except IdentityError as exc:
            fresh = secrets.token_urlsafe(24)
            resp = console.render(
                request,
                "login.html",
                {"login_csrf": fresh, "next": nxt, "error": f"refused: {exc}", "oidc": console.auth.mapper is not None},
                who=None,
                status=401,
            )
            resp.set_cookie(LOGIN_COOKIE, fresh, httponly=True, samesite="strict", secure=console.secure_cookies, path="/login")
            return resp
        log.info("console: %s signed in (%s)", who.principal.id, who.issuer or "oidc")
        done = RedirectResponse(nxt, status_code=303)
        max_age = max(1, int((who.expires_at - console.store.clock()).total_seconds()))
        assert who.session is not None
        done.set_cookie(
            COOKIE, who.session, httponly=True, samesite="strict", secure=console.secure_cookies, path="/", max_age=max_age
        )
        done.delete_cookie(LOGIN_COOKIE, path="/login")
        return done

    @unsafe
    async def logout(request: Request, who: Identity, data: dict[str, Any]) -> Response:
        console.auth.sessions.close(who.session)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # -- the queue ---------------------------------------------------------------------------------

    @page
    async def queue(request: Request, who: Identity) -> Response:
        pending = await run_in_threadpool(store.requests, status=ApprovalStatus.PENDING)
        now = store.clock()
        rows = [console.row(r, now) for r in sorted(pending, key=lambda r: r.expires_at)]
        return console.render(
            request,
            "queue.html",
            {"rows": rows, "approve_reasons": console.settings.approve_reasons, "deny_reasons": console.settings.deny_reasons},
            who=who,
        )

    @page
    async def request_page(request: Request, who: Identity) -> Response:
        req = await get_request(request.path_params["rid"])
        ctx = await run_in_threadpool(console.detail, req, who)
        return console.render(request, "request.html", ctx, who=who)

    async def _decide_one(request_id: str, who: Identity, verb: str, reason: str | None) -> ApprovalRequest:
        try:
            return await run_in_threadpool(console.decide, request_id, who, verb, reason)
        except ApprovalError as exc:
            raise Refusal(_status_for(exc), f"refused: {exc}") from None
        except LedgerError as exc:
            raise Refusal(503, f"not decided: the ledger could not record it ({exc})") from None

    def _after(req: ApprovalRequest, verb: str) -> str:
        if verb == "approve":
            return f"approved {req.id}: the exact {req.tool or 'action'} may now run once"
        return f"denied {req.id}: the exact {req.tool or 'action'} can never run in its session"

    def _verb(request: Request) -> str:
        verb = str(request.path_params.get("verb", ""))
        if verb not in ("approve", "deny"):
            raise Refusal(404, f"no such decision {verb!r}")
        return verb

    @unsafe
    async def decide(request: Request, who: Identity, data: dict[str, Any]) -> Response:
        verb = _verb(request)
        rid = request.path_params["rid"]
        reason = _reason(data.get("reason_preset"), data.get("reason_text") or data.get("reason"))
        if verb == "deny" and reason is None:
            raise Refusal(400, "a denial needs a reason (it goes back to the agent)")
        try:
            done = await _decide_one(rid, who, verb, reason)
        except Refusal as exc:
            if html_or_json(request):
                raise
            req = await get_request(rid)
            ctx = await run_in_threadpool(console.detail, req, who)
            return console.render(request, "request.html", {**ctx, "error": exc.message}, who=who, status=exc.status)
        if html_or_json(request):
            return JSONResponse({"request": done.model_dump(mode="json", exclude={"action"})})
        console.auth.sessions.flash(who.session, "ok", _after(done, verb))
        return RedirectResponse(f"/requests/{done.id}", status_code=303)

    @unsafe
    async def batch(request: Request, who: Identity, data: dict[str, Any]) -> Response:
        verb = str(data.get("verb") or "")
        if verb not in ("approve", "deny"):
            raise Refusal(400, "choose approve or deny")
        ids = data.get("ids") or []
        if isinstance(ids, str):
            ids = [ids]
        ids = [str(i) for i in ids if i]
        if not ids:
            raise Refusal(400, "select at least one request")
        if len(ids) > MAX_BATCH:
            raise Refusal(400, f"at most {MAX_BATCH} requests at once")
        reason = _reason(data.get("reason_preset"), data.get("reason_text"))
        if verb == "deny" and reason is None:
            raise Refusal(400, "a denial needs a reason (it goes back to the agent)")
        results: list[dict[str, Any]] = []
        for rid in ids:
            try:
                done = await _decide_one(rid, who, verb, reason)
                results.append({"id": rid, "ok": True, "message": _after(done, verb)})
            except Refusal as exc:
                results.append({"id": rid, "ok": False, "message": exc.message})
        if html_or_json(request):
            return JSONResponse({"results": results})
        status = 200 if all(r["ok"] for r in results) else 207
        return console.render(request, "batch.html", {"results": results, "verb": verb}, who=who, status=status)

    @page
    async def history(request: Request, who: Identity) -> Response:
        q = request.query_params
        status = q.get("status") or ""
        tool = q.get("tool") or ""
        session = q.get("session") or ""
        mine = q.get("mine") == "1"
        try:
            page_no = max(1, int(q.get("page") or 1))
        except ValueError:
            raise Refusal(400, "page must be a number") from None
        if status and status not in {s.value for s in ApprovalStatus} | {"expired"}:
            raise Refusal(400, f"unknown status {status!r}")
        everything = await run_in_threadpool(store.requests, include_expired=True)
        now = store.clock()
        picked = []
        for r in everything:
            expired_pending = r.status is ApprovalStatus.PENDING and r.expired(now)
            if r.status is ApprovalStatus.PENDING and not expired_pending:
                continue
            if status == "expired":
                if not (expired_pending or (r.decided_by or "").startswith("fiveplane:expiry")):
                    continue
            elif status and r.status.value != status:
                continue
            if tool and r.tool != tool:
                continue
            if session and r.session_id != session:
                continue
            if mine and r.decided_by != who.principal.id:
                continue
            picked.append(r)
        picked.sort(key=lambda r: r.decided_at or r.expires_at, reverse=True)
        total = len(picked)
        rows = [console.row(r, now) for r in picked[(page_no - 1) * PAGE : page_no * PAGE]]
        tools = sorted({r.tool for r in everything if r.tool})
        return console.render(
            request,
            "history.html",
            {
                "rows": rows,
                "total": total,
                "page": page_no,
                "pages": max(1, (total + PAGE - 1) // PAGE),
                "filters": {"status": status, "tool": tool, "session": session, "mine": mine},
                "statuses": [s.value for s in ApprovalStatus] + ["expired"],
                "tools": tools,
            },
            who=who,
        )

    # -- evidence ------------------------------------------------------------------------------------

    @page
    async def evidence_home(request: Request, who: Identity) -> Response:
        refresh = request.query_params.get("refresh") == "1"
        status = await run_in_threadpool(console.evidence.verify_status, refresh=refresh)
        sessions = await run_in_threadpool(console.evidence.recent_sessions)
        return console.render(
            request,
            "evidence.html",
            {
                "verify": status,
                "sessions": sessions,
                "origin": ledger.origin,
                "size": status.report.size if status.report else None,
            },
            who=who,
        )

    @page
    async def session_page(request: Request, who: Identity) -> Response:
        sid = request.path_params["sid"]
        steps, cut = await run_in_threadpool(console.evidence.session, sid)
        if not steps:
            raise Refusal(404, f"the ledger holds no session {sid}")
        approvals = await run_in_threadpool(store.requests, session_id=sid, include_expired=True)
        return console.render(
            request, "session.html", {"session_id": sid, "steps": steps, "cut": cut, "approvals": approvals}, who=who
        )

    @page
    async def action_page(request: Request, who: Identity) -> Response:
        aid = request.path_params["aid"]
        story = await run_in_threadpool(console.evidence.story, aid)
        if story is None:
            raise Refusal(404, f"the ledger holds no action {aid}")
        approvals = [
            r
            for r in await run_in_threadpool(store.requests, session_id=story.session_id or "", include_expired=True)
            if r.action_id == aid
        ]
        return console.render(
            request,
            "action.html",
            {
                "story": story,
                "decision_seq": Evidence.decision_seq(story),
                "provenance": await run_in_threadpool(console.evidence.provenance, story),
                "approvals": approvals,
                "verify": console.evidence.cached_verify(),
            },
            who=who,
        )

    @page
    async def receipt(request: Request, who: Identity) -> Response:
        aid = request.path_params["aid"]
        raw_seq = request.query_params.get("seq")
        try:
            seq = int(raw_seq) if raw_seq else None
        except ValueError:
            raise Refusal(400, "seq must be a number") from None
        try:
            at, text = await run_in_threadpool(console.evidence.receipt, aid, seq)
        except LedgerError as exc:
            raise Refusal(404 if "no action" in str(exc) or "has no record" in str(exc) else 409, str(exc)) from None
        return PlainTextResponse(
            text,
            media_type="text/plain; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="fiveplane-{at}.tlog-proof"'},
        )

    # -- JSON --------------------------------------------------------------------------------------

    def _json(req: ApprovalRequest) -> dict[str, Any]:
        return req.model_dump(mode="json")

    @page
    async def api_list(request: Request, who: Identity) -> Response:
        raw = request.query_params.get("status") or "pending"
        try:
            status = ApprovalStatus(raw)
        except ValueError:
            raise Refusal(400, f"unknown status {raw!r}") from None
        reqs = await run_in_threadpool(store.requests, status=status)
        return JSONResponse({"requests": [_json(r) for r in reqs]})

    @page
    async def api_get(request: Request, who: Identity) -> Response:
        return JSONResponse({"request": _json(await get_request(request.path_params["rid"]))})

    @page
    async def api_queue_state(request: Request, who: Identity) -> Response:
        pending = await run_in_threadpool(store.requests, status=ApprovalStatus.PENDING)
        return JSONResponse({"pending": sorted(r.id for r in pending)})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def root(request: Request) -> Response:
        return RedirectResponse("/queue", status_code=303)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(console.run_background()) if console.tick_seconds else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            console.notifier.close()

    routes = [
        Route("/", root),
        Route("/healthz", healthz),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/queue", queue),
        Route("/requests/{rid}", request_page),
        Route("/requests/{rid}/{verb}", decide, methods=["POST"]),
        Route("/batch", batch, methods=["POST"]),
        Route("/history", history),
        Route("/evidence", evidence_home),
        Route("/evidence/sessions/{sid}", session_page),
        Route("/evidence/actions/{aid}", action_page),
        Route("/evidence/actions/{aid}/receipt", receipt),
        Route("/api/requests", api_list),
        Route("/api/requests/{rid}", api_get),
        Route("/api/requests/{rid}/{verb}", decide, methods=["POST"]),
        Route("/api/queue-state", api_queue_state),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecureHeaders, hsts=console.secure_cookies),
            Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
            Middleware(OriginGuard, public=(urlsplit(console.public_url).netloc,) if console.public_url else ()),
        ],
        lifespan=lifespan,
    )
    app.state.console = console
    return app
