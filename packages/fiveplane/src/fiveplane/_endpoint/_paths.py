"""File-path policy: allowed roots for reading and for writing, judged on resolved real paths.

A path passes only if it is written plainly and, after resolution, lies under an allowed root for
the access asked (read and write roots are separate lists):

* refused before resolution: NUL and control characters, backslashes, percent-encoding
  (``%2e%2e``), text that Unicode NFKC normalization would change (full-width ``．．／``, ligatures),
  ``~`` expansion, ``file:`` URLs, drive letters, ``..`` segments, relative paths when no base
  directory is configured, over-long paths;
* resolution follows every symlink that exists (``os.path.realpath``), including dangling ones, so a
  link inside a root that points outside is an escape; the roots are resolved the same way;
* an existing file with more than one hard link is refused (a hard link can smuggle a file from
  outside the roots in), unless allowed;
* ``deny`` globs are matched against the resolved path (``*`` also matches ``/``).

The check happens before the tool runs; a tool should open the resolved path it was checked
against (``PathPolicy.resolve``) to narrow the window for a swap (see the docs' gaps).
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

__all__ = ["Access", "PathError", "PathPolicy"]

Access = Literal["read", "write"]
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_DRIVE = re.compile(r"^[A-Za-z]:")
_SLASH_LIKE = frozenset("\u2215\u2044\u29f8\u29f9\u1735\u2571\u2572\u3033\u30fb")
MAX_PATH = 4096


class PathError(ValueError):
    """A path that is refused; the message says why."""


@dataclass(frozen=True)
class PathPolicy:
    """Roots for reading and writing, already resolved. Build with :meth:`create`."""

    read: tuple[str, ...]
    write: tuple[str, ...]
    deny: tuple[str, ...] = ()
    base: str | None = None
    allow_hardlinks: bool = False

    @classmethod
    def create(
        cls,
        *,
        read: Sequence[str] = (),
        write: Sequence[str] = (),
        deny: Sequence[str] = (),
        base: str | None = None,
        allow_hardlinks: bool = False,
    ) -> PathPolicy:
        if base is not None and not os.path.isabs(base):
            raise ValueError(f"files.base must be an absolute path, got {base!r}")

        def root(p: str) -> str:
            if not os.path.isabs(p):
                if base is None:
                    raise ValueError(f"root {p!r} is relative and no files.base is set")
                p = os.path.join(base, p)
            return os.path.realpath(p)

        return cls(
            read=tuple(root(p) for p in read),
            write=tuple(root(p) for p in write),
            deny=tuple(deny),
            base=os.path.realpath(base) if base else None,
            allow_hardlinks=allow_hardlinks,
        )

    def resolve(self, path: str) -> str:
        """The real path a (plainly written) path names. Raises :class:`PathError`."""
        if not isinstance(path, str):
            raise PathError(f"a path must be a string, not {type(path).__name__}")
        if not path:
            raise PathError("the path is empty")
        if len(path) > MAX_PATH:
            raise PathError(f"the path is longer than {MAX_PATH} characters")
        if "\x00" in path:
            raise PathError("the path contains a NUL character")
        if any(unicodedata.category(c) in ("Cc", "Cf") for c in path):
            raise PathError(f"the path {path!r} contains control or invisible characters")
        if "\\" in path:
            raise PathError(f"the path {path!r} contains a backslash")
        lookalike = next((c for c in path if c in _SLASH_LIKE), None)
        if lookalike is not None:
            raise PathError(f"the path {path!r} contains {unicodedata.name(lookalike)}, which looks like a path separator")
        if _PERCENT.search(path):
            raise PathError(f"the path {path!r} contains percent-encoding")
        if unicodedata.normalize("NFKC", path) != path:
            raise PathError(
                f"the path {path!r} is not in canonical Unicode form (NFKC would change it to {unicodedata.normalize('NFKC', path)!r})"
            )
        if path.startswith("~"):
            raise PathError(f"the path {path!r} uses '~'; write the full path")
        if path.lower().startswith("file:"):
            raise PathError(f"the path {path!r} is a file: URL; give a plain path")
        if _DRIVE.match(path):
            raise PathError(f"the path {path!r} has a drive letter")
        if ".." in path.split("/"):
            raise PathError(f"the path {path!r} contains a '..' segment")
        if not os.path.isabs(path):
            if self.base is None:
                raise PathError(f"the relative path {path!r} cannot be judged: no files.base is configured")
            path = os.path.join(self.base, path)
        try:
            return os.path.realpath(path, strict=True)
        except FileNotFoundError:
            pass  # part of it does not exist (yet): resolve what does, follow dangling links
        except (OSError, ValueError) as exc:  # symlink loops, permissions
            raise PathError(
                f"the path {path!r} cannot be resolved ({exc.strerror if isinstance(exc, OSError) and exc.strerror else exc})"
            ) from None
        try:
            return os.path.realpath(path)
        except (OSError, ValueError) as exc:
            raise PathError(f"the path {path!r} cannot be resolved ({exc})") from None

    def check(self, path: str, access: Access) -> str | None:
        """None if ``path`` may be accessed for ``access``; otherwise the reason."""
        try:
            resolved = self.resolve(path)
        except PathError as exc:
            return str(exc)
        roots = self.read if access == "read" else self.write
        if not any(_inside(resolved, r) for r in roots):
            lexical = os.path.normpath(path if os.path.isabs(path) else os.path.join(self.base or "/", path))
            shown = ", ".join(roots) or "none"
            if resolved != lexical and any(_inside(lexical, r) for r in roots):
                return f"{path!r} resolves to {resolved!r} (a symlink escape), outside the {access} roots ({shown})"
            return f"{path!r} is outside the {access} roots ({shown})"
        for pattern in self.deny:
            if fnmatchcase(resolved, pattern):
                return f"{path!r} ({resolved}) matches the denied pattern {pattern!r}"
        if not self.allow_hardlinks:
            try:
                st = os.lstat(resolved)
            except OSError:
                return None
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                return f"{path!r} is a file with {st.st_nlink} hard links (one may be outside the roots)"
        return None


def _inside(path: str, root: str) -> bool:
    if root == "/":
        return path.startswith("/")
    return path == root or path.startswith(root + "/")
