"""End to end in a real headless Chromium: paused LangChain agents, the console in its own process, people deciding.

Two real ``create_agent`` agents (the demo's scripted model and tools, the sales-support pack with its
identity and data planes) run in threads in ``approval_mode="wait"``; each pauses on the contract
change. ``fiveplane console`` serves the same SQLite files from a subprocess. Chromium, driven by
Selenium through Debian's chromedriver, signs in with real OIDC tokens: manager-1 denies one request
with a reason (the agent gets it back, the tool never runs), rep-1 — the requester, who holds the
manager role too — is refused by separation of duties, manager-2 approves the other (the agent resumes
and the tool runs once). Requests without a session or without the CSRF token are refused.
Screenshots go to ``.artifacts/console/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fiveplane import ApprovalStatus, ApprovalStore
from fiveplane._ledger import generate_signing_key, load_signing_key, open_ledger
from tests.conftest import ROOT, SALES_PACK
from tests.console.conftest import Idp, Receiver, write_console_pack

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = ROOT / ".artifacts" / "console"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        (CHROMIUM is None or CHROMEDRIVER is None) and not os.environ.get("CI"),
        reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver); runs under CI",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentRun(threading.Thread):
    """One real LangChain agent of the demo, pausing in wait mode until a person decides."""

    def __init__(self, governor: Any, session: str) -> None:
        super().__init__(daemon=True, name=f"agent-{session}")
        self.governor = governor
        self.session = session
        self.executed: list[str] = []
        self.messages: list[Any] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        from langchain.agents import create_agent
        from langchain_core.messages import HumanMessage
        from langgraph.checkpoint.memory import InMemorySaver

        from langchain_fiveplane import FiveplaneMiddleware, run_config
        from langchain_fiveplane._demo import DEMO_INTENT, DEMO_TOOL_MAP, SYSTEM_PROMPT, demo_model, demo_tools

        try:
            middleware = FiveplaneMiddleware(
                self.governor,
                agent="sales-assistant",
                purpose="sales-support",
                tool_map=DEMO_TOOL_MAP,
                approval_mode="wait",
                approval_timeout=150,
            )
            agent = create_agent(
                demo_model(),
                demo_tools(self.executed),
                system_prompt=SYSTEM_PROMPT,
                middleware=[middleware],
                checkpointer=InMemorySaver(),
            )
            config = run_config(
                user="rep-1", roles=["sales-rep"], purpose="sales-support", thread_id=self.session, session_id=self.session
            )
            result = agent.invoke({"messages": [HumanMessage(DEMO_INTENT)]}, config)
            self.messages = list(result["messages"])
        except BaseException as exc:
            self.error = exc

    def tool_message(self, name: str) -> str:
        from langchain_core.messages import ToolMessage

        return next(str(m.content) for m in self.messages if isinstance(m, ToolMessage) and m.name == name)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM or "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--window-size=1440,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER or "/usr/bin/chromedriver"), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_paused_agents_are_decided_in_the_browser(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from langchain_fiveplane._demo import build_demo_governor

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    idp = Idp(tmp_path)
    pack = write_console_pack(tmp_path, SALES_PACK, approvals="approvals:\n  deny_reasons: [Not signed by the customer yet]\n")
    key = tmp_path / "ledger.key"
    generate_signing_key(key, "e2e.fiveplane.local/console")
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    db = f"sqlite:///{tmp_path / 'state.db'}"
    ledger = open_ledger(ledger_url, key=load_signing_key(key), checkpoint_interval=None)
    receiver = Receiver().start()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    console = None
    runs: list[AgentRun] = []
    try:
        gov, _ = build_demo_governor(pack, db, evidence=ledger, record=ledger.record)
        runs = [AgentRun(gov, "e2e-a"), AgentRun(gov, "e2e-b")]
        for r in runs:
            r.start()
        store = ApprovalStore(db)
        pending = _wait(
            lambda: len(store.requests(status=ApprovalStatus.PENDING)) == 2 and store.requests(status=ApprovalStatus.PENDING),
            120,
            "both agents to pause",
        )
        by_session = {r.session_id: r for r in pending}
        req_a, req_b = by_session["e2e-a"], by_session["e2e-b"]
        assert req_a.tool == req_b.tool == "contracts.update_status"
        ledger.flush()

        log = open(tmp_path / "console.log", "wb")  # noqa: SIM115 - closed with the process
        console = subprocess.Popen(
            [
                sys.executable, "-c", "from fiveplane._cli import main; main()", "console",
                "--policy", str(pack), "--db", db, "--ledger", ledger_url, "--ledger-key", str(key),
                "--port", str(port), "--notify-webhook", receiver.url + "/hook", "--sweep-interval", "0.5",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )  # fmt: skip
        _wait(lambda: _healthy(base) or console.poll() is not None, 60, "the console to listen")
        assert console.poll() is None, (tmp_path / "console.log").read_text()

        def sign_in(sub: str, groups: tuple[str, ...]) -> None:
            browser.get(base + "/queue")
            assert browser.current_url.startswith(base + "/login"), browser.current_url
            browser.find_element(By.ID, "token").send_keys(idp.token(sub, groups))
            browser.find_element(By.CSS_SELECTOR, "[data-testid=login]").click()
            _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "[data-testid=me]"), 10, "the signed-in page")
            assert browser.find_element(By.CSS_SELECTOR, "[data-testid=me]").text == sub

        def sign_out() -> None:
            browser.find_element(By.CSS_SELECTOR, "[data-testid=logout]").click()
            _wait(lambda: "/login" in browser.current_url, 10, "the sign-in page")

        # --- unauthenticated: the browser lands on the sign-in form; a script is refused
        browser.get(base + f"/requests/{req_a.id}")
        assert "/login" in browser.current_url
        assert httpx.post(f"{base}/requests/{req_b.id}/approve", data={"csrf": "x"}).status_code == 401

        # --- manager-1: the queue, the request, a denial with a reason
        sign_in("manager-1", ("managers",))
        rows = browser.find_elements(By.CSS_SELECTOR, "[data-testid=row]")
        assert {r.get_attribute("data-request-id") for r in rows} == {req_a.id, req_b.id}
        assert browser.find_element(By.CSS_SELECTOR, "[data-testid=pending-count]").text == "2"
        browser.save_screenshot(str(ARTIFACTS / "queue.png"))
        browser.find_element(By.CSS_SELECTOR, f"[data-request-id={req_a.id}] [data-testid=open]").click()
        _wait(lambda: req_a.id in browser.current_url, 10, "the request page")
        page = browser.page_source
        assert "contracts.update-needs-manager" in page and "rep-1" in page and "sales-assistant" in page
        assert '"contract_id": "C-7"' in browser.find_element(By.CSS_SELECTOR, "[data-testid=arguments]").text
        browser.set_window_size(1440, 2200)  # the whole request page in one picture
        browser.save_screenshot(str(ARTIFACTS / "request.png"))
        browser.set_window_size(1440, 1000)
        deny = browser.find_element(By.CSS_SELECTOR, f"form[action='/requests/{req_a.id}/deny']")
        Select(deny.find_element(By.NAME, "reason_preset")).select_by_visible_text("Not signed by the customer yet")
        deny.find_element(By.NAME, "reason_text").send_keys("call Globex first")
        deny.find_element(By.CSS_SELECTOR, "[data-testid=deny]").click()
        _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "[data-testid=flash]"), 10, "the denial's confirmation")
        assert f"denied {req_a.id}" in browser.find_element(By.CSS_SELECTOR, "[data-testid=flash]").text
        assert (
            browser.find_element(By.CSS_SELECTOR, "[data-testid=reason]").text
            == "Not signed by the customer yet: call Globex first"
        )

        # --- CSRF: the session cookie alone does not decide; nor does a page of another origin
        cookie = {"fiveplane_console": browser.get_cookie("fiveplane_console")["value"]}
        with httpx.Client(base_url=base, cookies=cookie) as raw:
            assert raw.post(f"/requests/{req_b.id}/approve", data={}).status_code == 403
            csrf = browser.find_element(By.NAME, "csrf").get_attribute("value")
            assert (
                raw.post(
                    f"/requests/{req_b.id}/approve", data={"csrf": csrf}, headers={"Origin": "https://evil.example"}
                ).status_code
                == 403
            )
        status = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"fetch('/requests/{req_b.id}/approve', {{method: 'POST', body: new URLSearchParams({{reason_text: 'no token'}})}})"
            ".then(r => done(r.status)).catch(e => done(String(e)));"
        )
        assert status == 403
        assert store.get(req_b.id).status is ApprovalStatus.PENDING
        sign_out()

        # --- rep-1 asked for it: holding the manager role does not let her approve it
        sign_in("rep-1", ("reps", "managers"))
        browser.get(f"{base}/requests/{req_b.id}")
        assert browser.find_elements(By.CSS_SELECTOR, "[data-testid=sod-notice]")
        browser.find_element(By.CSS_SELECTOR, "[data-testid=approve]").click()
        _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "[data-testid=error]"), 10, "the refusal")
        assert "separation of duties" in browser.find_element(By.CSS_SELECTOR, "[data-testid=error]").text
        browser.save_screenshot(str(ARTIFACTS / "refused.png"))
        assert store.get(req_b.id).status is ApprovalStatus.PENDING
        sign_out()

        # --- manager-2 approves the other one
        sign_in("manager-2", ("managers",))
        browser.get(f"{base}/requests/{req_b.id}")
        approve = browser.find_element(By.CSS_SELECTOR, f"form[action='/requests/{req_b.id}/approve']")
        approve.find_element(By.NAME, "reason_text").send_keys("renewal confirmed by phone")
        approve.find_element(By.CSS_SELECTOR, "[data-testid=approve]").click()
        _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "[data-testid=flash]"), 10, "the approval's confirmation")
        assert f"approved {req_b.id}" in browser.find_element(By.CSS_SELECTOR, "[data-testid=flash]").text

        # --- the agents resume: the denied change never runs, the approved one runs once
        for r in runs:
            r.join(timeout=90)
            assert not r.is_alive(), f"{r.name} did not finish"
            assert r.error is None, r.error
        a, b = runs
        assert not any(c.startswith("contracts_update_status") for c in a.executed)
        assert "Not signed by the customer yet: call Globex first" in a.tool_message("contracts_update_status")
        assert [c for c in b.executed if c.startswith("contracts_update_status")] == [
            "contracts_update_status(contract_id='C-7', status='signed')"
        ]
        assert store.get(req_b.id).status is ApprovalStatus.CONSUMED

        # --- the evidence: the queue is empty, the history and the ledger hold both decisions
        browser.get(base + "/queue")
        assert browser.find_elements(By.CSS_SELECTOR, "[data-testid=empty]")
        browser.get(f"{base}/history")
        assert {
            e.get_attribute("data-request-id") for e in browser.find_elements(By.CSS_SELECTOR, "[data-testid=history-row]")
        } == {req_a.id, req_b.id}
        browser.save_screenshot(str(ARTIFACTS / "history.png"))
        browser.get(f"{base}/evidence?refresh=1")
        assert browser.find_element(By.CSS_SELECTOR, "[data-testid=verify]").text.lower() == "verified"
        browser.get(f"{base}/evidence/sessions/e2e-b")
        browser.save_screenshot(str(ARTIFACTS / "session.png"))
        ledger.flush()
        decided = {
            r.kind: r.payload
            for aid in (req_a.action_id, req_b.action_id)
            for r in ledger.records(aid)
            if r.kind in ("approval.denied", "approval.approved")
        }
        assert decided["approval.denied"]["approver"]["id"] == "manager-1"
        assert decided["approval.approved"]["approver"] == {
            "id": "manager-2",
            "roles": ["sales-manager"],
            "verified_by": "oidc",
            "issuer": "https://idp.acme.example/",
            "credential": "session",
            "via": "console",
        }
        # both requests were announced, by id and link only
        _wait(lambda: len(receiver.posts) >= 2, 10, "the webhook notifications")
        sent = [p.body.decode() for p in receiver.posts]
        assert {req_a.id, req_b.id} <= {rid for body in sent for rid in (req_a.id, req_b.id) if rid in body}
        assert not any("C-7" in body for body in sent)
    finally:
        if console is not None:
            console.terminate()
            try:
                console.wait(timeout=10)
            except subprocess.TimeoutExpired:
                console.kill()
        for r in runs:
            r.join(timeout=5)
        receiver.stop()
        ledger.close()


def _healthy(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
