"""Optuna's private fields that tfg-search reads, checked against the installed Optuna.

Every such read goes through ``searchers/optuna_internals.py``; these tests pin what each of its
functions relies on, so that an Optuna release that changes one fails here, naming the Optuna
version and the field, rather than inside a search. The last tests check that no other library
module reads Optuna's private fields or imports another module's private names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from searchers import optuna_internals as internals

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("searchers", "tfg_search", "tasks")
VERSION = f"Optuna {optuna.__version__}"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def changed(what: str) -> str:
    return f"{VERSION}: {what} no longer holds; adapt searchers/optuna_internals.py to this version"


@pytest.fixture(params=["inmemory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> BaseStorage:
    if request.param == "inmemory":
        return InMemoryStorage()
    return RDBStorage(f"sqlite:///{tmp_path / 'internals.db'}")


@pytest.fixture
def study(storage: BaseStorage) -> optuna.Study:
    # A first study with trials, so that study and trial ids differ from names and numbers.
    other = optuna.create_study(study_name="other", storage=storage)
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    study = optuna.create_study(study_name="main", storage=storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    return study


def test_storage_is_the_storage_the_study_uses(study: optuna.Study, storage: BaseStorage) -> None:
    found = internals.storage(study)  # an RDBStorage comes back wrapped in Optuna's cache
    assert isinstance(found, BaseStorage), changed("Study._storage is a BaseStorage")
    assert found.get_study_id_from_name("main") == storage.get_study_id_from_name("main")
    trial = study.ask()
    assert trial.storage is found, changed("Trial.storage (public) is the study's Study._storage")
    found.set_trial_user_attr(internals.trial_id(trial), "k", 1)
    assert study.trials[-1].user_attrs == {"k": 1}, changed("writes through Study._storage")


def test_study_id_of_study_and_frozen_study(study: optuna.Study, storage: BaseStorage) -> None:
    expected = storage.get_study_id_from_name("main")
    assert internals.study_id(study) == expected, changed("Study._study_id is the storage's study id")
    frozen = {s.study_name: s for s in storage.get_all_studies()}  # FrozenStudy objects
    assert set(frozen) == {"main", "other"}
    for name, s in frozen.items():
        assert internals.study_id(s) == storage.get_study_id_from_name(name), changed(
            "FrozenStudy._study_id is the storage's study id"
        )


def test_trial_id_of_trial_and_frozen_trial(study: optuna.Study, storage: BaseStorage) -> None:
    sid = internals.study_id(study)
    live = study.ask()
    for trial in [*study.get_trials(deepcopy=False), live]:
        expected = storage.get_trial_id_from_study_id_trial_number(sid, trial.number)
        assert internals.trial_id(trial) == expected, changed(
            f"{type(trial).__name__}._trial_id is the storage's trial id"
        )
    frozen = study.trials[0]
    copy = FrozenTrial(
        number=frozen.number,
        state=TrialState.RUNNING,
        value=None,
        values=None,
        datetime_start=frozen.datetime_start,
        datetime_complete=None,
        params=frozen.params,
        distributions=frozen.distributions,
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=internals.trial_id(frozen),
    )
    assert internals.trial_id(copy) == internals.trial_id(frozen), changed("FrozenTrial(trial_id=...)")


def test_study_system_attrs_round_trip(study: optuna.Study, storage: BaseStorage) -> None:
    internals.set_study_system_attr(study, "tfg:test", {"a": [1, 2]})
    assert internals.study_system_attrs(study)["tfg:test"] == {"a": [1, 2]}, changed("study system attrs")
    assert storage.get_study_system_attrs(storage.get_study_id_from_name("main"))["tfg:test"] == {"a": [1, 2]}
    other = optuna.load_study(study_name="other", storage=storage)
    assert "tfg:test" not in internals.study_system_attrs(other), changed("study system attrs per study")


def test_all_trials_reads_every_trial_of_the_study(study: optuna.Study) -> None:
    study.ask()
    trials = internals.all_trials(study)
    assert [t.number for t in trials] == [0, 1, 2], changed("storage.get_all_trials(Study._study_id)")
    assert all(isinstance(t, FrozenTrial) for t in trials)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]


class _Recorder(optuna.samplers.RandomSampler):
    """A sampler that notes the trials its before_trial saw."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.before: list[int] = []

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.before.append(trial.number)


def test_new_trial_is_made_as_ask_makes_it_less_the_queue(storage: BaseStorage) -> None:
    sampler = _Recorder()
    study = optuna.create_study(study_name="queue", storage=storage, sampler=sampler)
    asked = study.ask()
    made = internals.new_trial(study)
    assert isinstance(made, optuna.Trial) and made.study is study and made.storage is internals.storage(study)
    assert (asked.number, made.number) == (0, 1), changed("trial numbers of ask and create_new_trial")
    assert sampler.before == [0, 1], changed("the optuna.Trial constructor runs the sampler's before_trial")
    made.suggest_float("x", 0, 1)
    study.tell(made, 0.5)
    assert study.trials[1].state == TrialState.COMPLETE and study.trials[1].params == made.params
    study.enqueue_trial({"x": 0.25})  # a queued trial is left for ask, not taken
    made = internals.new_trial(study)
    assert [t.state for t in study.trials] == [
        TrialState.RUNNING,
        TrialState.COMPLETE,
        TrialState.WAITING,
        TrialState.RUNNING,
    ]
    assert study.ask().number == 2, changed("Study.ask takes the queued trial")


@pytest.mark.parametrize(
    ("distribution", "inside", "outside"),
    [
        (FloatDistribution(0.25, 8.0, log=True), [0.25, 2.0, 8.0], [0.2, 8.5]),
        (FloatDistribution(0.0, 1.0), [0.0, 0.001, 1.0], [-0.1, 1.5]),
        (FloatDistribution(0.0, 1.0, step=0.25), [0.0, 0.5, 1.0], [0.3, 1.25]),
        (IntDistribution(1, 9, step=2), [1, 3, 9], [4, 11]),
        (CategoricalDistribution(["increase", "decrease"]), ["increase", "decrease"], []),
    ],
)
def test_contains(distribution, inside: list, outside: list) -> None:
    for value in inside:
        assert internals.contains(distribution, value), changed(f"{distribution}._contains({value!r})")
    for value in outside:
        assert not internals.contains(distribution, value), changed(f"{distribution}._contains({value!r})")


def test_a_missing_field_names_the_optuna_version() -> None:
    with pytest.raises(internals.OptunaInternalsError, match=rf"Optuna {optuna.__version__} has no object\."):
        internals.study_id(object())  # type: ignore[arg-type]


# ------------------------------------------------------------- public behaviour relied upon instead


def test_stop_raises_runtime_error_outside_optimize_and_stops_inside() -> None:
    study = optuna.create_study()
    with pytest.raises(RuntimeError):  # searchers/base.py's _stop suppresses exactly this
        study.stop()

    def objective(trial: optuna.Trial) -> float:
        trial.study.stop()
        return 0.0

    study.optimize(objective, n_trials=5)
    assert len(study.trials) == 1, changed("Study.stop() inside optimize stops the loop")


def test_directions_tell_multi_objective() -> None:
    assert len(optuna.create_study().directions) == 1, changed("Study.directions")
    assert len(optuna.create_study(directions=["minimize", "maximize"]).directions) == 2


# ------------------------------------------------------------- no other module reads them


def _library_files() -> list[Path]:
    return sorted(p for package in LIBRARY for p in (ROOT / package).rglob("*.py"))


def _optuna_private_names() -> set[str]:
    """Private (single-underscore) attribute names of Optuna's studies, trials, storages and
    distributions, from the classes and from live instances."""
    study = optuna.create_study(storage=InMemoryStorage())
    trial = study.ask()
    study.tell(trial, 1.0)
    objects: list[object] = [
        study,
        trial,
        study.trials[0],
        internals.storage(study).get_all_studies()[0],
        internals.storage(study),
        FloatDistribution(0, 1),
        IntDistribution(0, 1),
        CategoricalDistribution([0, 1]),
        RDBStorage,
        optuna.samplers.BaseSampler,
        optuna.samplers.RandomSampler(),
    ]
    names: set[str] = set()
    for obj in objects:
        names.update(dir(obj))
        names.update(getattr(obj, "__dict__", {}))
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_only_the_adapter_reads_optuna_private_fields() -> None:
    private = _optuna_private_names()
    assert {"_storage", "_study_id", "_trial_id", "_contains"} <= private, changed("the private names")
    adapter = ROOT / "searchers" / "optuna_internals.py"
    found = []
    for path in _library_files():
        if path == adapter:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            name = None
            if isinstance(node, ast.Attribute) and node.attr in private:
                is_own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                name = None if is_own else node.attr
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr")
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in private
            ):
                name = node.args[1].value
            if name is not None:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{name}")
    assert not found, (
        f"{VERSION}: these read Optuna's private fields outside searchers/optuna_internals.py; "
        "route them through it:\n" + "\n".join(found)
    )


def _private_imports(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                names = [module, *(a.name for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if any(part.startswith("_") and not part.startswith("__") for part in name.split(".")):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    return found


@pytest.mark.parametrize(
    "package",
    [
        "searchers",
        "tfg_search",
        "tasks",
    ],
)
def test_no_library_module_imports_private_names(package: str) -> None:
    found = _private_imports(package)
    assert not found, "private names imported from another module:\n" + "\n".join(found)
