"""Helpers shared by the command groups: consoles, exit codes, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "console", "die", "err_console", "print_json"]

EXIT_OK = 0
EXIT_FAILED = 1
"""What was checked is wrong: policy errors, failing tests, failed verification."""
EXIT_BAD_INPUT = 2
"""The input could not be used: unreadable file, malformed JSON, bad option."""

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def die(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", markup=True)
    raise typer.Exit(code)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, sort_keys=False) + "\n")
