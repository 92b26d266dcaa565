"""``python -m tfg_search`` is the ``tfg-search`` command."""

from __future__ import annotations

from tfg_search.cli import main

if __name__ == "__main__":
    main()
