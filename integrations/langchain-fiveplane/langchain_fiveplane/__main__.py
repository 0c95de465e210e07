"""``python -m langchain_fiveplane demo | coverage MODULE:OBJECT``: the same as ``fiveplane demo`` / ``fiveplane coverage``."""

from __future__ import annotations

from ._cli import app

if __name__ == "__main__":
    app()
