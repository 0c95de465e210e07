"""Presidio and spaCy stay optional: ``import fiveplane`` works without them, and constructing the
data plane fails with a fix-it ImportError (A7 pattern 6)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = textwrap.dedent(
    """
    import sys

    class Block:
        BLOCKED = ("presidio_analyzer", "presidio_anonymizer", "spacy", "thinc", "tldextract")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_core_imports_without_presidio_or_spacy() -> None:
    proc = run(
        """
        import fiveplane
        from fiveplane import Governor, MediationPoint
        from fiveplane._planes._data import DataPlane, DataPlaneConfig, StreamBlocked
        cfg = DataPlaneConfig.model_validate({"rules": [{"id": "r", "entities": {"PERSON": "pseudonymize", "SECRETS": "block"}}]})
        assert cfg.rules[0].entities["API_KEY"].action == "block"
        for name in ("presidio_analyzer", "presidio_anonymizer", "spacy"):
            assert name not in sys.modules, name
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_data_plane_construction_says_how_to_fix() -> None:
    proc = run(
        """
        from fiveplane._planes._data import DataPlane
        try:
            DataPlane()
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("no ImportError")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'fiveplane[pii]'" in proc.stdout
    assert "presidio_analyzer" in proc.stdout


def test_a_pack_with_a_data_section_fails_clearly_without_presidio() -> None:
    proc = run(
        """
        from fiveplane import Governor, PolicyError
        try:
            Governor("tests/data_plane/packs/sales-support-data.yaml")
        except PolicyError as exc:   # a core that does not install planes from the pack
            print(exc.errors)
        except ImportError as exc:   # a core that does (the plane registry): the fix-it message
            print(exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'fiveplane[pii]'" in proc.stdout or "configures plane 'data', which is not installed" in proc.stdout
