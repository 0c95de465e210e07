"""Network plane internals: URL canonicalization, address classification, egress rules, transports.

Private: the public names are re-exported from :mod:`fiveplane` and :mod:`fiveplane._planes._network`.
"""

__all__: list[str] = []
