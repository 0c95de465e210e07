"""``fiveplane console`` refuses to start without what it needs; the demos print the console link when they pause."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from fiveplane import ApprovalStore, Governor
from fiveplane._cli import app
from fiveplane._ledger import generate_signing_key, load_signing_key, open_ledger
from tests.console.conftest import AGENT_PACK, World, approval_id, write_console_pack

runner = CliRunner()


def _ledger(tmp_path: Path) -> tuple[str, Path]:
    key = tmp_path / "l.key"
    generate_signing_key(key, "cli.fiveplane.local/console")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url, key=load_signing_key(key), checkpoint_interval=None).close()
    return url, key


def test_refuses_a_pack_without_a_way_to_sign_in(tmp_path: Path) -> None:
    url, _ = _ledger(tmp_path)
    out = runner.invoke(app, ["console", "--policy", str(AGENT_PACK), "--db", f"sqlite:///{tmp_path / 's.db'}", "--ledger", url])
    assert out.exit_code == 2 and "configures no planes.identity.oidc" in out.output and "--dev-user" in out.output


def test_dev_flags_go_together(tmp_path: Path) -> None:
    base = ["console", "--policy", str(AGENT_PACK), "--db", f"sqlite:///{tmp_path / 's.db'}"]
    out = runner.invoke(app, [*base, "--dev-roles", "sales-manager"])
    assert out.exit_code == 2 and "only applies with --dev-user" in out.output
    out = runner.invoke(app, [*base, "--dev-user", "demo"])
    assert out.exit_code == 2 and "needs --dev-roles" in out.output


def test_refuses_to_start_without_its_ledger(tmp_path: Path) -> None:
    out = runner.invoke(
        app,
        [
            "console", "--policy", str(AGENT_PACK), "--db", f"sqlite:///{tmp_path / 's.db'}",
            "--ledger", f"sqlite:///{tmp_path / 'empty.db'}", "--dev-user", "d", "--dev-roles", "sales-manager",
        ],
    )  # fmt: skip
    assert (
        out.exit_code == 2
        and "cannot open the evidence ledger" in out.output
        and "every decision is recorded there" in out.output
    )


def test_reports_a_bad_pack_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nunsafe_empty: true\napprovals:\n  console_url: not-a-url\n")
    out = runner.invoke(app, ["console", "--policy", str(bad)])
    assert out.exit_code == 2 and "bad.yaml:4" in out.output


def test_notifications_the_pack_asks_for_need_their_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.console.conftest import Idp

    Idp(tmp_path)
    pack = write_console_pack(tmp_path, approvals="approvals:\n  notify:\n    slack: {}\n")
    monkeypatch.delenv("FIVEPLANE_SLACK_WEBHOOK_URL", raising=False)
    url, _ = _ledger(tmp_path)
    out = runner.invoke(app, ["console", "--policy", str(pack), "--db", f"sqlite:///{tmp_path / 's.db'}", "--ledger", url])
    assert out.exit_code == 2 and "$FIVEPLANE_SLACK_WEBHOOK_URL is not set" in out.output


def test_dev_mode_serves_with_a_loud_warning(tmp_path: Path) -> None:
    url, _key = _ledger(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable, "-c", "from fiveplane._cli import main; main()", "console", "--policy", str(AGENT_PACK),
            "--db", f"sqlite:///{tmp_path / 's.db'}", "--ledger", url, "--port", str(port),
            "--dev-user", "demo-manager", "--dev-roles", "sales-manager",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        page = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/queue", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert page is not None and page.status_code == 200, proc.stderr.read1().decode() if proc.stderr else ""  # type: ignore[union-attr]
        assert "DEV MODE" in page.text and "demo-manager" in page.text
        assert page.headers["x-frame-options"] == "DENY"
        # a request that names another host (DNS rebinding) is refused
        assert httpx.get(f"http://127.0.0.1:{port}/queue", headers={"Host": "attacker.example"}).status_code == 400
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert "DEV MODE: nobody is authenticated" in err.decode() and "decides as demo-manager" in err.decode()
    assert f"http://127.0.0.1:{port}/queue" in out.decode()


# ---- the demos -------------------------------------------------------------------------------------


def test_core_demo_prints_the_console_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIVEPLANE_CONSOLE_URL", "https://approvals.acme.example/")
    out = runner.invoke(app, ["demo", "--framework", "core", "--dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "decide it in the console: https://approvals.acme.example/requests/apr-" in out.output
    out = runner.invoke(app, ["demo", "--framework", "core", "--json", "--dir", str(tmp_path)])
    steps = [json.loads(x) for x in out.stdout.splitlines()]
    links = [s["console_url"] for s in steps if s["console_url"]]
    assert len(links) == 1 and links[0].startswith("https://approvals.acme.example/requests/apr-")


def test_langchain_demo_prints_the_console_link_when_it_pauses(world: World) -> None:
    pytest.importorskip("langchain_fiveplane")
    from langchain_fiveplane import run_langchain_demo
    from langchain_fiveplane._demo import DemoRedactionPlane
    from tests.conftest import SALES_PACK

    gov = Governor(SALES_PACK, approvals=ApprovalStore(world.db), planes=[DemoRedactionPlane()])
    result = run_langchain_demo(gov)
    paused = next(e for e in result.events if e.kind == "approval" and e.title.startswith("paused"))
    rid = paused.detail["approval_id"]
    assert paused.detail["console_url"] == f"http://127.0.0.1:8765/requests/{rid}"
    assert f"decide it in the console: http://127.0.0.1:8765/requests/{rid}" in paused.explanation


def test_llamaindex_demo_prints_the_console_link_when_it_pauses() -> None:
    pytest.importorskip("llama_index.tools.fiveplane")
    from llama_index.tools.fiveplane import build_demo_governor, run_demo

    result = run_demo(build_demo_governor())
    note = next(s for s in result.steps if s.kind == "note" and s.title.startswith("approval requested (apr-"))
    rid = note.title.removeprefix("approval requested (").removesuffix(")")
    assert f"decide it in the console: http://127.0.0.1:8765/requests/{rid}" in note.explanation


def test_the_link_carries_the_request_id_only(world: World) -> None:
    from fiveplane import console_url

    rid = approval_id(world.contract())
    link = console_url(rid, base="https://approvals.acme.example")
    assert link == f"https://approvals.acme.example/requests/{rid}"
    assert console_url(None, base="http://x:1/") == "http://x:1/queue"


def test_without_the_console_extra_the_command_says_how_to_install_it(tmp_path: Path) -> None:
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('starlette', 'jinja2', 'uvicorn', 'multipart'):\n"
        "            raise ImportError(f'blocked for this test: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import fiveplane\n"
        "assert fiveplane.console_url('apr-1').endswith('/requests/apr-1')\n"
        "from fiveplane._cli import main\n"
        "sys.argv = ['fiveplane', 'console', '--policy', sys.argv[1]]\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(AGENT_PACK)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "pip install 'fiveplane[console]'" in out.stderr
