"""Regenerate the benchmark tables of docs/benchmarks.md and docs/reproduction.md from bench/results/.

    python bench/make_tables.py            # rewrite the marked tables in place
    python bench/make_tables.py --check    # exit 1 when a table is not what the committed results give

The tables sit between ``<!-- table:... -->`` / ``<!-- /table -->`` markers (see medanomaly.evaluation.bench_docs);
the published numbers we compare against are in bench/published.csv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medanomaly.evaluation.bench_docs import update_documents

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "docs" / "benchmarks.md", REPO / "docs" / "reproduction.md"]


def main() -> int:
    """Rewrite (or check) every generated table; exit 1 under --check when one is stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale tables, change nothing")
    args = parser.parse_args()
    documents = [path for path in DOCUMENTS if path.is_file()]
    changed = update_documents(documents, REPO / "bench" / "results", REPO / "bench" / "published.csv", args.check)
    for path in changed:
        print(f"{'stale' if args.check else 'updated'}: {path.relative_to(REPO)}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
