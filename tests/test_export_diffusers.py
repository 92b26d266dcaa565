"""``tfg-search export --format diffusers``: the answer as ``tfg_config.json`` (diffusers' config
format) with what it is for, written without torch, never over an existing file without --force."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.helpers.cli import CliResult, run_cli
from tfg_search.guidance.config import TFGConfig
from tfg_search.guidance.config_file import CONFIG_NAME
from tfg_search.run.coordinator import run_search
from tfg_search.run.executors import Executor
from tfg_search.run.settings import SearchSettings
from tfg_search.store import query
from tfg_search.trial import TrialOutcome, TrialSpec


class Synthetic(Executor):
    """Metrics from the configuration at once (no model): a study in a second."""

    name = "synthetic"

    def map(self, specs: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        for spec in specs:
            c = spec.config
            value = 1 / (1 + (c.rho - 0.03) ** 2 + (c.mu - 0.05) ** 2)
            metrics = {"validity": value, "fidelity": value, "sw": 1 - value}  # gmm2d's objective
            yield TrialOutcome(spec.number, metrics, None, 0.0, "cpu", "q")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('export') / 'studies.db'}"
    settings = SearchSettings(
        task="gmm2d", target="3", search="beam", rounds=2, samples=16, final_samples=32, steps=10
    )
    run_search(settings, url, "answer", Synthetic())
    return url


def _export(url: str, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> CliResult:
    args = ["export", "--study", "answer", "--storage", url, "--format", "diffusers", "--out", str(out)]
    return run_cli([*args, *extra], capsys)


def test_the_answer_is_written_as_tfg_config_json(study: str, tmp_path: Path, capsys) -> None:
    res = _export(study, tmp_path / "answer", capsys)
    assert res.code == 0, res.err
    payload = query.best_payload(study, "answer")
    config, metadata = TFGConfig.from_pretrained(tmp_path / "answer", return_metadata=True)
    assert config == TFGConfig.from_dict(payload["config"])
    assert metadata == {
        "study": "answer",
        "task": "gmm2d",
        "target": "3",
        "task_options": {},
        "num_inference_steps": 10,
        "model_identity": payload.get("model_identity"),
        "metrics": payload["metrics"],
    }
    body = json.loads((tmp_path / "answer" / CONFIG_NAME).read_text())
    assert body["_class_name"] == "TFGConfig" and "_diffusers_version" in body  # diffusers' format


def test_it_writes_into_a_model_folder_and_never_over_a_config_without_force(
    study: str, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "pipeline"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    assert _export(study, folder, capsys).code == 0
    file = folder / CONFIG_NAME
    file.write_text('{"mine": 1}\n')
    refused = _export(study, folder, capsys)
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1
    assert "exists; pass --force" in refused.err and file.read_text() == '{"mine": 1}\n'
    assert _export(study, folder, capsys, "--force").code == 0
    assert TFGConfig.from_pretrained(folder) == TFGConfig.from_dict(
        query.best_payload(study, "answer")["config"]
    )
    assert (folder / "model_index.json").read_text() == "{}"  # the rest of the folder untouched


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "onnx"], "--format must be one of json, diffusers"),
        (["--format", "diffusers", "--out", "{file}"], "is a file; --format diffusers writes into a folder"),
        (["--format", "diffusers", "--out", "{tmp}/no/such/answer"], "does not exist; create it"),
    ],
)
def test_bad_exports_are_one_line(study: str, tmp_path: Path, capsys, args: list[str], message: str) -> None:
    file = tmp_path / "taken.txt"
    file.write_text("x")
    argv = [a.format(file=file, tmp=tmp_path) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "x")]
    res = run_cli(["export", "--study", "answer", "--storage", study, *argv], capsys)
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1 and message in res.err
    assert file.read_text() == "x" and not (tmp_path / "x").exists()


PROBE = (
    "import sys\nfrom tfg_search.cli import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
    "assert 'torch' not in sys.modules\n"
)


def test_export_as_diffusers_imports_no_torch(study: str, tmp_path: Path) -> None:
    argv = [
        "export",
        "--study",
        "answer",
        "--storage",
        study,
        "--format",
        "diffusers",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / CONFIG_NAME).is_file()
