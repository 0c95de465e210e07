"""YAML loading that remembers where every value came from (file:line), and rejects duplicate keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Located", "PolicyError", "load_yaml"]

Loc = tuple[str | int, ...]


class PolicyError(ValueError):
    """A policy pack (or test file) is invalid. ``errors`` holds ``file:line: message`` lines."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass
class Located:
    """Parsed YAML data plus the line of every mapping key and sequence item."""

    data: Any
    path: Path
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int:
        """The line of the longest known prefix of ``loc`` (1-based)."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)

    def where(self, loc: Loc) -> str:
        return f"{self.path}:{self.line_of(loc)}"


def _construct(node: yaml.Node, loc: Loc, lines: dict[Loc, int], where: Path) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise PolicyError([f"{where}:{key_node.start_mark.line + 1}: YAML merge keys (<<) are not supported"])
            key = _construct(key_node, loc + ("<key>",), {}, where)
            if not isinstance(key, (str, int)):
                raise PolicyError([f"{where}:{key_node.start_mark.line + 1}: mapping keys must be strings"])
            if key in out:
                raise PolicyError([f"{where}:{key_node.start_mark.line + 1}: duplicate key {key!r}"])
            lines[loc + (key,)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, loc + (key,), lines, where)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            lines[loc + (i,)] = item.start_mark.line + 1
            items.append(_construct(item, loc + (i,), lines, where))
        return items
    assert isinstance(node, yaml.ScalarNode)
    return _scalar(node)


_resolver_loader = yaml.SafeLoader("")


def _scalar(node: yaml.ScalarNode) -> Any:
    return _resolver_loader.construct_object(node, deep=True)


def load_yaml(path: Path | str, text: str | None = None) -> Located:
    """Parse one YAML document with line numbers. Raises :class:`PolicyError` on bad YAML."""
    path = Path(path)
    if text is None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise PolicyError([f"{path}:1: cannot read: {exc.strerror or exc}"]) from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyError([f"{path}:1: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise PolicyError([f"{path}:{line}: invalid YAML: {exc.problem or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError([f"{path}:1: invalid YAML: {exc}"]) from exc
    if node is None:
        raise PolicyError([f"{path}:1: the file is empty"])
    lines: dict[Loc, int] = {}
    data = _construct(node, (), lines, path)
    return Located(data=data, path=path, lines=lines)
