"""``python -m llama_index.tools.fiveplane [--json] [--policy PACK]``: the LlamaIndex demo.

The same as ``fiveplane demo --framework llamaindex``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._cli import run_demo_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llama_index.tools.fiveplane", description="Run the LlamaIndex demo offline.")
    parser.add_argument(
        "--policy", "-p", type=Path, default=None, help="policy pack (default: policies/examples/rag-assistant.yaml)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per step")
    args = parser.parse_args(argv)
    return run_demo_cli(args.policy, json_out=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
