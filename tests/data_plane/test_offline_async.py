"""Offline and non-blocking: no network at run time (sockets refused by the autouse fixture), no
model download ever, a visible regex-only fallback, one engine per process, and async calls that
never block the event loop (blockbuster)."""

from __future__ import annotations

import asyncio
import socket
import warnings
from typing import Any

import pytest
from blockbuster import blockbuster_ctx

from fiveplane import MediationPoint, Verdict

from .conftest import NetworkBlocked, act, build_governor, evaluate, make_plane


def test_sockets_really_are_refused() -> None:
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("publicsuffix.org", 443))


@pytest.mark.requires_model
def test_email_recognizer_never_fetches_the_suffix_list(sales_policy: Any) -> None:
    import tldextract

    before = tldextract.extract  # the module-level extractor would download on first use
    plane = make_plane({"rules": [{"id": "r", "entities": {"EMAIL_ADDRESS": "redact"}}]})
    r = evaluate(plane, act("final_output", content="mail a@b.co.uk, c@d.example, e@f.com, not g@h.nosuchtld"), sales_policy)
    assert r.modified_content == "mail <EMAIL_ADDRESS>, <EMAIL_ADDRESS>, <EMAIL_ADDRESS>, not g@h.nosuchtld"
    assert tldextract.extract is before


def test_no_model_means_regex_only_with_a_visible_warning(sales_policy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import spacy.cli

    monkeypatch.setattr(spacy.cli, "download", lambda *a, **k: pytest.fail("a model download was attempted"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plane = make_plane(
            {
                "nlp": {"model": "xx_not_installed_model", "fallback": []},
                "rules": [{"id": "r", "entities": {"PERSON": "redact", "EMAIL_ADDRESS": "redact"}}],
            }
        )
        r = evaluate(plane, act("final_output", content="Jane Roe wrote from jane.roe@globex.example today"), sales_policy)
    assert any("regex recognizers only" in str(w.message) for w in caught) or plane.compiled().engine.warning
    assert r.modified_content == "Jane Roe wrote from <EMAIL_ADDRESS> today"
    assert any(f.code == "ner_unavailable" for f in r.findings)


def test_no_model_with_on_missing_error_blocks(sales_policy: Any) -> None:
    from fiveplane._planes._base import PlaneResult

    plane = make_plane({"nlp": {"model": "xx_not_installed_model", "on_missing": "error"}})
    with pytest.raises(Exception, match="no spaCy model installed"):
        evaluate(plane, act("final_output", content="hi"), sales_policy)
    assert PlaneResult.error("data", RuntimeError("x")).findings[0].verdict is Verdict.BLOCK  # what the Governor makes of it


@pytest.mark.requires_model
def test_the_engine_is_built_once_per_process() -> None:
    a = make_plane().compiled().engine
    b = make_plane({"rules": [{"id": "other", "entities": {"PERSON": "redact"}}]}).compiled().engine
    assert a is b


@pytest.mark.requires_model
async def test_async_paths_do_not_block_the_event_loop() -> None:
    gov, plane = build_governor()
    await plane.awarm(gov.policy)  # loading the model is file I/O: off the loop, before the check
    note = "Call with Jane Roe (jane.roe@globex.example, +1 415 555 0134) went well; she confirmed the renewal."
    with blockbuster_ctx():
        decision = await gov.adecide(act(MediationPoint.TOOL_RESULT, "crm.get_account_notes", session="bb", content=note))
        assert decision.verdict is Verdict.MODIFY
        results = await asyncio.gather(
            *(
                gov.adecide(act(MediationPoint.FINAL_OUTPUT, session=f"bb{i}", content=f"answer {i}: card 4111 1111 1111 1111"))
                for i in range(4)
            )
        )
        assert all("<CREDIT_CARD>" in str(d.modified_content) for d in results)

        async def chunks() -> Any:
            for part in ("card 4111 11", "11 1111 1", "111 now"):
                yield part

        out = "".join([p async for p in plane.aredact_stream(chunks(), policy=gov.policy)])
        assert out == "card <CREDIT_CARD> now"


@pytest.mark.requires_model
async def test_presidio_runs_in_worker_threads_not_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU-bound scanning is invisible to blockbuster: check the thread it runs on instead."""
    import threading

    gov, plane = build_governor()
    await plane.awarm(gov.policy)
    cc = plane.compiled(gov._configs["data"])
    loop_thread = threading.get_ident()
    threads: list[int] = []
    real = cc.engine.analyze

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(cc.engine, "analyze", spy)
    await gov.adecide(act(MediationPoint.FINAL_OUTPUT, session="thr", content="card 4111 1111 1111 1111 for a fresh text"))

    async def chunks() -> Any:
        yield "a new text with card 4111 1111 1111 1112 inside"

    _ = [p async for p in plane.aredact_stream(chunks(), policy=gov.policy)]
    assert threads and loop_thread not in threads


async def test_blockbuster_is_armed() -> None:
    """The check above is real: a blocking call on the loop is caught."""
    import time

    from blockbuster import BlockingError

    def blocking_call() -> None:
        time.sleep(0.001)

    with blockbuster_ctx(), pytest.raises(BlockingError):
        blocking_call()
