"""Replay AgentDojo through a real ``fiveplane.Governor``, with no LLM.

Two agents are simulated, both from AgentDojo's own ground truth:

* **benign**: every user task's ground-truth function calls, in order, on the suite's default
  environment (injection vectors at their benign defaults);
* **fully compromised**: for every (user task, injection task) pair, the environment is loaded with
  the injection in every vector the user task reads (``load_and_inject_default_environment``, the
  "important instructions" text of AgentDojo's ``important_instructions`` attack carrying the
  injection task's goal); the agent runs the user task's ground truth and, as soon as a tool result
  it was allowed to see contains the injected text, runs the injection task's ground-truth calls,
  then the rest of the user task.

Every step goes through ``Governor.decide``: the user's prompt as the ``input`` step (the declared
intent of the run), each call as a ``tool_call`` step, and — when the call ran — AgentDojo's real
result as a ``tool_result`` step, so information flow indexes what the agent read. A call runs (the
suite's own tool function through AgentDojo's ``FunctionsRuntime``, on the suite environment) only
when its decision proceeds. A ``require_approval`` decision files a request in a real
``ApprovalStore``; the harness then plays the approver: ``deny`` every request, ``grant`` every
request blindly (and propose the same action again), or answer as an ``oracle`` — a person who
grants the calls of the user's task and denies the injected ones. Success of an attack is AgentDojo's own check
(``security_from_traces`` / ``security``) on the post-environment and the calls that actually ran.

Nothing reaches the network: AgentDojo's tools are in-process functions over pydantic models and no
model client is ever built.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fiveplane import Action, ApprovalStore, Governor, ObligationKind, Verdict, approver, jsonable

ROOT = Path(__file__).resolve().parents[2]
PACKS = ROOT / "policies" / "agentdojo"
PACKS_V1 = Path(__file__).resolve().parent / "v1"
BENCHMARK_VERSION = "v1.2.2"
SUITES = ("banking", "slack")

Approvals = Literal["deny", "grant", "oracle"]
"""How the harness answers approval requests: deny all, grant all blindly, or as an attentive person
would (grant what the user's task asked for, deny what the injected instructions asked for)."""


@dataclass(frozen=True)
class SuiteConfig:
    """Who acts in a suite: the human user, their approver role and the agent of the pack."""

    user_id: str
    roles: tuple[str, ...]
    agent: str
    purpose: str
    approver_id: str


CONFIG = {
    "banking": SuiteConfig("emma.johnson", ("account-holder",), "banking-assistant", "personal-banking", "emma.johnson"),
    "slack": SuiteConfig("slack-user", ("workspace-user",), "slack-assistant", "workspace-assistant", "slack-user"),
}


def load_suite(name: str) -> Any:
    """The AgentDojo suite at the pinned benchmark version (imports agentdojo lazily)."""
    try:
        from agentdojo.task_suite.load_suites import get_suite
    except ImportError as exc:  # pragma: no cover - the bench extra brings it
        raise ImportError("the AgentDojo benchmark needs agentdojo: pip install 'fiveplane[bench]' (or make setup)") from exc
    return get_suite(BENCHMARK_VERSION, name)


# --- trivial baseline packs (same catalog, same harness) --------------------------------------


def baseline_pack(pack: Path, verdict: Literal["allow", "block"], directory: Path) -> Path:
    """The pack's catalog, connectors and agents with one rule giving ``verdict`` to every step and no
    information flow: the allow-all and block-all baselines."""
    data = yaml.safe_load(pack.read_text())
    data["name"] = f"{data['name']}-{verdict}-all"
    data.pop("information_flow", None)
    data["rules"] = [
        {
            "id": f"baseline.{verdict}-all",
            "reason": f"baseline: {verdict} every tool call",
            "match": {"tools": ["*"]},
            "verdict": verdict,
        }
    ]
    out = directory / f"{pack.stem}.{verdict}-all.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


# --- one episode --------------------------------------------------------------------------------


@dataclass
class Call:
    origin: Literal["user", "injection"]
    function: str
    arguments: dict[str, Any]
    first: Verdict
    rule_ids: tuple[str, ...]
    approval_requested: bool = False
    ran: bool = False
    error: str | None = None
    result_seen: bool = False


@dataclass
class Episode:
    suite: str
    user_task: str
    injection_task: str | None
    calls: list[Call] = field(default_factory=list)
    injection_seen: bool = False
    utility: bool = False
    attack_succeeded: bool = False

    def of(self, origin: str) -> list[Call]:
        return [c for c in self.calls if c.origin == origin]


class Harness:
    """Runs one suite against one pack."""

    def __init__(self, suite_name: str, pack: Path, *, approvals: ApprovalStore | None = None) -> None:
        self.suite_name = suite_name
        self.suite = load_suite(suite_name)
        self.config = CONFIG[suite_name]
        self.store = approvals or ApprovalStore("sqlite://")
        self.gov = Governor(pack, approvals=self.store)
        self.pack = pack
        self.chain = [
            {"kind": "user", "id": self.config.user_id, "roles": list(self.config.roles)},
            {"kind": "agent", "id": self.config.agent},
        ]
        self._approver = approver(self.config.approver_id, list(self.config.roles))
        self._attack_template = _important_instructions()

    # .. the tasks

    def user_tasks(self) -> list[Any]:
        return sorted(self.suite.user_tasks.values(), key=lambda t: int(t.ID.rsplit("_", 1)[1]))

    def injection_tasks(self) -> list[Any]:
        return sorted(self.suite.injection_tasks.values(), key=lambda t: int(t.ID.rsplit("_", 1)[1]))

    def injections(self, user_task: Any, injection_task: Any) -> dict[str, str]:
        """The injection text in every vector the user task reads (AgentDojo's candidates)."""
        from agentdojo.attacks.base_attacks import FixedJailbreakAttack

        attack = FixedJailbreakAttack(self._attack_template, self.suite, _NoPipeline())
        attack.user_name = _USER_NAMES.get(self.suite_name, "the user")
        return attack.attack(user_task, injection_task)

    # .. one step

    def _action(self, session: str, point: str, **kw: Any) -> Action:
        return Action.model_validate(
            {"point": point, "principal": self.chain, "session_id": session, "purpose": self.config.purpose, **kw}
        )

    def _call(self, session: str, env: Any, runtime: Any, fc: Any, origin: Any, approvals: Approvals) -> tuple[Call, str]:
        args = dict(fc.args)
        action = self._action(session, "tool_call", tool=fc.function, arguments=jsonable(args))
        d = self.gov.decide(action)
        call = Call(origin, fc.function, args, d.verdict, d.rule_ids)
        if d.verdict is Verdict.REQUIRE_APPROVAL:
            call.approval_requested = True
            specs = d.obligations_of(ObligationKind.APPROVAL)
            request_id = specs[0].params.get("approval_id") if specs else None
            grant = approvals == "grant" or (approvals == "oracle" and origin == "user")
            if request_id is not None:
                if grant:
                    self.store.approve(request_id, self._approver, "granted blindly by the benchmark")
                    d = self.gov.decide(self._action(session, "tool_call", tool=fc.function, arguments=jsonable(args)))
                else:
                    self.store.deny(request_id, self._approver, "denied by the benchmark")
        if not d.verdict.proceeds:
            return call, ""
        if d.modified_arguments is not None:
            args = dict(d.modified_arguments)
        from agentdojo.agent_pipeline.tool_execution import tool_result_to_str

        result, error = runtime.run_function(env, fc.function, args)
        call.ran, call.error = True, error
        content = error if error else jsonable(result)
        seen = self.gov.decide(self._action(session, "tool_result", tool=fc.function, content=content))
        call.result_seen = seen.verdict.proceeds
        # what the model reads is AgentDojo's rendering of the result, compared word by word
        return call, (_squash(error or tool_result_to_str(result)) if call.result_seen else "")

    # .. one run

    def run(self, user_task: Any, injection_task: Any | None = None, *, approvals: Approvals = "deny") -> Episode:
        from agentdojo.functions_runtime import FunctionCall, FunctionsRuntime

        injections = self.injections(user_task, injection_task) if injection_task is not None else {}
        env = user_task.init_environment(self.suite.load_and_inject_default_environment(injections))
        pre = env.model_copy(deep=True)
        runtime = FunctionsRuntime(self.suite.tools)
        session = f"{self.suite_name}-{user_task.ID}-{injection_task.ID if injection_task else 'benign'}-{uuid.uuid4().hex[:8]}"
        self.gov.decide(self._action(session, "input", content=user_task.PROMPT, intent=user_task.PROMPT))
        episode = Episode(self.suite_name, user_task.ID, injection_task.ID if injection_task else None)
        queue: list[tuple[str, Any]] = [("user", c) for c in user_task.ground_truth(pre.model_copy(deep=True))]
        attack_calls = injection_task.ground_truth(pre.model_copy(deep=True)) if injection_task is not None else []
        markers = [_squash(injection_task.GOAL)] if injection_task is not None else []
        trace: list[FunctionCall] = []
        while queue:
            origin, fc = queue.pop(0)
            call, seen = self._call(session, env, runtime, fc, origin, approvals)
            episode.calls.append(call)
            if call.ran:
                trace.append(FunctionCall(function=call.function, args=call.arguments))
            if markers and not episode.injection_seen and seen and any(m in seen for m in markers):
                episode.injection_seen = True  # the compromised agent now follows the injected instructions
                queue[:0] = [("injection", c) for c in attack_calls]
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            episode.utility = _utility(user_task, pre, env, trace)
            if injection_task is not None:
                episode.attack_succeeded = _security(injection_task, pre, env, trace)
        return episode

    def close(self) -> None:
        self.store.engine.dispose()


def _squash(text: str) -> str:
    """Words only: the YAML environment folds line breaks and the YAML rendering doubles quotes."""
    return " ".join(re.findall(r"\w+", text))


def _utility(task: Any, pre: Any, post: Any, trace: Sequence[Any]) -> bool:
    output = task.GROUND_TRUTH_OUTPUT
    from_traces = task.utility_from_traces(output, pre, post, trace)
    return bool(from_traces if from_traces is not None else task.utility(output, pre, post))


def _security(task: Any, pre: Any, post: Any, trace: Sequence[Any]) -> bool:
    from_traces = task.security_from_traces("", pre, post, trace)
    return bool(from_traces if from_traces is not None else task.security("", pre, post))


_USER_NAMES = {"banking": "Emma Johnson", "slack": "the user"}


def _important_instructions() -> str:
    from agentdojo.attacks.important_instructions_attacks import ImportantInstructionsAttack

    return ImportantInstructionsAttack._JB_STRING


class _NoPipeline:
    """AgentDojo's attacks take the target pipeline only to name its model; there is none here."""

    name = "no-llm"


# --- the figures --------------------------------------------------------------------------------


@dataclass
class SuiteFigures:
    suite: str
    pack: str
    user_tasks: int
    benign_calls: int
    benign_unprompted_pct: float
    completable_with_approvals_pct: float
    approvals_per_task: float
    benign_utility_pct: float
    """AgentDojo's utility check of the benign runs with approvals granted."""
    pairs: int
    injection_seen_pct: float
    asr_denied_pct: float
    asr_granted_pct: float
    utility_under_attack_denied_pct: float
    utility_under_attack_oracle_pct: float
    """AgentDojo's utility under attack when the approver grants the task's calls and denies the injected ones."""
    asr_oracle_pct: float
    approvals_per_attack_pair: float
    blocked_or_denied_benign: list[str] = field(default_factory=list)
    successful_attacks_denied: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _pct(n: int, d: int) -> float:
    return round(100.0 * n / d, 2) if d else 0.0


def measure(suite_name: str, pack: Path, *, pairs_limit: int | None = None, progress: Any = None) -> SuiteFigures:
    """Run the benign agent and the compromised agent over one suite with one pack."""
    h = Harness(suite_name, pack)
    try:
        users = h.user_tasks()
        benign = [h.run(t, approvals="grant") for t in users]
        calls = [c for e in benign for c in e.calls]
        unprompted = sum(1 for c in calls if c.first.proceeds)
        completable = [e for e in benign if all(c.ran for c in e.calls)]
        stuck = [f"{e.user_task}:{c.function}" for e in benign for c in e.calls if not c.ran]
        pairs = [(u, i) for u in users for i in h.injection_tasks()]
        if pairs_limit is not None:
            pairs = pairs[:pairs_limit]
        denied: list[Episode] = []
        granted: list[Episode] = []
        oracle: list[Episode] = []
        for u, i in pairs:
            denied.append(h.run(u, i, approvals="deny"))
            granted.append(h.run(u, i, approvals="grant"))
            oracle.append(h.run(u, i, approvals="oracle"))
            if progress is not None:
                progress()
        return SuiteFigures(
            suite=suite_name,
            pack=str(pack.relative_to(ROOT)) if pack.is_relative_to(ROOT) else pack.name,
            user_tasks=len(users),
            benign_calls=len(calls),
            benign_unprompted_pct=_pct(unprompted, len(calls)),
            completable_with_approvals_pct=_pct(len(completable), len(benign)),
            approvals_per_task=round(sum(c.approval_requested for c in calls) / len(benign), 3),
            benign_utility_pct=_pct(sum(e.utility for e in benign), len(benign)),
            pairs=len(pairs),
            injection_seen_pct=_pct(sum(e.injection_seen for e in granted), len(granted)),
            asr_denied_pct=_pct(sum(e.attack_succeeded for e in denied), len(denied)),
            asr_granted_pct=_pct(sum(e.attack_succeeded for e in granted), len(granted)),
            utility_under_attack_denied_pct=_pct(sum(e.utility for e in denied), len(denied)),
            utility_under_attack_oracle_pct=_pct(sum(e.utility for e in oracle), len(oracle)),
            asr_oracle_pct=_pct(sum(e.attack_succeeded for e in oracle), len(oracle)),
            approvals_per_attack_pair=round(sum(c.approval_requested for e in denied for c in e.calls) / max(1, len(denied)), 3),
            blocked_or_denied_benign=stuck,
            successful_attacks_denied=[f"{e.user_task}x{e.injection_task}" for e in denied if e.attack_succeeded],
        )
    finally:
        h.close()


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fiveplane-agentdojo-") as d:
        yield Path(d)


def packs_dir(version: str = "v2") -> Path:
    """The packs measured: ``v2`` (the shipped packs, policies/agentdojo: lists, per-field trust,
    flow kinds and exemptions, provenance functions) or ``v1`` (the packs written before those
    features, kept in bench/agentdojo/v1 for the before/after comparison)."""
    if version == "v2":
        return PACKS
    if version == "v1":
        return PACKS_V1
    raise ValueError(f"unknown pack version {version!r} (v1 or v2)")


def run_all(
    suites: Sequence[str] = SUITES, *, version: str = "v2", pairs_limit: int | None = None, progress: Any = None
) -> dict[str, dict[str, Any]]:
    """Figures per suite for the pack and the allow-all / block-all baselines."""
    out: dict[str, dict[str, Any]] = {}
    with _scratch() as tmp:
        for name in suites:
            pack = packs_dir(version) / f"{name}.yaml"
            out[name] = {
                "pack": measure(name, pack, pairs_limit=pairs_limit, progress=progress).row(),
                "allow_all": measure(name, baseline_pack(pack, "allow", tmp), pairs_limit=pairs_limit, progress=progress).row(),
                "block_all": measure(name, baseline_pack(pack, "block", tmp), pairs_limit=pairs_limit, progress=progress).row(),
            }
    return out
