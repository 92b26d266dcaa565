"""Everything that needs a GPU, in one call of at most 5 minutes: CUDA tests, two searches, the step cost.

Run on a machine with a CUDA device, from the repository root (nothing is downloaded; docs/benchmarks.md,
section 6, says how to bring the packages a bare GPU machine lacks):

    python benchmarks/gpu_check.py                       # writes benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --out /tmp/gpu.json --budget-s 200

Parts, each stopped at its time budget (what is left of ``--budget-s`` less the shares of the parts
after it) and recorded as passed, failed or timed out; the JSON is rewritten after every part, so a
part that hangs or a run cut short still leaves the parts before it:

* ``cuda-tests``: ``pytest -m cuda tests/test_gpu.py`` in this process (each test's outcome);
* ``search-shapes``, ``search-shapes-latent``: a short ``tfg-search search`` of each task on the device
  (the default rung search with small ``--samples``/``--final-samples``/``--steps``, the in-process
  executor, a fresh SQLite file in a temporary folder), its answer, trials, passes and wall time;
* ``step-cost-float32``, ``step-cost-float16``: ``benchmarks/step_cost.py`` on the device (trial time
  against the compute floor, CUDA peak memory against ``Task.batch_bytes``, shapes-latent's full
  decoder against gradient checkpointing), its whole result.

Without a CUDA device it says so in one line and exits 2 (nothing written). ``--device cpu`` is a
dry run of the same parts on the CPU with tiny sizes, for testing this script (``--out`` required).
Exit code: 0 when every part passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_json

STARTED = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]

PARTS: dict[str, float] = {
    "cuda-tests": 40,
    "search-shapes": 45,
    "search-shapes-latent": 45,
    "step-cost-float32": 70,
    "step-cost-float16": 70,
}
"""Each part's share of the default budget (seconds); a part also gets what the parts before it
left unused."""
GRACE_S = 10.0
"""How long a stopped part's process gets to exit after SIGTERM before it is killed."""
SIZES = {
    "cuda": {
        "search": ["--samples", "8", "--final-samples", "32", "--steps", "10"],
        "step_cost": [
            *("--repeats", "2", "--latent-samples", "64", "--latent-steps", "20"),
            *("--memory-samples", "256", "--pass-seconds", "0.2"),
        ],
    },
    "cpu": {
        "search": ["--samples", "2", "--final-samples", "2", "--steps", "2"],
        "step_cost": [
            *("--samples", "2", "--steps", "2", "--repeats", "1", "--pass-seconds", "0.02"),
            *("--latent-samples", "2", "--latent-steps", "2"),
        ],
    },
}
"""Sizes per device type: short on a GPU, tiny in the CPU dry run."""
TARGETS = {"shapes": "cyan-triangle", "shapes-latent": "cyan-triangle"}


class PartTimeout(Exception):
    """A part ran past its budget (its output so far, and what it had finished when it has a part)."""

    def __init__(self, output: str, partial: dict[str, Any] | None = None) -> None:
        super().__init__(output)
        self.partial = partial


@contextlib.contextmanager
def alarm(seconds: float) -> Iterator[dict[str, bool]]:
    """Interrupt this process's main thread after ``seconds`` (as Ctrl-C would: pytest then stops its
    session and returns); ``fired`` says whether it did."""
    state = {"fired": False}

    def handler(signum: int, frame: Any) -> None:
        state["fired"] = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield state
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_command(cmd: list[str], budget_s: float) -> tuple[int, str, str]:
    """Run ``cmd`` from the repository root in its own process group (its workers too); past
    ``budget_s`` the group gets SIGTERM, then SIGKILL after :data:`GRACE_S`.

    Returns:
        (exit code, stdout, stderr).

    Raises:
        PartTimeout: the budget ran out (with the output so far as its message).
    """
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=os.setpgrp,  # a group of its own, in this session: ended with this process
    )
    try:
        out, err = proc.communicate(timeout=max(budget_s, 0.01))
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        raise PartTimeout(f"{out or ''}\n{err or ''}") from None


def _tail(text: str, chars: int = 4000) -> str:
    return text[-chars:]


# -- the parts ---------------------------------------------------------------------------------------
class _Outcomes:
    """A pytest plugin that keeps each test's outcome."""

    def __init__(self) -> None:
        self.tests: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when != "call" and report.passed:
            return
        outcome = "xfailed" if hasattr(report, "wasxfail") and report.skipped else report.outcome
        entry: dict[str, Any] = {"outcome": outcome, "duration_s": round(report.duration, 3)}
        if report.failed or report.skipped:
            text = str(report.longrepr) if report.longrepr is not None else ""
            entry["message"] = _tail(text, 1500)
        self.tests[report.nodeid] = entry


def cuda_tests(budget_s: float, device: str) -> dict[str, Any]:
    """``pytest -m cuda tests/test_gpu.py`` in this process."""
    import pytest

    plugin = _Outcomes()
    args = [str(ROOT / "tests" / "test_gpu.py"), "-m", "cuda", "-q", "--rootdir", str(ROOT)]
    args += ["-p", "no:cacheprovider", "-p", "no:timeout"]  # pytest-timeout would take over SIGALRM
    with alarm(budget_s) as state:
        try:
            code = pytest.main(args, plugins=[plugin])
        except KeyboardInterrupt:  # the alarm, outside pytest's own handling of it
            if not state["fired"]:
                raise
            code = pytest.ExitCode.INTERRUPTED
    counts: dict[str, int] = {}
    for entry in plugin.tests.values():
        counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
    if state["fired"]:
        raise PartTimeout(json.dumps({"counts": counts, "tests": plugin.tests}))
    return {
        "status": "passed" if int(code) == 0 and not counts.get("failed") else "failed",
        "pytest_exit_code": int(code),
        "counts": counts,
        "tests": plugin.tests,
    }


def search(task: str, budget_s: float, device: str) -> dict[str, Any]:
    """A short default search of ``task`` on ``device`` through the command line, in a temporary folder."""
    from step_cost import latent_task_options

    with tempfile.TemporaryDirectory() as tmp, latent_task_options(task) as (options, weights):
        cmd = [sys.executable, "-m", "tfg_search", "search", "--task", task, "--target", TARGETS[task]]
        cmd += [*SIZES[_kind(device)]["search"], "--device", device, "--storage", f"sqlite:///{tmp}/gpu.db"]
        cmd += ["--out-dir", f"{tmp}/out", "--json", "--quiet"]
        cmd += [f"--task-option={key}={value}" for key, value in options.items()]
        code, out, err = run_command(cmd, budget_s)
        shown = _shown(cmd, {tmp: "<tmp>", **{v: "<untrained weights>" for v in options.values()}})
    part: dict[str, Any] = {"command": shown, "weights": weights, "exit_code": code}
    if code != 0:
        return {**part, "status": "failed", "output_tail": _tail(f"{out}\n{err}")}
    report = json.loads(out)
    keep = ("study", "best", "trials", "wall_time_s", "compute")
    return {**part, "status": "passed", "result": {k: report.get(k) for k in keep}}


def step_cost(dtype: str, budget_s: float, device: str) -> dict[str, Any]:
    """``benchmarks/step_cost.py`` on ``device`` in ``dtype`` (its JSON, less the machine)."""
    with tempfile.TemporaryDirectory() as tmp:
        out_json = Path(tmp) / "step_cost.json"
        cmd = [sys.executable, "benchmarks/step_cost.py", "--device", device, "--dtype", dtype]
        cmd += [*SIZES[_kind(device)]["step_cost"], "--out", str(out_json)]
        try:
            code, out, err = run_command(cmd, budget_s)
        except PartTimeout as stop:  # keep the sections it finished
            done = out_json.with_name(out_json.name + ".partial.tmp")
            raise PartTimeout(str(stop), _without_machine(done)) from None
        part: dict[str, Any] = {"command": _shown(cmd, {tmp: "<tmp>"}), "exit_code": code}
        if code != 0 or not out_json.is_file():
            return {**part, "status": "failed", "output_tail": _tail(f"{out}\n{err}")}
        result = _without_machine(out_json)
    return {**part, "status": "passed", "result": result}


def _without_machine(path: Path) -> dict[str, Any] | None:
    """A step-cost JSON less its machine (this run's is recorded once), None when there is none."""
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    result.pop("machine", None)
    return result


def _kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def _shown(cmd: list[str], names: dict[str, str]) -> list[str]:
    """The command as recorded: ``python`` for the interpreter, temporary paths by ``names``."""
    shown = ["python", *cmd[1:]]
    for path, name in names.items():
        shown = [arg.replace(path, name) for arg in shown]
    return shown


RUNNERS: dict[str, Callable[[float, str], dict[str, Any]]] = {
    "cuda-tests": cuda_tests,
    "search-shapes": lambda budget, device: search("shapes", budget, device),
    "search-shapes-latent": lambda budget, device: search("shapes-latent", budget, device),
    "step-cost-float32": lambda budget, device: step_cost("float32", budget, device),
    "step-cost-float16": lambda budget, device: step_cost("float16", budget, device),
}


# -- the run -----------------------------------------------------------------------------------------
def device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": device, "torch": torch.__version__, "cuda_runtime": torch.version.cuda}
    if _kind(device) == "cuda":
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(
            name=props.name,
            capability=f"{props.major}.{props.minor}",
            total_memory_bytes=props.total_memory,
            multiprocessors=props.multi_processor_count,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    else:
        info["name"] = "cpu (dry run)"
    return info


def _write(payload: dict[str, Any], out: Path) -> None:
    """Write the JSON through a temporary file, so that a run cut short never leaves half a file."""
    tmp = out.with_name(out.name + ".tmp")
    write_json("gpu_check", payload, tmp)
    os.replace(tmp, out)


def run(parts: list[str], budget_s: float, device: str, out: Path) -> dict[str, Any]:
    shares = {name: PARTS[name] * budget_s / sum(PARTS[p] for p in parts) for name in parts}
    deadline = time.perf_counter() + budget_s
    payload: dict[str, Any] = {
        "device": device_info(device),
        "budget_s": budget_s,
        "parts": {},
        "passed": False,
    }
    for i, name in enumerate(parts):
        later = sum(shares[p] for p in parts[i + 1 :])
        budget = max(1.0, deadline - time.perf_counter() - later)
        print(f"[gpu_check] {name}: budget {budget:.0f} s", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            part = RUNNERS[name](budget, device)
        except PartTimeout as stop:
            part = {"status": "timed out", "output_tail": _tail(str(stop))}
            if stop.partial is not None:
                part["partial_result"] = stop.partial
        except Exception as err:  # a part's own failure is its result; the next parts still run
            part = {"status": "failed", "error": f"{type(err).__name__}: {str(err).strip()[:1500]}"}
        part.update(budget_s=round(budget, 1), wall_s=round(time.perf_counter() - start, 2))
        payload["parts"][name] = part
        payload["passed"] = all(p["status"] == "passed" for p in payload["parts"].values())
        payload["wall_s"] = round(time.perf_counter() - STARTED, 2)
        _write(payload, out)
        print(f"[gpu_check] {name}: {part['status']} in {part['wall_s']} s", file=sys.stderr, flush=True)
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a dry run of this script)")
    parser.add_argument("--budget-s", type=float, default=270.0, help="seconds for all parts together")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/gpu_check.json")
    parser.add_argument("--only", nargs="+", choices=list(PARTS), default=None, help="run these parts only")
    args = parser.parse_args(argv)
    import torch

    if _kind(args.device) == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_check: this torch ({torch.__version__}) sees no CUDA device, so there is nothing to "
            "check; run it on a GPU machine (docs/benchmarks.md, section 6), or --device cpu --out PATH "
            "for a dry run",
            file=sys.stderr,
        )
        return 2
    if _kind(args.device) == "cpu" and args.out is None:
        print(
            "gpu_check: --device cpu is a dry run; give --out PATH (not the GPU results' file)",
            file=sys.stderr,
        )
        return 2
    if args.budget_s <= 0:
        print(f"gpu_check: --budget-s must be positive, got {args.budget_s:g}", file=sys.stderr)
        return 2
    out = args.out or RESULTS / "gpu_check.json"
    parts = args.only or list(PARTS)
    payload = run([p for p in PARTS if p in parts], args.budget_s, args.device, out)
    print(json.dumps({name: part["status"] for name, part in payload["parts"].items()}))
    print(f"wrote {out}")
    return 0 if payload["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
