"""A run paused for approval in one process is approved and resumed in another, and the tool runs once."""

from __future__ import annotations

from pathlib import Path

import pytest

from fiveplane import ApprovalStatus, ApprovalStore
from langchain_fiveplane import resume_approve
from tests.sessions._resume import run_langgraph, run_llamaindex

pytestmark = pytest.mark.slow


def test_langgraph_run_resumed_in_another_process(db_url: str, tmp_path: Path) -> None:
    checkpoints, out = str(tmp_path / "checkpoints.db"), str(tmp_path / "ran.txt")
    thread = f"t-{tmp_path.name}"
    paused = run_langgraph(db_url, checkpoints, out, thread, "start")
    store = ApprovalStore(db_url)
    assert store.get(paused["approval_id"]).status is ApprovalStatus.PENDING
    assert not Path(out).exists()  # nothing ran while paused
    answer = resume_approve("manager-1", ["sales-manager"], "customer confirmed", approval_id=paused["approval_id"])
    done = run_langgraph(db_url, checkpoints, out, thread, "resume", answer)
    assert done == {"answer": "C-7 is signed.", "paused": False}
    assert Path(out).read_text().splitlines() == ["update C-7 signed"]  # exactly once
    assert store.get(paused["approval_id"]).status is ApprovalStatus.CONSUMED


def test_llamaindex_workflow_resumed_in_another_process(db_url: str, tmp_path: Path) -> None:
    ctx_file, out = str(tmp_path / "ctx.json"), str(tmp_path / "ran.txt")
    paused = run_llamaindex(db_url, ctx_file, out, "start")
    store = ApprovalStore(db_url)
    assert store.get(paused["approval_id"]).status is ApprovalStatus.PENDING
    assert not Path(out).exists()
    done = run_llamaindex(db_url, ctx_file, out, "resume", paused)
    assert done == {"answer": "Refunded."}
    assert Path(out).read_text().splitlines() == ["refund 4411 40"]
    assert store.get(paused["approval_id"]).status is ApprovalStatus.CONSUMED
