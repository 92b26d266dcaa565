"""searchers/ is also an OptunaHub package: loaded with optunahub, it runs the same search.

``optunahub.load_local_module`` imports the folder under another module name
(``optunahub_registry.package.searchers``), so this also checks that the package's imports are
relative and that it needs nothing from tfg_search (see searchers/README.md).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import optuna
import pytest
import yaml

import searchers

optunahub = pytest.importorskip("optunahub", reason="optunahub is in the dev extra")

ROOT = Path(__file__).resolve().parents[1]
HUB_NAME = "optunahub_registry.package.searchers"

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def hub_module() -> Iterator[ModuleType]:
    before = set(sys.modules)
    module = optunahub.load_local_module(package="searchers", registry_root=str(ROOT))
    yield module
    for name in set(sys.modules) - before:
        if name.startswith(HUB_NAME):
            del sys.modules[name]


def objective(trial: optuna.Trial) -> float:
    rho = trial.suggest_float("rho", 0.25, 8.0, log=True)
    mu = trial.suggest_float("mu", 0.25, 8.0, log=True)
    gamma = trial.suggest_float("gamma", 0.001, 1.0, log=True)
    return -((rho - 2.0) ** 2) - (mu - 1.0) ** 2 - abs(gamma - 0.01)


def run(package: ModuleType, url: str) -> optuna.Study:
    space = {
        "rho": package.Lattice(0.25, 2.0, 8.0),
        "mu": package.Lattice(0.25, 2.0, 8.0),
        "gamma": package.Lattice(0.001, 10.0, 1.0),
    }
    sampler = package.TFGBeamSampler(space=space, top_k=2, max_rounds=6)
    study = optuna.create_study(storage=url, direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=100)  # the sampler stops the study well before
    assert sampler.is_exhausted(study)
    return study


def test_load_local_module_imports_the_checkout_under_the_hub_name(hub_module: ModuleType) -> None:
    assert hub_module.__name__ == HUB_NAME
    assert Path(hub_module.__file__).resolve() == ROOT / "searchers" / "__init__.py"
    # A separate copy of the package (relative imports), not the installed `searchers`.
    assert hub_module.TFGBeamSampler is not searchers.TFGBeamSampler
    assert hub_module.TFGBeamSampler.__module__ == f"{HUB_NAME}.beam"
    assert sys.modules[f"{HUB_NAME}.planner"].plan_round is not None
    assert set(searchers.__all__) <= set(dir(hub_module))
    with pytest.raises(TypeError, match=r"searchers\.Lattice"):  # each copy wants its own Lattice
        hub_module.TFGBeamSampler(space={"rho": searchers.Lattice(0.25, 2.0, 8.0)})


def test_hub_sampler_runs_the_same_search_to_exhaustion(hub_module: ModuleType, tmp_path: Path) -> None:
    hub = run(hub_module, f"sqlite:///{tmp_path / 'hub.db'}")
    local = run(searchers, f"sqlite:///{tmp_path / 'local.db'}")
    assert hub.best_params == local.best_params == {"rho": 2.0, "mu": 1.0, "gamma": 0.01}
    assert [t.params for t in hub.trials] == [t.params for t in local.trials]
    assert len(hub.trials) == len(local.trials) > 7  # more than round 0: the beam moved


def test_registry_files() -> None:
    """The files an OptunaHub registry package has, with the README front matter it checks."""
    folder = ROOT / "searchers"
    assert (folder / "LICENSE").read_text().strip()
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n"), "README.md must start with front matter"
    front = yaml.safe_load(text.split("---\n", 2)[1])
    for field in ("author", "title", "description", "tags", "optuna_versions", "license"):
        assert front.get(field), f"README.md front matter lacks {field!r}"
    assert "sampler" in front["tags"], "a package under samplers/ must have the tag 'sampler'"


def _examples() -> list[str]:
    text = (ROOT / "searchers" / "README.md").read_text()
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


@pytest.mark.parametrize("index", [0, 1], ids=["rungs", "beam"])
def test_the_readme_examples_run_through_optunahub(
    index: int, hub_module: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each example of the OptunaHub page runs (the registry's download replaced by this checkout)
    and prints what its comments say."""
    code = _examples()[index]
    assert 'optunahub.load_module("samplers/tfg_lattice")' in code
    monkeypatch.setattr(optunahub, "load_module", lambda name: hub_module)
    exec(compile(code, f"README example {index}", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    said = [line.split("# ", 1)[1].split(" (")[0] for line in code.splitlines() if line.startswith("print(")]
    assert printed == said


def test_the_dependencies_are_declared() -> None:
    """Every module the package imports is the standard library's, its own, or in requirements.txt."""
    declared = {
        line.split(">")[0].split("=")[0].strip()
        for line in (ROOT / "searchers" / "requirements.txt").read_text().splitlines()
        if line.strip()
    }
    imported = set()
    for file in (ROOT / "searchers").glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    assert imported - sys.stdlib_module_names - {"__future__"} == declared
