"""Switch off every shortcut of the decision hot path (for tests that compare it with the full judgement)."""

from __future__ import annotations

from typing import Any

import pytest

from fiveplane import Governor
from fiveplane._call import run_effects
from fiveplane._planes import _reasoning
from fiveplane._policy._cel import Condition
from fiveplane._policy._celfast import UNDECIDED


def without_shortcuts(mp: pytest.MonkeyPatch) -> None:
    """No compiled decision (``settle``), no fast combine, no CEL closures or field projection, and
    the effect-driven decision flow even where it has no effect to perform."""
    mp.setattr(
        Governor,
        "_in_place",
        lambda self, action, plan, tx, t0: run_effects(self._decision_flow(action, plan, tx, t0), self._perform),
    )
    mp.setattr(_reasoning.ReasoningPlane, "settle", lambda self, *args: None)
    mp.setattr(_reasoning, "_simple", lambda contributions, results: None)
    mp.setattr(Condition, "on_arguments", lambda self, arguments: UNDECIDED)
    original = Condition.evaluate

    def plain(self: Condition, resolve: Any, provenance: Any = None) -> bool:
        saved = self._fast, self._projection
        self._fast, self._projection = None, {}
        try:
            return original(self, resolve, provenance)
        finally:
            self._fast, self._projection = saved

    mp.setattr(Condition, "evaluate", plain)
