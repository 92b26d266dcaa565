"""Torch threads of local evaluations: the default rule (the CPU share less the cores the load
average shows busy), an explicit count kept as given, and the Python API (``run_search`` with its
default executor) batching and threading as the ``search`` command does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tests.helpers.cli import run_cli
from tfg_search.run import threads
from tfg_search.run.coordinator import run_search
from tfg_search.run.executors import LocalExecutor, local
from tfg_search.run.settings import SearchSettings


@pytest.fixture
def torch_threads() -> Iterator[None]:
    """Whatever a test sets, the next test gets this process's thread count back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("share", "load", "expected"),
    [
        (2, 0.0, 2),  # idle: every core of the share
        (2, 0.49, 2),
        (2, 0.5, 1),  # half a core busy counts as one
        (2, 1.2, 1),  # another job on one core: the other core
        (2, 4.0, 1),  # overloaded: one thread, never 0
        (8, 2.6, 5),
        (8, 100.0, 1),
        (1, 0.0, 1),
        (4, -1.0, 4),  # a nonsense load reads as idle
    ],
)
def test_the_default_leaves_the_busy_cores_to_the_work_already_running(
    share: int, load: float, expected: int
) -> None:
    assert threads.default_threads(share, load) == expected


def test_the_default_is_read_from_this_machine_and_an_explicit_count_is_kept(
    monkeypatch: pytest.MonkeyPatch, torch_threads: None
) -> None:
    monkeypatch.setattr(threads, "load_average", lambda: 50.0)
    assert LocalExecutor().threads == 1 == torch.get_num_threads()
    assert LocalExecutor(threads=2).threads == 2 == torch.get_num_threads()  # kept under any load
    monkeypatch.setattr(threads, "load_average", lambda: 0.0)
    assert LocalExecutor().threads == threads.cpu_share() == torch.get_num_threads()
    assert LocalExecutor(threads=1).threads == 1 == torch.get_num_threads()


ARGS = dict(search="random", trials=6, wave=6, samples=4, final_samples=4, final_top=1, steps=2)
FLAGS = [
    "--search",
    "random",
    "--trials",
    "6",
    "--wave",
    "6",
    "--samples",
    "4",
    "--final-samples",
    "4",
    "--final-top",
    "1",
    "--steps",
    "2",
]  # fmt: skip  (ARGS as the command's flags)


@pytest.mark.parametrize("load", [0.0, 50.0])
def test_the_python_api_batches_and_threads_as_the_command_line(
    load: float, tmp_path, capsys, monkeypatch: pytest.MonkeyPatch, torch_threads: None
) -> None:
    """The same search from ``tfg-search search`` and from ``run_search(settings, storage)``: the
    same sampling batches (a wave of 6 in one batch, not 6 of one) and the same torch threads."""
    sizes: list[int] = []
    real = local.run_batch
    monkeypatch.setattr(local, "run_batch", lambda specs: sizes.append(len(specs)) or real(specs))
    monkeypatch.setattr(threads, "load_average", lambda: load)
    expected = threads.default_threads(threads.cpu_share(), load)

    def run(via_cli: bool) -> tuple[list[int], int]:
        sizes.clear()
        torch.set_num_threads(1 if expected > 1 else 2)  # not the default: the run must set it
        url = f"sqlite:///{tmp_path / ('cli.db' if via_cli else 'api.db')}"
        if via_cli:
            cmd = ["search", "--task", "gmm2d", "--target", "3", *FLAGS, "--storage", url]
            res = run_cli([*cmd, "--quiet", "--json"], capsys)
            assert res.code == 0, res.err
        else:
            assert run_search(SearchSettings("gmm2d", "3", **ARGS), url).n_final == 1
        return list(sizes), torch.get_num_threads()

    cli, api = run(via_cli=True), run(via_cli=False)
    assert cli == api == ([6, 1], expected)  # the wave in one batch, then the final re-run
