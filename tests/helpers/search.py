"""Search settings shared by the coordinator tests (test_search.py) and the query tests (test_query.py)."""

from __future__ import annotations

SMALL = dict(samples=16, final_samples=32, final_top=2, steps=10, rounds=3, search="beam")
"""Keyword arguments of a small, fast gmm2d ``SearchSettings`` (16 samples, 10 steps, 3 rounds)."""
