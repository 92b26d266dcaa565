"""Build the tabular shapes benchmark (``benchmarks/_table.py``): the search pool and judged finals.

Run:
    python benchmarks/shapes_table.py pool --targets cyan-triangle --chunks 2
    python benchmarks/shapes_table.py final --targets cyan-triangle --keys 3,5,-1 --reseeds 0
    python benchmarks/shapes_table.py top --targets cyan-triangle --top 16 --reseeds 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from _common import log
from _replay import pool_score
from _table import STRUCTURE, Table, final_seeds

from tasks.shapes_data import all_targets

LADDER_PAIRS = (
    "cyan-triangle",
    "yellow-triangle",
    "blue-square",
    "magenta-circle",
    "green-circle",
    "red-triangle",
)
"""The six rare pairs of benchmarks/shapes_ladder.py."""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("pool", "final", "top", "compact"))
    parser.add_argument("--targets", default=",".join(LADDER_PAIRS))
    parser.add_argument("--chunks", type=int, default=2, help="pool: chunk seeds 0..CHUNKS-1 of every point")
    parser.add_argument("--keys", default="", help="final: keys as r,m,g;r,m,g")
    parser.add_argument("--reseeds", default="0", help="final: reseeds, comma list")
    parser.add_argument("--top", type=int, default=16, help="top: judge the TOP best points of the pool")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for target in args.targets.split(","):
        if target not in all_targets():
            raise SystemExit(f"unknown target {target!r}")
        table = Table(target)
        if args.what == "pool":
            keys = table.grid_keys()
            table.build([(k, j) for j in range(args.chunks) for k in keys])
        elif args.what == "final":
            keys = [tuple(int(x) for x in k.split(",")) for k in args.keys.split(";") if k]
            seeds = [s for r in args.reseeds.split(",") for s in final_seeds(int(r))]
            table.build([(k, s) for k in keys for s in seeds])
        elif args.what == "top":
            pool = table.grid_keys()
            ranked = sorted(pool, key=lambda k: (-pool_score(table, k, target), k))[: args.top]
            seeds = [s for r in args.reseeds.split(",") for s in final_seeds(int(r))]
            table.build([(k, s) for k in ranked for s in seeds])
        else:
            table.compact()
        log(f"{target}: {len(table)} chunks in the table ({STRUCTURE})")


if __name__ == "__main__":
    main()
