"""The LlamaIndex demo end to end: filtered and redacted nodes, blocked tools, the approval round
trip, evidence of every step, the CLI output, and a fresh offline interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from llama_index.tools.fiveplane import DemoResult, arun_demo, build_demo_governor, run_demo, run_demo_cli
from llama_index.tools.fiveplane._demo import load_demo_documents

from fiveplane import OutcomeStatus
from tests.conftest import ROOT
from tests.llamaindex._support import LLAMA_INDEX_WARNINGS, MemorySink, RedactPlane, run_async

pytestmark = LLAMA_INDEX_WARNINGS

EXPECTED = [
    ("rag", "user request", "allow"),
    ("rag", "kb.search(query='Does ticket 4411 qualify for a refund?')", "allow"),  # the query, decided first
    ("rag", "retrieve board-minutes-q3.txt", "block"),
    ("rag", "retrieve refund-policy.txt", "allow"),
    ("rag", "retrieve ticket-4411.txt", "modify"),
    ("rag", "retrieve vendor-faq.txt", "modify"),
    ("agent", "kb.search(input='ticket 4411 refund kettle')", "allow"),
    ("agent", "retrieve board-minutes-q3.txt", "block"),
    ("agent", "retrieve refund-policy.txt", "allow"),
    ("agent", "retrieve ticket-4411.txt", "modify"),
    ("agent", "retrieve vendor-faq.txt", "modify"),
    ("agent", "kb.search result", "allow"),
    ("agent", "refunds.issue(ticket_id='9999', amount=4000)", "block"),
    ("agent", "email.send(to='<EMAIL_ADDRESS>', subject='Customer list')", "block"),
    ("agent", "refunds.issue(ticket_id='4411', amount=40)", "require_approval"),
    ("agent", "refunds.issue(ticket_id='4411', amount=40)", "allow"),
    ("agent", "refunds.issue result", "allow"),
    ("agent", "email.send(to='lead-2@acme.example', subject='Ticket 4411')", "allow"),
    ("agent", "email.send result", "modify"),
    ("agent", "final answer", "allow"),
]


@pytest.fixture
def demo(sink: MemorySink) -> DemoResult:
    governor = build_demo_governor(evidence=sink)  # loads the pack and opens the store: not on the loop
    return run_async(lambda: arun_demo(governor))


def test_timeline(demo: DemoResult) -> None:
    decisions = [(s.phase, s.title, s.verdict) for s in demo.steps if s.kind == "decision"]
    assert decisions == EXPECTED
    by_title = {s.title: s for s in demo.steps}
    assert by_title["retrieve board-minutes-q3.txt"].rule_ids == ("retrieval.confidential-finance-only",)
    assert by_title["refunds.issue(ticket_id='9999', amount=4000)"].rule_ids == ("refunds.cap",)
    notes = [s.title for s in demo.steps if s.kind == "note"]
    assert notes[0] == "the LLM's context"
    assert any(n.startswith("approval requested (apr-") for n in notes)
    assert any(n.startswith("lead-2 approves apr-") for n in notes)
    assert [s.number for s in demo.steps] == list(range(1, len(demo.steps) + 1))


def test_only_what_the_policy_allows_ran(demo: DemoResult) -> None:
    assert demo.executed == [
        ("issue_refund", {"ticket_id": "4411", "amount": 40}),
        ("send_email", {"to": "lead-2@acme.example", "subject": "Ticket 4411"}),
    ]
    assert demo.agent_answer.startswith("Ticket 4411 qualifies. The refund of 40 USD was approved")


def test_the_llm_never_saw_pii_or_the_confidential_document(demo: DemoResult) -> None:
    seen = "\n".join(demo.rag_prompts)
    assert "Acme refund policy" in seen and "Ticket 4411. Customer Jane Roe (<EMAIL_ADDRESS>, <PHONE_NUMBER>)" in seen
    for secret in ("jane.roe@example.com", "415 555 0134", "acquisition", "Board minutes", "audit@evil.example"):
        assert secret not in seen
    context = next(s for s in demo.steps if s.title == "the LLM's context").explanation
    assert (
        context
        == "board-minutes-q3.txt withheld; refund-policy.txt (verbatim); ticket-4411.txt (redacted); vendor-faq.txt (redacted)"
    )


def test_evidence_of_every_step(demo: DemoResult, sink: MemorySink) -> None:
    joined = {p["action_id"]: p for k, p in demo.evidence if k == "llamaindex.decision"}
    assert [a.action_id for a, _ in sink.decisions] == list(joined)
    for action, decision in sink.decisions:
        assert joined[action.action_id]["verdict"] == decision.verdict.value
        if action.point.value == "tool_call":
            status = sink.outcome_of(action.action_id)
            expected = {
                "allow": OutcomeStatus.SUCCESS,
                "block": OutcomeStatus.BLOCKED,
                "require_approval": OutcomeStatus.APPROVAL_PENDING,
            }[decision.verdict.value]
            assert status is expected, (action.tool, decision.verdict)
    spans = {p["span_id"] for k, p in demo.evidence if k == "llamaindex.span"}
    assert all(p["span_id"] in spans for p in joined.values() if p.get("span_id"))
    assert {k for k, _ in demo.evidence} == {"llamaindex.decision", "llamaindex.llm", "llamaindex.retrieval", "llamaindex.span"}
    assert "jane.roe" not in json.dumps([a.to_json() for a, _ in sink.decisions])  # evidence is redacted too


def test_sync_entry_point_and_other_planes(sink: MemorySink) -> None:
    """run_demo (sync) with a plane passed in place of the demo's stand-in redactor."""
    result = run_demo(build_demo_governor(planes=[RedactPlane(secrets=("jane.roe@example.com",))], evidence=sink))
    seen = "\n".join(result.rag_prompts)
    assert "jane.roe@example.com" not in seen and "+1 415 555 0134" in seen  # only what that plane redacts
    assert [name for name, _ in result.executed] == ["issue_refund", "send_email"]


def test_documents_ship_with_the_package() -> None:
    docs = load_demo_documents()
    assert [d.metadata["file_name"] for d in docs] == [
        "board-minutes-q3.txt",
        "refund-policy.txt",
        "ticket-4411.txt",
        "vendor-faq.txt",
    ]
    assert docs[0].metadata["labels"] == ["CONFIDENTIAL"]


def test_cli_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo_cli(json_out=True) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["phase"], x["title"], x["verdict"]) for x in lines if x["kind"] == "decision"] == EXPECTED
    assert run_demo_cli() == 0
    text = capsys.readouterr().out
    assert "phase 2: FunctionAgent with governed tools" in text and "tools that ran: issue_refund" in text
    assert run_demo_cli(Path("no/such/pack.yaml")) == 2


def test_runs_offline_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """No socket may be opened from interpreter start (imports: NLTK, tiktoken) to the end of the demo."""
    code = textwrap.dedent(
        """
        import socket, sys
        real_connect = socket.socket.connect
        def connect(self, address):
            if self.family == socket.AF_UNIX:
                return real_connect(self, address)
            raise OSError(f"network access attempted: {address!r}")
        def refuse(*args, **kwargs):
            raise OSError(f"network access attempted: {args[:2]!r}")
        socket.socket.connect = connect
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from llama_index.tools.fiveplane._cli import run_demo_cli
        sys.exit(run_demo_cli(json_out=True))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NLTK_DATA", "TIKTOKEN_CACHE_DIR")}
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "network access attempted" not in out.stderr
    steps = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(x["phase"], x["title"], x["verdict"]) for x in steps if x["kind"] == "decision"] == EXPECTED
    assert not (tmp_path / "cache").exists() and list(tmp_path.iterdir()) == []  # no downloads, no caches


def test_the_network_guard_is_on() -> None:
    import socket

    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("example.com", 443), timeout=1)
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("93.184.215.14", 443))
