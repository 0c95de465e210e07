"""Path-traversal corpus on a real directory tree with symlinks and hard links (in tmp_path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fiveplane._endpoint._paths import PathPolicy


@pytest.fixture
def tree(tmp_path: Path) -> tuple[PathPolicy, Path]:
    root = tmp_path / "ws"
    (root / "out").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_text("a")
    (root / ".ssh").mkdir()
    (root / ".ssh" / "id").write_text("k")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key.txt").write_text("s")
    (root / "docs" / "escape").symlink_to(outside)  # dir symlink pointing out
    (root / "docs" / "key-link.txt").symlink_to(outside / "key.txt")  # file symlink pointing out
    (root / "docs" / "dangling").symlink_to(outside / "not-yet")  # dangling link pointing out
    (root / "docs" / "inside-link").symlink_to(root / "docs" / "a.txt")  # fine: stays inside
    (root / "out" / "to-docs").symlink_to(root / "docs")  # write root → read-only area
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    os.link(outside / "key.txt", root / "docs" / "hard.txt")  # hard link to a file outside
    alias = tmp_path / "alias"
    alias.symlink_to(root)  # a symlinked root is resolved too
    policy = PathPolicy.create(read=[str(alias)], write=[str(root / "out")], deny=["*/.ssh/*", "*.pem"], base=str(root))
    return policy, root


def ok(policy: PathPolicy, path: str, access: str = "read") -> bool:
    return policy.check(path, access) is None  # type: ignore[arg-type]


READ_OK = [
    "docs/a.txt",
    "docs",
    "./docs/a.txt",
    "docs/./a.txt",
    "docs//a.txt",
    "docs/inside-link",
    "out/new.txt",
    "docs/new-file.txt",
    ".",
    "docs/café.txt",  # NFC text is fine
    "docs/100%.txt",  # a percent sign that is not an escape
    "docs/a b.txt",
]
READ_BLOCKED = [
    "../secret/key.txt",
    "docs/../../secret/key.txt",
    "docs/escape/key.txt",
    "docs/escape",
    "docs/key-link.txt",
    "docs/dangling",
    "docs/hard.txt",
    ".ssh/id",
    "docs/x.pem",
    "/etc/passwd",
    "/",
    "//etc/passwd",
    "docs/%2e%2e/%2e%2e/secret",
    "docs/..%2f..%2fsecret",
    "docs\\..\\..\\secret",
    "docs/\uff0e\uff0e/\uff0e\uff0e/secret",  # full-width dots
    "docs\u2215a.txt",  # division slash
    "docs/a.txt\x00.png",
    "docs/a\u200b.txt",  # zero-width space
    "docs/a.txt\n",
    "~/ws/docs/a.txt",
    "~root/x",
    "file:///etc/passwd",
    "C:/Windows/win.ini",
    "..",
    "docs/..",
    "loop1/x",
    "",
    "x" * 5000,
]
WRITE_OK = ["out/report.txt", "out/sub/new.txt", "out"]
WRITE_BLOCKED = [
    "docs/a.txt",
    "out/to-docs/a.txt",
    "out/../docs/a.txt",
    "report.txt",
    "/tmp/x",
    "out/x.pem",
    "out/\u2024\u2024/docs/a.txt",  # one-dot leaders (NFKC: '..')
    "out\u2215..\u2215docs",
    "out/%2e%2e/docs/a.txt",
]


def test_corpus_size() -> None:
    assert len(READ_OK) + len(READ_BLOCKED) + len(WRITE_OK) + len(WRITE_BLOCKED) >= 50


@pytest.mark.parametrize("path", READ_OK)
def test_read_allowed(tree: tuple[PathPolicy, Path], path: str) -> None:
    assert ok(tree[0], path), tree[0].check(path, "read")


@pytest.mark.parametrize("path", READ_BLOCKED, ids=[repr(p)[:40] for p in READ_BLOCKED])
def test_read_blocked(tree: tuple[PathPolicy, Path], path: str) -> None:
    assert not ok(tree[0], path)


@pytest.mark.parametrize("path", WRITE_OK)
def test_write_allowed(tree: tuple[PathPolicy, Path], path: str) -> None:
    assert ok(tree[0], path, "write"), tree[0].check(path, "write")


@pytest.mark.parametrize("path", WRITE_BLOCKED)
def test_write_blocked(tree: tuple[PathPolicy, Path], path: str) -> None:
    assert not ok(tree[0], path, "write")


def test_absolute_paths_through_the_symlinked_root(tree: tuple[PathPolicy, Path]) -> None:
    policy, root = tree
    assert ok(policy, str(root / "docs" / "a.txt"))
    assert ok(policy, str(root.parent / "alias" / "docs" / "a.txt"))
    assert not ok(policy, str(root.parent / "secret" / "key.txt"))


def test_messages(tree: tuple[PathPolicy, Path]) -> None:
    policy, _ = tree
    assert "symlink escape" in (policy.check("docs/key-link.txt", "read") or "")
    assert "hard links" in (policy.check("docs/hard.txt", "read") or "")
    assert "'..'" in (policy.check("docs/../x", "read") or "")
    assert "percent" in (policy.check("docs/%2e%2e", "read") or "")


def test_relative_paths_need_a_base(tmp_path: Path) -> None:
    policy = PathPolicy.create(read=[str(tmp_path)])
    assert "no files.base" in (policy.check("a.txt", "read") or "")
    with pytest.raises(ValueError):
        PathPolicy.create(read=["relative/root"])
    with pytest.raises(ValueError):
        PathPolicy.create(read=[str(tmp_path)], base="relative")


def test_read_and_write_are_separate(tmp_path: Path) -> None:
    policy = PathPolicy.create(read=[str(tmp_path / "r")], write=[str(tmp_path / "w")])
    assert ok(policy, str(tmp_path / "r" / "x"), "read") and not ok(policy, str(tmp_path / "r" / "x"), "write")
    assert ok(policy, str(tmp_path / "w" / "x"), "write") and not ok(policy, str(tmp_path / "w" / "x"), "read")
