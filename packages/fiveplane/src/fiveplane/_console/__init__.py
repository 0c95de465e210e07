"""The approval console (``fiveplane console``): a web queue of pending approvals, evidence and notifications.

Importing this package is cheap; the web app (Starlette, Jinja2: the ``console`` extra) is loaded by
:func:`create_app` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._links import CONSOLE_URL_ENV, DEFAULT_CONSOLE_URL, console_base, console_url

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["CONSOLE_URL_ENV", "DEFAULT_CONSOLE_URL", "console_base", "console_url", "create_app"]

_EXTRA_HINT = "the approval console needs the console extra: pip install 'fiveplane[console]' (starlette, jinja2, python-multipart, uvicorn)"


def create_app(*args: Any, **kwargs: Any) -> Starlette:
    """The console's ASGI app; see :func:`fiveplane._console._app.create_app` for the arguments."""
    try:
        from ._app import create_app as _create
    except ImportError as exc:
        raise ImportError(f"{_EXTRA_HINT} ({exc})") from exc
    return _create(*args, **kwargs)
