"""Fixtures for the identity plane: keys, stores on a throw-away database, principals, governors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from biscuit_auth import KeyPair

from fiveplane import Governor, Principal, PrincipalKind
from fiveplane._identity import GrantStore, MemoryRevocationStore, SqlRevocationStore, TokenService
from fiveplane._planes._identity import IdentityPlane

PACKS = Path(__file__).resolve().parent / "packs"
SALES_IDENTITY = PACKS / "sales-identity.yaml"
DELEGATION = PACKS / "delegation.yaml"

REP = Principal(kind=PrincipalKind.USER, id="rep-1", roles=("sales-rep",), claims={"email": "rep-1@acme.example"})
AGENT = Principal(kind=PrincipalKind.AGENT, id="sales-assistant")


class Clock:
    """A settable UTC clock."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self.now = self.now + timedelta(seconds=seconds)


class Events(list[tuple[str, dict[str, Any]]]):
    """A recorder that keeps (kind, payload) in order."""

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        self.append((kind, payload))

    def kinds(self) -> list[str]:
        return [k for k, _ in self]


@pytest.fixture(scope="session")
def root() -> KeyPair:
    return KeyPair()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fiveplane.db'}"


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(db: str, events: Events) -> GrantStore:
    return GrantStore(db, record=events, refresh_seconds=0)


@pytest.fixture
def service(root: KeyPair, clock: Clock, events: Events) -> TokenService:
    return TokenService(root, revocations=MemoryRevocationStore(clock=clock), record=events, clock=clock)


@pytest.fixture
def sql_service(root: KeyPair, db: str, events: Events) -> TokenService:
    return TokenService(root, revocations=SqlRevocationStore(db), record=events)


@pytest.fixture
def make_governor(db: str, root: KeyPair, events: Events) -> Iterator[Callable[..., tuple[Governor, IdentityPlane]]]:
    def make(pack: Path = SALES_IDENTITY, **kwargs: Any) -> tuple[Governor, IdentityPlane]:
        plane_kwargs = {"database": db, "root_key": root, "record": events}
        plane_kwargs.update(kwargs.pop("plane", {}))
        plane = IdentityPlane(**plane_kwargs)
        return Governor(pack, planes=[plane, *kwargs.pop("extra_planes", [])], **kwargs), plane

    yield make
