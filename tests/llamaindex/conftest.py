"""Fixtures for the LlamaIndex adapter: real llama-index-core objects, mock LLMs and embeddings,
no sockets, no network downloads (NLTK, tiktoken), an in-memory evidence sink."""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def _installed() -> bool:
    try:
        return importlib.util.find_spec("llama_index.tools.fiveplane") is not None
    except ImportError:  # no llama_index at all
        return False


if not _installed():  # pragma: no cover - partial environments
    if os.environ.get("CI"):
        raise ImportError("the LlamaIndex adapter is not installed: uv pip install -e integrations/llama-index-fiveplane")
    collect_ignore_glob = ["test_*.py"]
else:
    from llama_index.core.utils import get_tokenizer

    from fiveplane import ApprovalStore, BasePlane, Governor
    from tests.llamaindex._support import RAG_PACK, MemorySink, RedactPlane

    @pytest.fixture(autouse=True)
    def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
        """Any attempt to reach the network fails the test (loopback and unix sockets stay usable)."""

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"network access attempted: {args[:2]!r}")

        real_connect = socket.socket.connect

        def connect(self: socket.socket, address: Any) -> Any:
            if self.family == socket.AF_UNIX or (isinstance(address, tuple) and str(address[0]) in ("127.0.0.1", "::1")):
                return real_connect(self, address)
            raise AssertionError(f"network access attempted: {address!r}")

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket, "create_connection", refuse)
        monkeypatch.setattr(socket, "getaddrinfo", refuse)
        monkeypatch.delenv("NLTK_DATA", raising=False)
        monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)

    @pytest.fixture(scope="session", autouse=True)
    def _tokenizer() -> None:
        get_tokenizer()  # load LlamaIndex's bundled tiktoken file once, off any event loop

    @pytest.fixture
    def sink() -> MemorySink:
        return MemorySink()

    @pytest.fixture
    def db(tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'approvals.db'}"

    @pytest.fixture
    def make_governor(sink: MemorySink, db: str) -> Callable[..., Governor]:
        def build(*, planes: tuple[BasePlane, ...] = (), approvals: bool = True) -> Governor:
            return Governor(RAG_PACK, planes=planes, evidence=sink, approvals=ApprovalStore(db) if approvals else None)

        return build

    @pytest.fixture
    def governor(make_governor: Callable[..., Governor]) -> Governor:
        return make_governor(planes=(RedactPlane(),))
