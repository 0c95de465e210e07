"""Who acts, in which session, with which intent: the fiveplane run of a LangChain invocation.

LangChain passes per-invocation settings in the ``RunnableConfig``; fiveplane reads its run from
``config["configurable"]["fiveplane"]`` (build it with :func:`run_config`). Resolution order:

1. ``config["configurable"]["fiveplane"]``: a :class:`fiveplane.Run`, or a mapping with ``user`` /
   ``roles`` / ``claims`` (or a full ``principal`` chain), ``agent``, ``session_id``, ``intent``,
   ``purpose``; ``session_id`` defaults to the LangGraph ``thread_id``;
2. the run set by ``Governor.run(...)`` in the calling context (:func:`fiveplane.current_run`);
3. the ``run=`` given when the middleware / tool / retriever was built.

Nothing found is a configuration error: the adapter refuses to act for nobody (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig

from fiveplane import Principal, PrincipalKind, Run, current_run

__all__ = [
    "CONFIG_KEY",
    "MissingRunError",
    "ToolMap",
    "catalog_name",
    "run_config",
    "run_from_config",
    "run_from_state",
    "run_to_state",
]

CONFIG_KEY = "fiveplane"
"""The key under ``config["configurable"]`` that carries the fiveplane run."""

ToolMap = Mapping[str, str] | Callable[[str], str | None]
"""LangChain tool name → catalog tool name: a mapping, or a function returning ``None`` for "same name"."""


class MissingRunError(ValueError):
    """No principal / session could be found for an invocation (the adapter never acts for nobody)."""


_FIX = (
    "pass the run in the config, e.g. agent.invoke(inputs, run_config(user='rep-1', roles=['sales-rep'], "
    "thread_id='t-1')), run the agent inside `with governor.run(...)`, or give `run=` when building the adapter"
)


def catalog_name(name: str, tool_map: ToolMap | None) -> str:
    """The policy-catalog name of the LangChain tool ``name`` (identity unless mapped)."""
    if tool_map is None:
        return name
    if callable(tool_map):
        mapped = tool_map(name)
        return mapped or name
    return tool_map.get(name, name)


def run_config(
    *,
    user: str | None = None,
    roles: Sequence[str] = (),
    claims: Mapping[str, Any] | None = None,
    principal: Sequence[Principal | Mapping[str, Any]] | None = None,
    agent: str | None = None,
    session_id: str | None = None,
    intent: str | None = None,
    purpose: str | None = None,
    thread_id: str | None = None,
    **configurable: Any,
) -> RunnableConfig:
    """A ``RunnableConfig`` that tells fiveplane who acts: ``agent.invoke(inputs, run_config(...))``.

    Args:
        user: the human user's id (head of the principal chain).
        roles: the user's roles (policies and approvals key off them).
        claims: extra identity claims of the user (e.g. ``{"email": ...}``).
        principal: a full principal chain instead of ``user``/``roles``/``agent``.
        agent: the acting agent's id; defaults to the ``agent=`` of the middleware.
        session_id: the fiveplane session; defaults to ``thread_id``.
        intent: the declared intent; defaults to the user's message at the start of the run.
        purpose: the declared purpose (bound against the agent's purposes in the pack).
        thread_id: the LangGraph thread (needed with a checkpointer).
        **configurable: other ``configurable`` entries to carry along.
    """
    run: dict[str, Any] = {}
    if principal is not None:
        run["principal"] = [p.model_dump(mode="json") if isinstance(p, Principal) else dict(p) for p in principal]
    if user is not None:
        run["user"] = user
    if roles:
        run["roles"] = list(roles)
    if claims:
        run["claims"] = dict(claims)
    for key, value in (("agent", agent), ("session_id", session_id), ("intent", intent), ("purpose", purpose)):
        if value is not None:
            run[key] = value
    conf: dict[str, Any] = {**configurable, CONFIG_KEY: run}
    if thread_id is not None:
        conf["thread_id"] = thread_id
    return {"configurable": conf}


def _chain(spec: Mapping[str, Any], agent: str | None) -> tuple[Principal, ...]:
    if "principal" in spec:
        links = tuple(p if isinstance(p, Principal) else Principal.model_validate(p) for p in spec["principal"])
    elif "user" in spec:
        user = spec["user"]
        if isinstance(user, Principal):
            links = (user,)
        elif isinstance(user, Mapping):
            links = (Principal.model_validate({"kind": "user", **user}),)
        else:
            links = (
                Principal(
                    kind=PrincipalKind.USER,
                    id=str(user),
                    roles=tuple(spec.get("roles", ())),
                    claims=dict(spec.get("claims") or {}),
                ),
            )
    else:
        raise MissingRunError(f"config['configurable']['{CONFIG_KEY}'] names no 'user' or 'principal'; {_FIX}")
    agent_id = spec.get("agent") or agent
    if agent_id and not any(p.kind is PrincipalKind.AGENT for p in links):
        links = (*links, Principal(kind=PrincipalKind.AGENT, id=str(agent_id)))
    return links


def run_from_config(
    config: RunnableConfig | Mapping[str, Any] | None,
    *,
    agent: str | None = None,
    purpose: str | None = None,
    fallback: Run | None = None,
    require_session: bool = True,
) -> Run:
    """The fiveplane run of an invocation (see the module docstring for the order).

    Raises:
        MissingRunError: nothing names the principal, or (``require_session``) no session id.
    """
    configurable: Mapping[str, Any] = (config or {}).get("configurable") or {}
    spec = configurable.get(CONFIG_KEY)
    if isinstance(spec, Run):
        return spec
    if spec is not None:
        if not isinstance(spec, Mapping):
            raise MissingRunError(f"config['configurable']['{CONFIG_KEY}'] must be a Run or a mapping, not {type(spec).__name__}")
        session = spec.get("session_id") or configurable.get("thread_id")
        if not session and require_session:
            raise MissingRunError(f"no session: give session_id in the fiveplane config or a thread_id; {_FIX}")
        return Run(
            principal=_chain(spec, agent),
            session_id=str(session or ""),
            intent=spec.get("intent"),
            purpose=spec.get("purpose") or purpose,
        )
    run = current_run() or fallback
    if run is None:
        raise MissingRunError(f"no fiveplane run for this invocation; {_FIX}")
    return run


def run_to_state(run: Run) -> dict[str, Any]:
    """A JSON form of the run, kept in the graph state (checkpointed with the thread)."""
    return {
        "principal": [p.model_dump(mode="json") for p in run.principal],
        "session_id": run.session_id,
        "intent": run.intent,
        "purpose": run.purpose,
    }


def run_from_state(data: Mapping[str, Any]) -> Run:
    return Run(
        principal=tuple(Principal.model_validate(p) for p in data["principal"]),
        session_id=str(data["session_id"]),
        intent=data.get("intent"),
        purpose=data.get("purpose"),
    )
