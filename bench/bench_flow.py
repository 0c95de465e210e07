"""Information-flow benchmark: ``flow_check_args``.

A session holds 50 prior untrusted results of ~1 KB each (web pages / CRM notes with addresses, URLs,
amounts); we time the check of one consequential action's arguments against that index.
"""

from __future__ import annotations

import random
import time
from typing import Any

from fiveplane._flow import FlowIndex

N = 20_000


def _doc(rng: random.Random, i: int) -> str:
    words = ["renewal", "pricing", "contract", "meeting", "quarter", "budget", "vendor", "support", "invoice", "team"]
    body = " ".join(rng.choice(words) for _ in range(120))
    return f"{body} contact person{i}@vendor{i}.example or visit https://vendor{i}.example/page; amount ${rng.randint(1000, 99999):,}.00 {body[:200]}"[
        :1024
    ]


def flow_check_args() -> dict[str, Any]:
    rng = random.Random(7)
    idx = FlowIndex()
    for i in range(50):
        idx.add(_doc(rng, i), trusted=False, action_id=f"a{i}", tool="web.fetch")
    idx.add("please email bob@acme.example", trusted=True, action_id="in", tool=None)
    args = {
        "to": "bob@acme.example",
        "subject": "Globex renewal",
        "body": "Hi Bob, the Globex renewal is confirmed for next quarter. Regards",
    }
    for _ in range(1000):
        idx.check(args)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(N):
        t = clock()
        idx.check(args)
        samples.append(clock() - t)
    samples.sort()
    hit = idx.check({"to": "person7@vendor7.example"})
    assert hit and hit[0].source.action_id == "a7"
    return {
        "checks": N,
        "sources": 50,
        "p50_us": round(samples[N // 2] / 1000, 2),
        "p99_us": round(samples[int(N * 0.99)] / 1000, 2),
    }


BENCHMARKS = {"flow_check_args": flow_check_args}
