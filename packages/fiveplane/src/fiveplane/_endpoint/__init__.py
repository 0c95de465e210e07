"""Endpoint plane internals: argument schemas, shell commands, file paths, rate limits.

Private: the public names are re-exported from :mod:`fiveplane` and :mod:`fiveplane._planes._endpoint`.
"""

__all__: list[str] = []
