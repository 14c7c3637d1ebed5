"""Snippet size: static/comet.min.js raw and gzipped, against the 3,000-byte gzipped budget.

Built from the modules in static/src/ by scripts/build-snippet. Gzip at level 9, as the relay
compresses it for the wire (relay/browser.py).

    python bench/snippet_size.py [--out bench/results/snippet_size.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = ROOT / "static" / "comet.min.js"
BUDGET = 3000  # gzipped bytes (issue 4); the aim is 2,000


def measure(path: Path = SNIPPET) -> dict[str, float]:
    """Raw and gzipped bytes of `path`, and the gzipped size as a share of the budget."""
    raw = path.read_bytes()
    gzipped = len(gzip.compress(raw, compresslevel=9, mtime=0))
    return {"raw": len(raw), "gzip": gzipped, "budget": BUDGET, "ratio": round(gzipped / BUDGET, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "snippet_size.json"))
    args = parser.parse_args()
    size = measure()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(size, indent=2) + "\n")
    print(f"{SNIPPET.relative_to(ROOT)}: {size['raw']} bytes raw, {size['gzip']} bytes gzipped")
    print(f"gzipped / budget ({BUDGET} bytes) = {size['ratio']:.2f}")


if __name__ == "__main__":
    main()
