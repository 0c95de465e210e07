"""fiveplane for LlamaIndex: governed tools and agent workflows, retrieval filters, approvals
through workflow events, and instrumentation evidence.

```python
from llama_index.tools.fiveplane import GovernedRetriever, govern_tools

retriever = GovernedRetriever(index.as_retriever(), governor, source="kb.search")
tools = govern_tools([send_email], governor, policy_tools={"send_email": "email.send"})
```

The demo (``run_demo``, ``arun_demo``, ``build_demo_governor``, ``run_demo_cli``, ``DemoResult``,
``DemoStep``) is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._approvals import ApprovalRequestEvent, ApprovalResponseEvent
from ._instrumentation import FiveplaneEventHandler, FiveplaneInstrumentation, FiveplaneSpanHandler, RecordEvent
from ._retrieval import GovernedNodePostprocessor, GovernedRetriever, NodeGate
from ._tools import GovernedFunctionTool, govern_tools
from ._version import __version__

if TYPE_CHECKING:
    from ._cli import run_demo_cli
    from ._demo import DemoResult, DemoStep, arun_demo, build_demo_governor, run_demo

__all__ = [
    "ApprovalRequestEvent",
    "ApprovalResponseEvent",
    "DemoResult",
    "DemoStep",
    "FiveplaneEventHandler",
    "FiveplaneInstrumentation",
    "FiveplaneSpanHandler",
    "GovernedFunctionTool",
    "GovernedNodePostprocessor",
    "GovernedRetriever",
    "NodeGate",
    "RecordEvent",
    "__version__",
    "arun_demo",
    "build_demo_governor",
    "govern_tools",
    "run_demo",
    "run_demo_cli",
]

_LAZY = {
    "DemoResult": "._demo",
    "DemoStep": "._demo",
    "arun_demo": "._demo",
    "build_demo_governor": "._demo",
    "run_demo": "._demo",
    "run_demo_cli": "._cli",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
