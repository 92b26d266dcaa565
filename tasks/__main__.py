"""``python -m tasks``: rewrite ``tasks/catalog.json`` from the bundled tasks' classes."""

from __future__ import annotations

import sys

from tasks.registry import write_catalog

if __name__ == "__main__":
    print(f"wrote {write_catalog()}", file=sys.stderr)
