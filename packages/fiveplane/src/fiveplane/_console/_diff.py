"""The difference between a request's arguments and those of the last approved call of the same tool."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._approvals import ApprovalRequest, ApprovalStatus

__all__ = ["FieldChange", "diff_arguments", "last_approved"]

Change = Literal["same", "changed", "added", "removed"]


@dataclass(frozen=True)
class FieldChange:
    path: str
    change: Change
    before: str | None
    after: str | None


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for k in sorted(value, key=str):
            out.update(_flatten(value[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix or "(arguments)": value}


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def diff_arguments(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[FieldChange]:
    """Field by field (nested objects by dotted path; lists compared whole), in path order."""
    a, b = _flatten(dict(before)), _flatten(dict(after))
    out: list[FieldChange] = []
    for path in sorted(set(a) | set(b)):
        if path not in a:
            out.append(FieldChange(path, "added", None, _show(b[path])))
        elif path not in b:
            out.append(FieldChange(path, "removed", _show(a[path]), None))
        else:
            same = a[path] == b[path]
            out.append(FieldChange(path, "same" if same else "changed", _show(a[path]), _show(b[path])))
    return out


def last_approved(req: ApprovalRequest, others: Iterable[ApprovalRequest]) -> ApprovalRequest | None:
    """The most recently approved (or approved and used) request of the same tool; for a decided
    ``req``, the last one approved before it was decided."""
    best: ApprovalRequest | None = None
    for o in others:
        if o.id == req.id or o.tool != req.tool or o.status not in (ApprovalStatus.APPROVED, ApprovalStatus.CONSUMED):
            continue
        if o.decided_at is None or (req.decided_at is not None and o.decided_at > req.decided_at):
            continue
        if best is None or (best.decided_at is not None and o.decided_at > best.decided_at):
            best = o
    return best
