"""Links into the approval console (cheap to import: the demos and notifications use it).

A link carries ids only (a request id, an action id, a session id), never arguments or people.
"""

from __future__ import annotations

import os
from urllib.parse import quote

__all__ = ["CONSOLE_URL_ENV", "DEFAULT_CONSOLE_URL", "console_base", "console_url"]

CONSOLE_URL_ENV = "FIVEPLANE_CONSOLE_URL"
DEFAULT_CONSOLE_URL = "http://127.0.0.1:8765"


def console_base(base: str | None = None) -> str:
    """The console's address: ``base``, else ``$FIVEPLANE_CONSOLE_URL``, else where ``fiveplane console`` listens by default."""
    return (base or os.environ.get(CONSOLE_URL_ENV) or DEFAULT_CONSOLE_URL).rstrip("/")


def console_url(request_id: str | None = None, *, base: str | None = None) -> str:
    """The console page of one approval request (or the queue when ``request_id`` is ``None``)."""
    root = console_base(base)
    return f"{root}/requests/{quote(request_id, safe='')}" if request_id else f"{root}/queue"
