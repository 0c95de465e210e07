"""Helpers for the policy-language tests (issue 14): small packs written to tmp_path, a Governor
with a real ApprovalStore on SQLite, and one-line steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fiveplane import Action, ApprovalStore, Decision, Governor

CHAIN = [{"kind": "user", "id": "u-1", "roles": ["clerk"]}, {"kind": "agent", "id": "assistant"}]


def write(tmp_path: Path, text: str, name: str = "pack.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def step(gov: Governor, point: str, tool: str | None = None, *, session: str = "s", chain: Any = None, **kw: Any) -> Decision:
    data: dict[str, Any] = {"point": point, "principal": chain or CHAIN, "session_id": session, **kw}
    if tool is not None:
        data["tool"] = tool
    return gov.decide(Action.model_validate(data))


@pytest.fixture
def store(tmp_path: Path) -> ApprovalStore:
    return ApprovalStore(f"sqlite:///{tmp_path / 'approvals.db'}")
