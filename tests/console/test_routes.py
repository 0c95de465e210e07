"""Every route of the approval console, through Starlette's TestClient, over a real store and ledger."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from fiveplane import ApprovalStatus, ApprovalStore, Principal, PrincipalKind, Verdict
from fiveplane._ledger import NoteVerifier, load_signing_key, verify_receipt
from fiveplane._policy._load import Policy
from tests.console.conftest import Clock, Idp, World, approval_id, csrf_of, login, make_client

# ---- sign-in --------------------------------------------------------------------------------------


def test_root_and_health(client: TestClient) -> None:
    assert client.get("/").headers["location"] == "/queue"
    assert client.get("/healthz").json() == {"ok": True}


def test_unauthenticated_pages_redirect_to_login_and_api_says_401(client: TestClient, world: World) -> None:
    rid = approval_id(world.contract())
    r = client.get(f"/requests/{rid}")
    assert r.status_code == 303 and r.headers["location"] == f"/login?next=/requests/{rid}"
    for path in ("/api/requests", f"/api/requests/{rid}", "/api/queue-state"):
        r = client.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    for path in (f"/requests/{rid}/approve", "/batch", "/logout"):
        assert client.post(path, data={"csrf": "x"}).status_code == 401
    assert ApprovalStore(world.db).get(rid).status is ApprovalStatus.PENDING


def test_login_with_a_verified_token_opens_a_session(client: TestClient, idp: Idp) -> None:
    form = client.get("/login?next=/history")
    assert form.status_code == 200 and 'name="next" value="/history"' in form.text
    assert "fiveplane_console_login" in form.headers["set-cookie"]
    csrf = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    r = client.post("/login", data={"login_csrf": csrf.group(1), "token": idp.token("manager-1"), "next": "/history"})
    assert r.status_code == 303 and r.headers["location"] == "/history"
    cookie = r.headers["set-cookie"]
    assert "fiveplane_console=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = client.get("/queue")
    assert page.status_code == 200
    assert 'data-testid="me">manager-1<' in page.text and "sales-manager" in page.text


@pytest.mark.parametrize(
    ("why", "make"),
    [
        ("signature", lambda idp: idp.token("manager-1", key=ec.generate_private_key(ec.SECP256R1()))),
        ("expired", lambda idp: idp.token("manager-1", ttl=-120)),
        ("audience", lambda idp: idp.token("manager-1", aud="someone-else")),
        ("garbage", lambda idp: "not-a-jwt"),
    ],
)
def test_login_refuses_bad_tokens(client: TestClient, idp: Idp, why: str, make: object) -> None:
    form = client.get("/login")
    csrf = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    r = client.post("/login", data={"login_csrf": csrf.group(1), "token": make(idp)})  # type: ignore[operator]
    assert r.status_code == 401 and "refused" in r.text
    assert "fiveplane_console=" not in r.headers.get("set-cookie", "")
    assert client.get("/queue").status_code == 303


def test_login_needs_its_csrf_cookie_and_stays_on_the_site(client: TestClient, idp: Idp) -> None:
    # no login CSRF (a cross-site form would not have the cookie): refused
    assert client.post("/login", data={"login_csrf": "guess", "token": idp.token("manager-1")}).status_code == 403
    form = client.get("/login")
    csrf = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    r = client.post("/login", data={"login_csrf": csrf.group(1), "token": idp.token("manager-1"), "next": "//evil.example/x"})
    assert r.status_code == 303 and r.headers["location"] == "/queue"


def test_logout_needs_csrf_and_ends_the_session(client: TestClient, idp: Idp) -> None:
    csrf = login(client, idp.token("manager-1"))
    assert client.post("/logout").status_code == 403
    assert client.get("/queue").status_code == 200
    assert client.post("/logout", data={"csrf": csrf}).headers["location"] == "/login"
    assert client.get("/queue").status_code == 303


# ---- the queue and a request ------------------------------------------------------------------------


def test_queue_lists_pending_requests_with_chain_risk_and_expiry(client: TestClient, world: World, idp: Idp) -> None:
    a = approval_id(world.contract("s-1"))
    b = approval_id(world.contract("s-2", status="cancelled"))
    login(client, idp.token("manager-1"))
    page = client.get("/queue").text
    assert page.count('data-testid="row"') == 2 and a in page and b in page
    assert 'data-testid="pending-count">2<' in page
    assert "contracts.update_status" in page and "rep-1" in page and "sales-assistant" in page
    assert 'class="risk high"' in page  # a modify action
    assert re.search(r'class="countdown" datetime="[^"]+" data-expires="[^"]+">(1h 00m|59m \d\ds)<', page)
    assert client.get("/api/queue-state").json() == {"pending": sorted([a, b])}


def test_request_page_shows_what_would_run_and_why(client: TestClient, world: World, idp: Idp) -> None:
    rid = approval_id(world.contract(status="signed", contract="C-9"))
    login(client, idp.token("manager-1"))
    r = client.get(f"/requests/{rid}")
    assert r.status_code == 200
    page = r.text
    args = re.search(r'data-testid="arguments">(.*?)</pre>', page, re.S)
    assert args is not None and json.loads(args.group(1).replace("&#34;", '"')) == {"contract_id": "C-9", "status": "signed"}
    assert 'data-testid="rule-id">contracts.update-needs-manager<' in page
    assert "contract changes need a sales manager" in page
    assert 'data-testid="requester">rep-1<' in page
    assert 'data-testid="no-previous"' in page
    assert f"/evidence/actions/{ApprovalStore(world.db).get(rid).action_id}" in page
    assert 'data-testid="receipt"' in page
    assert client.get("/requests/apr-nope").status_code == 404


def test_diff_against_the_last_approved_call_of_the_same_tool(client: TestClient, world: World, idp: Idp) -> None:
    first = approval_id(world.contract("s-1", status="negotiation", contract="C-7"))
    csrf = login(client, idp.token("manager-1"))
    assert client.post(f"/requests/{first}/approve", data={"csrf": csrf}).status_code == 303
    second = approval_id(world.contract("s-2", status="signed", contract="C-7"))
    page = client.get(f"/requests/{second}").text
    diff = re.search(r'data-testid="diff">(.*?)</table>', page, re.S)
    assert diff is not None and first in page
    rows = re.findall(r'<tr class="(\w+)"><td><code>([\w.]+)</code></td><td>([^<]*)</td><td>([^<]*)</td>', diff.group(1))
    assert ("same", "contract_id", "C-7", "C-7") in rows
    assert ("changed", "status", "negotiation", "signed") in rows


def test_provenance_names_the_step_that_brought_the_tainted_value(client: TestClient, world: World, idp: Idp) -> None:
    decision, note = world.tainted_email()
    assert decision.verdict is Verdict.REQUIRE_APPROVAL
    rid = approval_id(decision)
    login(client, idp.token("manager-1"))
    page = client.get(f"/requests/{rid}").text
    prov = re.search(r'data-testid="provenance">(.*?)</ul>', page, re.S)
    assert prov is not None
    assert "untrusted content of crm.get_account_notes" in prov.group(1)
    assert f'href="/evidence/actions/{note.action_id}"' in prov.group(1)
    assert "flow.consequential" in prov.group(1)
    # the tainted value itself is never named by the finding
    assert "procurement@globex-review.example" not in prov.group(1)


# ---- deciding -------------------------------------------------------------------------------------------


def test_approve_with_a_reason_records_the_verified_approver(client: TestClient, world: World, idp: Idp) -> None:
    rid = approval_id(world.contract())
    csrf = login(client, idp.token("manager-1", email="m1@acme.example"))
    r = client.post(
        f"/requests/{rid}/approve",
        data={"csrf": csrf, "reason_preset": "Verified with the requester", "reason_text": "called her"},
    )
    assert r.status_code == 303 and r.headers["location"] == f"/requests/{rid}"
    page = client.get(f"/requests/{rid}").text
    assert "approved " + rid in page and 'data-testid="decided-by">manager-1<' in page
    req = ApprovalStore(world.db).get(rid)
    assert req.status is ApprovalStatus.APPROVED and req.decided_by == "manager-1"
    assert req.reason == "Verified with the requester: called her"
    world.ledger.flush()
    rec = next(r for r in world.ledger.records(req.action_id) if r.kind == "approval.approved")
    assert rec.payload["approver"] == {
        "id": "manager-1",
        "roles": ["sales-manager"],
        "verified_by": "oidc",
        "issuer": "https://idp.acme.example/",
        "credential": "session",
        "via": "console",
    }
    assert rec.payload["reason"] == "Verified with the requester: called her"
    # the agent's next attempt runs once
    assert world.contract().verdict is Verdict.ALLOW


def test_deny_needs_a_reason_and_the_reason_reaches_the_agent(client: TestClient, world: World, idp: Idp) -> None:
    rid = approval_id(world.contract())
    csrf = login(client, idp.token("manager-1"))
    r = client.post(f"/requests/{rid}/deny", data={"csrf": csrf})
    assert r.status_code == 400 and "needs a reason" in r.text
    assert ApprovalStore(world.db).get(rid).status is ApprovalStatus.PENDING
    r = client.post(
        f"/requests/{rid}/deny",
        data={"csrf": csrf, "reason_preset": "Wrong target or arguments", "reason_text": "C-7 is not signed yet"},
    )
    assert r.status_code == 303
    again = world.contract()
    assert again.verdict is Verdict.BLOCK
    assert "Wrong target or arguments: C-7 is not signed yet" in again.explanation and "manager-1" in again.explanation


def test_separation_of_duties_and_roles_are_enforced_by_the_store(client: TestClient, world: World, idp: Idp) -> None:
    rid = approval_id(world.contract())
    # the requester holds the approver role too: still refused (she asked for it)
    csrf = login(client, idp.token("rep-1", ("managers", "reps")))
    page = client.get(f"/requests/{rid}").text
    assert 'data-testid="sod-notice"' in page
    r = client.post(f"/requests/{rid}/approve", data={"csrf": csrf})
    assert r.status_code == 403 and "separation of duties" in r.text and 'data-testid="error"' in r.text
    client.post("/logout", data={"csrf": csrf})
    csrf = login(client, idp.token("rep-2", ("reps",)))
    assert 'data-testid="role-notice"' in client.get(f"/requests/{rid}").text
    r = client.post(f"/requests/{rid}/approve", data={"csrf": csrf})
    assert r.status_code == 403 and "does not hold the role" in r.text
    assert ApprovalStore(world.db).get(rid).status is ApprovalStatus.PENDING


def test_decisions_need_the_csrf_token_and_the_console_origin(client: TestClient, world: World, idp: Idp) -> None:
    rid = approval_id(world.contract())
    csrf = login(client, idp.token("manager-1"))
    assert client.post(f"/requests/{rid}/approve", data={}).status_code == 403
    assert client.post(f"/requests/{rid}/approve", data={"csrf": csrf + "x"}).status_code == 403
    evil = {"Origin": "https://evil.example"}
    r = client.post(f"/requests/{rid}/approve", data={"csrf": csrf}, headers=evil)
    assert r.status_code == 403 and "cross-origin" in r.text
    r = client.post(f"/requests/{rid}/approve", data={"csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403 and "cross-site" in r.text
    r = client.post(f"/requests/{rid}/approve", data={"csrf": csrf}, headers={"Origin": "null"})
    assert r.status_code == 403
    assert ApprovalStore(world.db).get(rid).status is ApprovalStatus.PENDING
    # a browser form post under Referrer-Policy no-referrer: Origin null, but same-origin fetch metadata
    same = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    assert client.post(f"/requests/{rid}/approve", data={"csrf": csrf}, headers=same).status_code == 303
    assert ApprovalStore(world.db).get(rid).status is ApprovalStatus.APPROVED


def test_an_expired_or_decided_request_cannot_be_decided(client: TestClient, world: World, idp: Idp, clock: Clock) -> None:
    rid = approval_id(world.contract())
    csrf = login(client, idp.token("manager-1", ttl=7200))
    assert client.post(f"/requests/{rid}/approve", data={"csrf": csrf}).status_code == 303
    r = client.post(f"/requests/{rid}/deny", data={"csrf": csrf, "reason_text": "changed my mind"})
    assert r.status_code == 409 and "not pending" in r.text
    other = approval_id(world.contract("s-9"))
    clock.advance(3601)
    r = client.post(f"/requests/{other}/approve", data={"csrf": csrf})
    assert r.status_code == 409 and "expired" in r.text


def test_a_reason_is_bounded(client: TestClient, world: World, idp: Idp) -> None:
    rid = approval_id(world.contract())
    csrf = login(client, idp.token("manager-1"))
    r = client.post(f"/requests/{rid}/deny", data={"csrf": csrf, "reason_text": "x" * 1001})
    assert r.status_code == 400 and "longer than 1000" in r.text


def test_batch_decisions_report_each_request(client: TestClient, world: World, idp: Idp) -> None:
    mine = approval_id(world.contract("s-own", user=Principal(kind=PrincipalKind.USER, id="manager-1", roles=("sales-manager",))))
    a = approval_id(world.contract("s-1"))
    b = approval_id(world.contract("s-2"))
    csrf = login(client, idp.token("manager-1"))
    assert client.post("/batch", data={"csrf": csrf, "verb": "deny", "ids": [a, b]}).status_code == 400
    assert client.post("/batch", data={"csrf": csrf, "verb": "approve"}).status_code == 400
    assert client.post("/batch", data={"csrf": csrf, "verb": "maybe", "ids": [a]}).status_code == 400
    assert (
        client.post("/batch", data={"csrf": csrf, "verb": "approve", "ids": [f"apr-{i}" for i in range(101)]}).status_code == 400
    )
    assert client.post("/batch", data={"verb": "approve", "ids": [a, b]}).status_code == 403
    r = client.post("/batch", data={"csrf": csrf, "verb": "approve", "ids": [a, b, mine], "reason_text": "batch ok"})
    assert r.status_code == 207
    results = re.findall(r'<li class="(ok|refused)" data-testid="batch-result">', r.text)
    assert sorted(results) == ["ok", "ok", "refused"]
    assert "separation of duties" in r.text
    store = ApprovalStore(world.db)
    assert [store.get(x).status for x in (a, b, mine)] == [
        ApprovalStatus.APPROVED,
        ApprovalStatus.APPROVED,
        ApprovalStatus.PENDING,
    ]
    assert store.get(a).reason == "batch ok"


def test_history_filters(client: TestClient, world: World, idp: Idp, clock: Clock) -> None:
    a = approval_id(world.contract("s-1"))
    b = approval_id(world.contract("s-2"))
    d, _ = world.tainted_email("s-3")
    c = approval_id(d)
    pending = approval_id(world.contract("s-4"))
    csrf = login(client, idp.token("manager-1"))
    client.post(f"/requests/{a}/approve", data={"csrf": csrf})
    client.post(f"/requests/{c}/deny", data={"csrf": csrf, "reason_text": "no"})
    client.post("/logout", data={"csrf": csrf})
    csrf = login(client, idp.token("manager-2", ttl=7200))
    client.post(f"/requests/{b}/deny", data={"csrf": csrf, "reason_text": "no"})

    def ids(query: str) -> set[str]:
        r = client.get("/history" + query)
        assert r.status_code == 200
        return set(re.findall(r'data-testid="history-row" data-request-id="(apr-\w+)"', r.text))

    assert ids("") == {a, b, c}  # pending requests are in the queue, not the history
    assert ids("?status=denied") == {b, c}
    assert ids("?status=approved") == {a}
    assert ids("?tool=email.send") == {c}
    assert ids("?session=s-2") == {b}
    assert ids("?mine=1") == {b}
    clock.advance(3601)
    assert ids("?status=expired") == {pending}
    assert client.get("/history?status=bogus").status_code == 400
    assert client.get("/history?page=x").status_code == 400


# ---- evidence ---------------------------------------------------------------------------------------


def test_evidence_home_verifies_the_ledger_and_shows_a_tampered_one(client: TestClient, world: World, idp: Idp) -> None:
    rid = approval_id(world.contract("s-ev"))
    login(client, idp.token("manager-1"))
    page = client.get("/evidence").text
    assert 'data-testid="verify">verified<' in page and "s-ev" in page
    # alter one stored payload behind the ledger's back: the next verification fails
    path = Path(world.db.removeprefix("sqlite:///")).parent / "ledger.db"
    with sqlite3.connect(path) as conn:
        assert conn.execute("UPDATE ledger_payloads SET body = CAST('{\"forged\": true}' AS BLOB) WHERE seq = 0").rowcount == 1
    page = client.get("/evidence?refresh=1").text
    assert 'data-testid="verify">FAILED<' in page
    assert 'data-testid="verify">FAILED<' in client.get(f"/requests/{rid}").text


def test_session_timeline_with_findings_per_plane(client: TestClient, world: World, idp: Idp) -> None:
    d, _note = world.tainted_email("s-tl")
    login(client, idp.token("manager-1"))
    r = client.get("/evidence/sessions/s-tl")
    assert r.status_code == 200
    timeline = re.search(r'data-testid="timeline">(.*?)</ol>', r.text, re.S)
    assert timeline is not None
    steps = timeline.group(1)
    assert steps.count("<li") == 3
    assert "crm.get_account_notes" in steps and "email.send" in steps
    assert "untrusted_flow" in steps and "require_approval" in steps
    assert approval_id(d) in r.text
    assert client.get("/evidence/sessions/nope").status_code == 404


def test_action_story_and_its_receipt(client: TestClient, world: World, idp: Idp) -> None:
    rid = approval_id(world.contract("s-rc"))
    aid = ApprovalStore(world.db).get(rid).action_id
    login(client, idp.token("manager-1"))
    page = client.get(f"/evidence/actions/{aid}")
    assert page.status_code == 200
    assert "contracts.update-needs-manager" in page.text and rid in page.text and "rep-1" in page.text
    r = client.get(f"/evidence/actions/{aid}/receipt")
    assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment")
    verifier = NoteVerifier.parse(load_signing_key(world.key_file).verifier_key())
    check = verify_receipt(r.text, [verifier])
    story = world.ledger.reconstruct(aid)
    assert story is not None
    assert check.index == max(rec.seq for rec in story.records if rec.kind == "decision")
    assert client.get(f"/evidence/actions/{aid}/receipt?seq=999999").status_code == 404
    assert client.get(f"/evidence/actions/{aid}/receipt?seq=x").status_code == 400
    assert client.get("/evidence/actions/nope").status_code == 404
    assert client.get("/evidence/actions/nope/receipt").status_code == 404


def test_receipt_without_a_key_or_checkpoint_is_a_clear_409(
    world: World, policy: Policy, clock: Clock, idp: Idp, tmp_path: Path
) -> None:
    from fiveplane._ledger import open_ledger

    rid = approval_id(world.contract("s-nk"))
    aid = ApprovalStore(world.db).get(rid).action_id
    keyless = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", checkpoint_interval=None)
    try:
        world2 = World(world.directory, world.db, keyless, world.gov, world.key_file)
        client = make_client(world2, policy, clock)
        login(client, idp.token("manager-1"))
        r = client.get(f"/evidence/actions/{aid}/receipt")
        assert r.status_code == 409 and "no signing key" in r.text
    finally:
        keyless.close()


# ---- JSON API and bearer tokens -----------------------------------------------------------------------


def test_api_with_a_bearer_token(client: TestClient, world: World, idp: Idp) -> None:
    rid = approval_id(world.contract())
    other = approval_id(world.contract("s-2"))
    bearer = {"Authorization": "Bearer " + idp.token("manager-1")}
    listed = client.get("/api/requests", headers=bearer).json()["requests"]
    assert {r["id"] for r in listed} == {rid, other}
    assert client.get(f"/api/requests/{rid}", headers=bearer).json()["request"]["tool"] == "contracts.update_status"
    assert client.get("/api/requests?status=nope", headers=bearer).status_code == 400
    assert client.get("/api/requests/apr-none", headers=bearer).status_code == 404
    # no cookie, so no CSRF token: the bearer token is the credential
    r = client.post(f"/api/requests/{rid}/approve", json={"reason": "ok"}, headers=bearer)
    assert r.status_code == 200 and r.json()["request"]["status"] == "approved"
    r = client.post(f"/api/requests/{other}/deny", json={}, headers=bearer)
    assert r.status_code == 400
    r = client.post(f"/api/requests/{other}/maybe", json={"reason": "x"}, headers=bearer)
    assert r.status_code == 404
    r = client.post(
        f"/api/requests/{other}/approve", json={}, headers={"Authorization": "Bearer " + idp.token("rep-2", ("reps",))}
    )
    assert r.status_code == 403 and "does not hold the role" in r.json()["error"]
    r = client.post(f"/api/requests/{other}/approve", json={}, headers={"Authorization": "Bearer forged"})
    assert r.status_code == 401
    r = client.get("/api/requests", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    # a bearer token sent from a foreign page is still refused
    r = client.post(f"/api/requests/{other}/approve", json={}, headers={**bearer, "Origin": "https://evil.example"})
    assert r.status_code == 403
    world.ledger.flush()
    story = world.ledger.records(ApprovalStore(world.db).get(rid).action_id)
    rec = next(r for r in story if r.kind == "approval.approved")
    assert rec.payload["approver"]["credential"] == "bearer"


def test_api_with_a_session_cookie_needs_the_csrf_header(client: TestClient, world: World, idp: Idp) -> None:
    rid = approval_id(world.contract())
    csrf = login(client, idp.token("manager-1"))
    assert client.post(f"/api/requests/{rid}/approve", json={}).status_code == 403
    r = client.post(f"/api/requests/{rid}/approve", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200


# ---- headers, hosts, static files, URLs ----------------------------------------------------------------


def test_security_headers_on_every_response(client: TestClient, world: World, idp: Idp) -> None:
    rid = approval_id(world.contract())
    login(client, idp.token("manager-1"))
    for path in (
        "/login",
        "/queue",
        f"/requests/{rid}",
        "/static/console.js",
        "/static/console.css",
        "/api/queue-state",
        "/nope",
    ):
        r = client.get(path)
        h = r.headers
        assert "script-src 'self'" in h["content-security-policy"] and "unsafe-inline" not in h["content-security-policy"], path
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert (
            h["x-frame-options"] == "DENY" and h["referrer-policy"] == "no-referrer" and h["x-content-type-options"] == "nosniff"
        )
    assert client.get("/queue").headers["cache-control"] == "no-store"
    assert "javascript" in client.get("/static/console.js").headers["content-type"]


def test_pages_hold_no_inline_script_or_style_and_urls_hold_ids_only(client: TestClient, world: World, idp: Idp) -> None:
    d, _note = world.tainted_email("s-urls")
    rid = approval_id(d)
    aid = ApprovalStore(world.db).get(rid).action_id
    login(client, idp.token("manager-1"))
    pages = [
        f"/requests/{rid}",
        "/queue",
        "/history",
        "/evidence",
        "/evidence/sessions/s-urls",
        f"/evidence/actions/{aid}",
        "/login",
    ]
    for path in pages:
        html = client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert not re.search(r"\s(style|on\w+)=", html), path
        for url in re.findall(r'(?:href|action|src)="([^"]*)"', html):
            assert "procurement" not in url and "rep-1" not in url and "@" not in url, (path, url)


def test_an_unknown_host_header_is_refused(world: World, policy: Policy, clock: Clock) -> None:
    client = make_client(world, policy, clock)
    r = client.get("/queue", headers={"Host": "rebound.evil.example"})
    assert r.status_code == 400


def test_dev_mode_shows_a_banner_and_records_an_unverified_approver(world: World, policy: Policy, clock: Clock) -> None:
    dev = Principal(kind=PrincipalKind.USER, id="demo-manager", roles=("sales-manager",))
    client = make_client(world, policy, clock, dev=dev)
    rid = approval_id(world.contract())
    page = client.get("/queue")
    assert page.status_code == 200 and "DEV MODE" in page.text and "demo-manager" in page.text
    csrf = csrf_of(client.get(f"/requests/{rid}").text)
    assert client.post(f"/requests/{rid}/approve", data={}).status_code == 403
    assert client.post(f"/requests/{rid}/approve", data={"csrf": csrf}).status_code == 303
    world.ledger.flush()
    rec = next(r for r in world.ledger.records(ApprovalStore(world.db).get(rid).action_id) if r.kind == "approval.approved")
    assert rec.payload["approver"]["verified_by"] == "dev-user (unverified)"


def test_the_console_needs_a_way_to_authenticate(world: World, tmp_path: Path) -> None:
    from fiveplane._console import create_app
    from fiveplane._policy._load import load_policy
    from tests.console.conftest import AGENT_PACK

    with pytest.raises(ValueError, match="authenticate approvers"):
        create_app(ApprovalStore(world.db), world.ledger, load_policy(AGENT_PACK), mapper=None)


def test_a_ledger_that_cannot_record_refuses_the_decision(
    world: World, policy: Policy, clock: Clock, idp: Idp, tmp_path: Path
) -> None:
    from fiveplane._ledger import open_ledger

    rid = approval_id(world.contract("s-down"))
    other = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", checkpoint_interval=None)
    client = make_client(World(world.directory, world.db, other, world.gov, world.key_file), policy, clock)
    csrf = login(client, idp.token("manager-1"))
    other.close()  # the console's ledger is gone: nothing may be decided unrecorded
    r = client.post(f"/requests/{rid}/approve", data={"csrf": csrf})
    assert r.status_code == 503 and "could not record" in r.text
    assert ApprovalStore(world.db).get(rid).status is ApprovalStatus.PENDING


def test_recorded_values_are_escaped_in_every_page(client: TestClient, world: World, idp: Idp) -> None:
    rid = approval_id(world.contract("s-xss", status="<script>alert(1)</script>", contract='C-7" onmouseover="x'))
    login(client, idp.token("manager-1"))
    for path in (f"/requests/{rid}", "/queue", f"/evidence/actions/{ApprovalStore(world.db).get(rid).action_id}"):
        html = client.get(path).text
        assert "<script>alert(1)" not in html and 'onmouseover="x' not in html, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get(f"/requests/{rid}").text


def test_behind_a_proxy_the_public_origin_is_accepted(world: World, policy: Policy, clock: Clock, idp: Idp) -> None:
    from fiveplane._console import create_app
    from fiveplane._planes._identity import oidc_mapper

    app = create_app(
        ApprovalStore(world.db, clock=clock),
        world.ledger,
        policy,
        mapper=oidc_mapper(policy),
        public_url="https://approvals.acme.example",
        allowed_hosts=["testserver"],
        tick_seconds=None,
    )
    client = TestClient(app, base_url="http://testserver", follow_redirects=False)
    rid = approval_id(world.contract())
    bearer = {"Authorization": "Bearer " + idp.token("manager-1")}
    r = client.post(f"/api/requests/{rid}/approve", json={}, headers={**bearer, "Origin": "https://elsewhere.example"})
    assert r.status_code == 403
    r = client.post(f"/api/requests/{rid}/approve", json={}, headers={**bearer, "Origin": "https://approvals.acme.example"})
    assert r.status_code == 200
    assert "max-age" in client.get("/healthz").headers["strict-transport-security"]
