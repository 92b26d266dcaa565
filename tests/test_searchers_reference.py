"""Tests of the independent reference beam search itself (tests/helpers/beam_reference.py)."""

from __future__ import annotations

from tests.helpers.beam_reference import (
    DEFAULT,
    failing,
    plateau,
    reference_search,
    rugged,
    spread,
    unimodal,
)


def test_reference_round_zero_and_order() -> None:
    configs = reference_search(DEFAULT, 2, 1, unimodal)
    assert configs == [
        {"rho": 0.25, "mu": 0.25, "gamma": 0.001},
        {"rho": 0.5, "mu": 0.25, "gamma": 0.001},
        {"rho": 0.25, "mu": 0.5, "gamma": 0.001},
        {"rho": 0.25, "mu": 0.25, "gamma": 0.01},
    ]


def test_worst_case_bound() -> None:
    # The design's bound 4 + 5 x 2 x 3 = 34 is not attained by the default space: in round 1
    # two beam members from round 0 share a neighbour (or one of them is the start point, whose
    # neighbours are all evaluated), so at most 4 + 5 + 4 x 6 = 33; `rugged` attains it.
    assert len(reference_search(DEFAULT, 2, 6, rugged)) == 33
    for score in (unimodal, plateau, spread, failing, rugged):
        for direction in ("maximize", "minimize"):
            assert len(reference_search(DEFAULT, 2, 6, score, direction)) <= 4 + 5 * 2 * 3


def test_reference_finds_unimodal_optimum() -> None:
    configs = reference_search(DEFAULT, 2, 10, unimodal)
    best = max(configs, key=unimodal)
    assert best == {"rho": 4.0, "mu": 2.0, "gamma": 0.01}
