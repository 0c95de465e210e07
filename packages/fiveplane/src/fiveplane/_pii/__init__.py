"""The data plane's machinery (private): configuration, payload walking, the Presidio engine,
recognizers for secrets, keyed operators (pseudonymization, hashing), minimization and streaming.

Only :mod:`._config`, :mod:`._walk`, :mod:`._crypto` and :mod:`._minimize` are importable without
Presidio and spaCy; :mod:`._engine`, :mod:`._recognizers` import them and are loaded lazily by
:class:`fiveplane._planes._data.DataPlane` (``pip install 'fiveplane[pii]'``).
"""

import os

# presidio-analyzer imports transformers when it is installed (it is, in dev, through
# presidio-evaluator); we use no transformer model, so keep its start-up advisory quiet.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
