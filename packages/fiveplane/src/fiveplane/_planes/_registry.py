"""The built-in planes by name, so a Governor can install the ones a policy configures.

Imports are lazy: a plane whose engine is an optional extra (the data plane needs Presidio) is only
imported when a policy configures it, and then fails with a fix-it ImportError if the extra is missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._policy._load import Policy
    from ._base import BasePlane

__all__ = ["BUILTIN_PLANES", "planes_for"]

BUILTIN_PLANES: dict[str, tuple[str, str]] = {
    "identity": ("fiveplane._planes._identity", "IdentityPlane"),
    "endpoint": ("fiveplane._planes._endpoint", "EndpointPlane"),
    "network": ("fiveplane._planes._network", "NetworkPlane"),
    "data": ("fiveplane._planes._data", "DataPlane"),
}
"""Plane name → (module, class), in evaluation order."""


def planes_for(policy: Policy, given: Sequence[BasePlane] = (), /, **options: dict[str, Any]) -> list[BasePlane]:
    """The planes a Governor runs: the built-in planes the policy configures, then custom ones.

    A plane in ``given`` replaces the built-in of the same name (e.g. a ``NetworkPlane`` with an
    injected resolver); the other built-in planes the policy configures (``planes: {name: ...}``) are
    created with ``options[name]`` as keyword arguments, e.g.
    ``planes_for(policy, endpoint={"database_url": "sqlite://"})``. Custom planes in ``given`` follow,
    in their order. Sections naming no plane are left for the Governor to reject (with file:line).
    """
    by_name = {p.name: p for p in given}
    planes: list[BasePlane] = []
    for name, (module, cls) in BUILTIN_PLANES.items():
        if name in by_name:
            planes.append(by_name.pop(name))
        elif name in policy.planes:
            factory: Callable[..., BasePlane] = getattr(importlib.import_module(module), cls)
            planes.append(factory(**options.get(name, {})))
    planes.extend(p for p in given if p.name in by_name)
    return planes
