"""Build localrouter/catalog/catalog.json.gz from the public snapshots in scripts/catalog-sources
(OpenRouter, models.dev, LiteLLM's cost map).

python scripts/build_catalog.py            # writes the package-data file
python scripts/build_catalog.py --check    # exit 1 if the committed file differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from localrouter.catalog.build import build_catalog, serialise

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "scripts" / "catalog-sources"
OPENROUTER = "openrouter-models-2026-05-15.json"
MODELS_DEV = "models-dev-api-2026-06-13.json"
LITELLM = "litellm-model-prices-1.106.2.json"
TARGET = ROOT / "localrouter" / "catalog" / "catalog.json.gz"


def built() -> bytes:
    document = build_catalog(
        orjson.loads((SOURCES / OPENROUTER).read_bytes()),
        orjson.loads((SOURCES / MODELS_DEV).read_bytes()),
        {"openrouter": OPENROUTER, "models_dev": MODELS_DEV, "litellm": LITELLM},
        orjson.loads((SOURCES / LITELLM).read_bytes()),
    )
    return serialise(document)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    data = built()
    if args.check:
        same = TARGET.exists() and TARGET.read_bytes() == data
        print("catalog is up to date" if same else "catalog differs: run scripts/build_catalog.py")
        return 0 if same else 1
    TARGET.write_bytes(data)
    print(f"wrote {TARGET.relative_to(ROOT)} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
