"""Streaming redaction: bounded look-back, values split across chunks are caught, blocks stop the
stream with only clean text emitted, async twin runs off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fiveplane._planes._data import StreamBlocked

from .conftest import make_plane

pytestmark = pytest.mark.requires_model

ANSWER = (
    "Sure. The customer is reachable at jane.roe@globex.example or +1 415 555 0134, and the card on "
    "file is 4111 1111 1111 1111; the IBAN for refunds is DE89 3704 0044 0532 0130 00. "
    "Let me know if you need anything else from the account history for the renewal call."
)
SECRETS = ("jane.roe@globex.example", "415 555 0134", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00")
CONFIG = {
    "rules": [
        {
            "id": "answer",
            "match": {"points": ["final_output"]},
            "entities": {"EMAIL_ADDRESS": "redact", "PHONE_NUMBER": "redact", "CREDIT_CARD": "redact", "IBAN_CODE": "redact"},
        }
    ],
    "stream_window": 64,
}


@pytest.fixture(scope="module")
def plane() -> Any:
    return make_plane(CONFIG)


def stream(plane: Any, chunks: list[str], **kw: Any) -> tuple[str, int]:
    r = plane.stream_redactor(**kw)
    out, held = [], 0
    for c in chunks:
        out.append(r.feed(c))
        held = max(held, r.held)
    out.append(r.close())
    return "".join(out), held


def test_values_split_across_chunks_never_leave_in_clear(plane: Any) -> None:
    chunks = [ANSWER[i : i + 7] for i in range(0, len(ANSWER), 7)]
    out, held = stream(plane, chunks)
    for s in SECRETS:
        assert s not in out
    assert out.count("<EMAIL_ADDRESS>") == 1 and "<CREDIT_CARD>" in out and "<IBAN_CODE>" in out
    assert held < 2 * 64 + 7  # bounded look-back: never the whole answer
    assert out == plane.rewrite_text(ANSWER)  # same result as the non-streamed redaction


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=60))
def test_any_chunking_gives_the_same_clean_output(plane: Any, sizes: list[int]) -> None:
    chunks, i = [], 0
    for n in sizes:
        if i >= len(ANSWER):
            break
        chunks.append(ANSWER[i : i + n])
        i += n
    chunks.append(ANSWER[i:])
    out, _ = stream(plane, chunks)
    assert out == plane.rewrite_text(ANSWER)


def test_a_secret_stops_the_stream_after_clean_text_only(plane: Any) -> None:
    text = "Here is the deployment guide. " * 10 + "Use AKIAIOSFODNN7EXAMPLE as the access key. " + "More text. " * 10
    r = plane.stream_redactor()
    emitted = []
    with pytest.raises(StreamBlocked) as err:
        for i in range(0, len(text), 10):
            emitted.append(r.feed(text[i : i + 10]))
        emitted.append(r.close())
    assert "AKIA" not in "".join(emitted)
    assert err.value.rule_ids == ("data.builtin.secrets-outbound",)
    assert err.value.emitted == len("".join(emitted))


def test_denied_labels_stop_the_stream(tmp_path: Any) -> None:
    p = make_plane({"rules": [{"id": "no-conf", "match": {"points": ["final_output"]}, "deny_labels": ["CONFIDENTIAL"]}]})
    r = p.stream_redactor(labels=["confidential"])
    with pytest.raises(StreamBlocked, match="CONFIDENTIAL"):
        r.feed("hello")


def test_streams_follow_the_pack(data_policy: Any) -> None:
    p = make_plane()
    r = p.stream_redactor(policy=data_policy, point="final_output")  # type: ignore[arg-type]
    out = r.feed("SSN 536-90-4399 and card 4111 1111 1111 1111 ok") + r.close()
    assert out == "SSN <US_SSN> and card <CREDIT_CARD> ok"


async def test_async_stream(plane: Any) -> None:
    async def source() -> AsyncIterator[str]:
        for i in range(0, len(ANSWER), 5):
            await asyncio.sleep(0)
            yield ANSWER[i : i + 5]

    out = "".join([piece async for piece in plane.aredact_stream(source())])
    assert out == plane.rewrite_text(ANSWER)
