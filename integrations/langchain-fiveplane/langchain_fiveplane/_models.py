"""``ScriptedChatModel``: a chat model that plays a script of turns (offline demos and tests).

Each call returns the next turn: an ``AIMessage`` (with ``tool_calls`` to make the agent act), a
string (a final answer), or a function of the conversation so far that returns either. It binds any
tools (the script decides what is called), never opens a socket and fails loudly when the script
runs out, so a test notices an unexpected extra model call.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, PrivateAttr

__all__ = ["ScriptedChatModel", "Turn", "tool_calls"]

Turn = AIMessage | str | Callable[[list[BaseMessage]], AIMessage | str]
"""One model turn: a message, a final answer, or a function of the messages the model was given."""


def tool_calls(*calls: tuple[str, dict[str, Any]], text: str = "") -> AIMessage:
    """A model turn that calls tools: ``tool_calls(("crm_search_accounts", {"query": "Globex"}))``."""
    return AIMessage(content=text, tool_calls=[{"name": name, "args": dict(args), "id": None} for name, args in calls])


class ScriptedChatModel(BaseChatModel):
    """A chat model that returns scripted turns in order (tool calls get ids ``call_<n>`` if missing).

    Example:
        ```python
        model = ScriptedChatModel(turns=[
            AIMessage("", tool_calls=[{"name": "crm_search_accounts", "args": {"query": "Globex"}}]),
            "Globex is in negotiation.",
        ])
        ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    turns: list[Any]
    """The script (see :data:`Turn`)."""
    exhausted: str | None = None
    """What to answer once the script has run out; ``None`` raises (a test should notice)."""
    _counter: Any = PrivateAttr(default_factory=itertools.count)
    _played: int = PrivateAttr(default=0)
    _seen: list[list[BaseMessage]] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "fiveplane-scripted"

    @property
    def calls(self) -> int:
        """How many turns were played."""
        return self._played

    @property
    def seen(self) -> list[list[BaseMessage]]:
        """The messages the model was given at each turn (what it could read)."""
        return self._seen

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self

    def _turn(self, messages: list[BaseMessage]) -> AIMessage:
        n = next(self._counter)  # atomic: parallel branches never get the same turn
        self._played = max(self._played, n + 1)
        self._seen.append(list(messages))
        if n >= len(self.turns):
            if self.exhausted is None:
                raise RuntimeError(f"ScriptedChatModel: the script has {len(self.turns)} turns; turn {n + 1} was requested")
            return AIMessage(content=self.exhausted)
        turn = self.turns[n]
        if callable(turn) and not isinstance(turn, AIMessage):
            turn = turn(list(messages))
        msg = AIMessage(content=turn) if isinstance(turn, str) else turn.model_copy(deep=True)
        if msg.tool_calls:
            calls = [{**tc, "id": tc.get("id") or f"call_{n + 1}_{i + 1}"} for i, tc in enumerate(msg.tool_calls)]
            msg = msg.model_copy(update={"tool_calls": calls})
        return msg

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._turn(messages))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._turn(messages))])
