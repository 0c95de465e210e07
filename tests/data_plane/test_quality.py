"""Detection quality on a labelled corpus (presidio-evaluator's PresidioSentenceFaker, seed 42,
1,200 sentences): our configuration's recall is never below a bare AnalyzerEngine's on the same
model for e-mail, phone, credit card, IBAN, US SSN, IP address and person."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = [
    pytest.mark.requires_model,
    pytest.mark.skipif(importlib.util.find_spec("presidio_evaluator") is None, reason="presidio-evaluator is not installed"),
]


def test_recall_not_below_a_bare_engine() -> None:
    from bench.bench_data import ASSERTED, QUALITY_SENTENCES, quality_report

    report = quality_report()
    assert report["sentences"] == QUALITY_SENTENCES >= 1000
    lines = []
    for entity in ASSERTED:
        ours, bare = report["ours"][entity], report["bare"][entity]
        lines.append(
            f"{entity:14} n={ours['support']:4} ours P/R/F2 {ours['precision']}/{ours['recall']}/{ours['f2']}  bare {bare['precision']}/{bare['recall']}/{bare['f2']}"
        )
        assert ours["support"] >= 30, f"too few {entity} in the corpus to measure"
        assert ours["recall"] >= bare["recall"], "\n".join(lines)
    print("\n".join(lines))
