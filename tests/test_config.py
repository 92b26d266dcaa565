"""TFGConfig: validation, exact JSON round trip, and the presets of docs/algorithm.md, section 4."""

from __future__ import annotations

import json
import math

import pytest

from tfg_search import METHODS, TFGConfig


def test_defaults_are_unguided_ddpm_like() -> None:
    cfg = TFGConfig()
    assert (cfg.rho, cfg.mu, cfg.gamma) == (0.0, 0.0, 0.0)
    assert (cfg.rho_schedule, cfg.mu_schedule, cfg.gamma_schedule) == ("increase", "increase", "decrease")
    assert cfg.n_recur == 1 and cfg.n_mc == 1 and cfg.eta == 1.0 and cfg.clip_x0 is True
    assert not cfg.guided


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("rho", -0.1, "rho must be a finite number >= 0"),
        ("mu", math.nan, "mu must be a finite number >= 0"),
        ("gamma", math.inf, "gamma must be a finite number >= 0"),
        ("rho", "1", "rho must be a finite number >= 0"),
        ("n_recur", 0, "n_recur must be an integer >= 1"),
        ("n_iter", -1, "n_iter must be an integer >= 0"),
        ("n_mc", 0, "n_mc must be an integer >= 1"),
        ("n_recur", 1.5, "n_recur must be an integer >= 1"),
        ("n_iter", True, "n_iter must be an integer >= 0"),
        ("eta", 1.5, "eta must be a number in [0, 1]"),
        ("eta", -0.5, "eta must be a finite number >= 0"),
        ("rho_schedule", "linear", "rho_schedule must be one of increase, decrease, constant"),
        ("gamma_schedule", "Decrease", "gamma_schedule must be one of"),
        ("clip_x0", "yes", "clip_x0 must be true or false"),
    ],
)
def test_invalid_fields_raise_naming_field_and_range(field: str, value: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        TFGConfig(**{field: value})


def test_json_round_trip_is_exact() -> None:
    cfg = TFGConfig(
        rho=0.1 + 0.2,
        mu=1 / 3,
        gamma=1e-3,
        rho_schedule="decrease",
        mu_schedule="constant",
        gamma_schedule="increase",
        n_recur=4,
        n_iter=2,
        n_mc=3,
        eta=0.5,
        clip_x0=False,
    )
    back = TFGConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert back.rho == 0.1 + 0.2  # bit-exact float


def test_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown TFGConfig field"):
        TFGConfig.from_dict({"rho": 1.0, "rhoo": 2.0})


def test_integer_strengths_become_floats() -> None:
    cfg = TFGConfig(rho=2)
    assert isinstance(cfg.rho, float) and cfg.to_dict()["rho"] == 2.0


def test_frozen() -> None:
    cfg = TFGConfig()
    with pytest.raises(AttributeError):
        cfg.rho = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dps", dict(rho=0.5, mu=0.0, gamma=0.0, n_recur=1, n_iter=0)),
        ("lgd", dict(rho=0.5, mu=0.0, gamma=1.0, gamma_schedule="decrease", n_recur=1, n_iter=0, n_mc=4)),
        ("freedom", dict(rho=0.5, mu=0.0, gamma=0.0, n_recur=2, n_iter=0)),
        ("mpgd", dict(rho=0.0, mu=0.5, gamma=0.0, mu_schedule="constant", n_recur=1, n_iter=1)),
        ("ugd", dict(rho=0.5, mu=0.5, gamma=0.0, n_recur=2, n_iter=2)),
        ("tfg", dict(rho=0.5, mu=0.5)),
    ],
)
def test_presets_are_the_table_points(name: str, expected: dict[str, object]) -> None:
    cfg = TFGConfig.preset(name, 0.5)
    for field, value in expected.items():
        assert getattr(cfg, field) == value, (name, field)
    assert cfg.guided


def test_preset_table_matches_algorithm_doc_shape() -> None:
    # DPS / LGD / MPGD: no recurrence; FreeDoM / UGD: recurrence; only MPGD has no variance term.
    assert [TFGConfig.preset(m, 1.0).n_recur > 1 for m in ("dps", "lgd", "freedom", "mpgd", "ugd")] == [
        False,
        False,
        True,
        False,
        True,
    ]
    assert TFGConfig.preset("mpgd", 1.0).rho == 0.0
    assert set(METHODS) == {"tfg", "dps", "lgd", "freedom", "mpgd", "ugd"}


def test_preset_overrides_and_errors() -> None:
    assert TFGConfig.preset("freedom", 1.0, n_recur=4).n_recur == 4
    with pytest.raises(ValueError, match="unknown method 'dsp'"):
        TFGConfig.preset("dsp", 1.0)
    with pytest.raises(ValueError, match="strength must be a finite number >= 0"):
        TFGConfig.preset("dps", -1.0)
    with pytest.raises(ValueError, match="n_recur must be an integer >= 1"):
        TFGConfig.preset("dps", 1.0, n_recur=0)


def test_the_sampler_knows_the_same_schedules() -> None:
    """searchers stands alone (an OptunaHub package): its list must equal the guidance one."""
    from searchers import SCHEDULES
    from tfg_search import STRUCTURES

    assert SCHEDULES == STRUCTURES
