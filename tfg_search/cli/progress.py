"""The progress display of ``tfg-search search``: bars for rounds, trials and samples, the live best;
off a terminal (CI logs, ``ray job logs``, a pipe) one plain line per wave instead, or with
``--log-json`` one JSON object per wave (:func:`wave_line`); a wave still running after
``$TFG_SEARCH_LINE_EVERY`` seconds (default 60; 0: never) adds a timed line every as many
seconds (:func:`progress_line`), so that a log never goes silent for longer."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from typing import Any

from rich.markup import escape

from tfg_search.cli import output
from tfg_search.errors import TFGSearchError
from tfg_search.trial import FAILURE_USER

console = output.console(stderr=True)

EVERY_ENV = "TFG_SEARCH_LINE_EVERY"
"""Seconds between the timed lines of a long wave off a terminal (0: none)."""
DEFAULT_EVERY_S = 60.0


def line_every() -> float:
    """The seconds of ``$TFG_SEARCH_LINE_EVERY`` (default :data:`DEFAULT_EVERY_S`; 0: no timed lines).

    Raises:
        TFGSearchError: not a finite number >= 0 (one line, what to give).
    """
    text = os.environ.get(EVERY_ENV, "").strip()
    if not text:
        return DEFAULT_EVERY_S
    try:
        every = float(text)
    except ValueError:
        every = -1.0
    if not math.isfinite(every) or every < 0:
        raise TFGSearchError(
            f"{EVERY_ENV} must be a number of seconds >= 0 (0: no timed lines), got {text!r}; "
            "fix it or unset it"
        )
    return every


class SearchProgress:
    """Rich progress bars for rounds, trials and samples, with the current best.

    The samples bar's total is the work planned so far: the samples of the trials run, those of
    the round handed out, and the final re-runs still due (``final_top x final_samples``); it
    grows as each round is planned (a search's length is not known in advance) and is exact once
    the final re-runs start. The live best is the top of the search's own ranking after each
    search trial (the ``leader`` of a trial event, :meth:`tfg_search.run.loop.SearchLoop.leader`):
    the rung search's puts the points of its highest rung first, so a lucky small-sample score
    is not shown as the best.
    """

    def __init__(self, rounds: int, quiet: bool, log_json: bool = False) -> None:
        # here, not at the top: only `search` shows progress (the query commands start faster)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.lines = "json" if log_json else ("plain" if not quiet and not console.is_terminal else None)
        """What a wave prints instead of bars: JSON lines (``--log-json``), plain lines (stderr is not
        a terminal), or nothing (bars, or ``--quiet``)."""
        every = line_every()
        self.clock = _WaveClock(every, self._timed_line) if self.lines is not None and every > 0 else None
        """Prints a timed line while a wave runs longer than ``every`` seconds (lines only)."""
        quiet = quiet or self.lines is not None
        self.total_rounds = rounds
        self.start = time.perf_counter()
        self.quiet = quiet
        self.best: tuple[float, int] | None = None
        """(score, trial number) of the live best."""
        self.best_text = ""
        self.samples_done = 0
        self.samples_round = 0
        self.finals_due = 0
        self.started = False
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
        )
        self.rounds = self.progress.add_task("rounds", total=rounds, info="")
        self.trials = self.progress.add_task("trials", total=0, info="")
        self.samples = self.progress.add_task("samples", total=None, info="")

    def _samples_total(self, planned: int) -> None:
        self.progress.update(self.samples, total=self.samples_done + planned)

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        p = self.progress
        if kind == "study":
            self.progress.start()  # only once the study is open: bad input prints just its error
            self.started = True
            settings = data.get("settings") or {}
            self.samples_round = int(settings.get("samples", 0))
            self.finals_due = int(settings.get("final_top", 0)) * int(settings.get("final_samples", 0))
            self._samples_total(self.finals_due)
            if self.quiet:
                return
            state = "resuming" if data["resumed"] else "new"
            extra = f", {data['recovered']} interrupted trial(s) to redo" if data["recovered"] else ""
            if data.get("retried"):
                extra += f", {data['retried']} trial(s) that failed on the machine to retry"
            holder = data.get("previous_holder")
            taken = f" (took over from dead {escape(holder)})" if holder else ""
            name = escape(data["name"])
            console.print(f"[bold]study[/] {name} ({state}, {data['completed']} completed{extra}){taken}")
        elif kind == "round":
            p.update(self.rounds, completed=data["round"], info=f"round {data['round']}")
            p.update(self.trials, total=data["pending"], completed=0, info=self._best_info())
            self._samples_total(data["pending"] * self.samples_round + self.finals_due)
            if self.clock is not None:
                self.clock.start(int(data["round"]) + 1, int(data["pending"]))
        elif kind == "final":
            p.update(self.rounds, completed=p.tasks[self.rounds].total, info="final re-runs")
            p.update(self.trials, total=data["count"], completed=0, info=f"final x {data['samples']}")
            self.finals_due = 0
            self._samples_total(data["count"] * data["samples"])
            if self.clock is not None:
                self.clock.start(None, int(data["count"]))
        elif kind == "trial":
            from tfg_search.cli.report import describe_params

            if self.clock is not None:
                self.clock.done += 1
            p.advance(self.trials)
            p.advance(self.samples, data["samples"])
            self.samples_done += data["samples"]
            leader = data.get("leader")
            if leader is not None:
                self.best = (float(leader["value"]), int(leader["number"]))
                self.best_text = describe_params(leader["params"])
                p.update(self.trials, info=self._best_info())
            if data["error"] and data.get("failure") != FAILURE_USER:  # (the search's own error line)
                p.console.print(
                    f"[yellow]trial {data['number']} failed:[/] {escape(str(data['error'])[:200])}"
                )
        elif kind == "wave" and self.lines is not None:
            if self.clock is not None:
                self.clock.stop()
            elapsed = time.perf_counter() - self.start
            self._print(wave_line(data, self.total_rounds, elapsed, self.lines == "json"))
        elif kind == "done":
            p.update(self.samples, total=self.samples_done)
            p.update(self.rounds, completed=p.tasks[self.rounds].total)  # (a finished search run again)

    def _print(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def _timed_line(self, clock: _WaveClock) -> None:
        now = time.perf_counter()
        wave = clock.wave
        line = progress_line(
            wave if wave is not None else self.total_rounds + 1,
            self.total_rounds,
            wave is None,
            clock.done,
            clock.pending,
            now - clock.since,
            now - self.start,
            self.lines == "json",
        )
        self._print(line)

    def _best_info(self) -> str:
        """The live best (the top of the search's ranking), as the trials bar shows it."""
        if self.best is None:
            return ""
        return f"best {self.best[0]:.4f} (trial {self.best[1]}: {self.best_text})"

    def __enter__(self) -> SearchProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.clock is not None:
            self.clock.stop()
        if self.started:  # stopping a display never started still prints a blank line
            self.progress.stop()


class _WaveClock:
    """While a wave runs, calls ``emit(self)`` every ``every`` seconds from a daemon thread; the
    display counts the wave's trials told (:attr:`done`) as their events arrive."""

    def __init__(self, every: float, emit: Any) -> None:
        self.every = every
        self.emit = emit
        self.wave: int | None = None
        """The wave's number (1-based; None: the final re-runs)."""
        self.pending = 0
        self.done = 0
        self.since = time.perf_counter()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, wave: int | None, pending: int) -> None:
        self.stop()
        self.wave, self.pending, self.done, self.since = wave, pending, 0, time.perf_counter()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stopped,), daemon=True)
        self._thread.start()

    def _run(self, stopped: threading.Event) -> None:
        while not stopped.wait(self.every):
            self.emit(self)

    def stop(self) -> None:
        """Stop the timed lines (before the wave's own line: nothing prints after it)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def progress_line(
    wave: int,
    rounds: int,
    final: bool,
    done: int,
    pending: int,
    wave_elapsed: float,
    elapsed: float,
    as_json: bool,
) -> str:
    """A timed line while a long wave runs: wave k of N (or the final re-runs), its trials told of
    those it handed out, how long it has run, the time elapsed.

    Example:
        >>> progress_line(2, 6, False, 3, 8, 61.0, 125.25, False)
        'wave 2 of 6: 3 of 8 trials done, running for 61.0 s, 125.2 s'
        >>> json.loads(progress_line(7, 6, True, 1, 2, 60.0, 300.0, True))["phase"]
        'final'
    """
    if as_json:
        return _json_event(
            "progress",
            wave,
            rounds,
            final,
            elapsed,
            done=done,
            pending=pending,
            wave_elapsed_s=round(wave_elapsed, 2),
        )
    where = "final re-runs" if final else f"wave {wave} of {rounds}"
    return f"{where}: {done} of {pending} trials done, running for {wave_elapsed:.1f} s, {elapsed:.1f} s"


def wave_line(data: dict[str, Any], rounds: int, elapsed: float, as_json: bool) -> str:
    """One line after a wave (a "wave" event of :class:`tfg_search.run.coordinator.Coordinator`):
    wave k of N (a search round; then the final re-runs), trials told, the passes the study spent,
    the best by the search's own ranking, the time elapsed.

    Example:
        >>> data = {"phase": "search", "round": 0, "trials": 8, "passes": {"denoiser": 4096},
        ...         "best": {"number": 3, "value": 0.5, "params": {"rho": 1.0}, "role": "search"}}
        >>> wave_line(data, 6, 2.5, False)
        'wave 1 of 6: 8 trials done, 4,096 denoiser passes, best 0.5000 (search trial 3: rho=1), 2.5 s'
        >>> json.loads(wave_line(data, 6, 2.5, True))["wave"]
        1
    """
    from tfg_search.cli.report import describe_params

    final = data["phase"] != "search"
    wave = rounds + 1 if final else int(data["round"]) + 1
    best = data.get("best")
    if as_json:
        return _json_event(
            "wave",
            wave,
            rounds,
            final,
            elapsed,
            trials=data["trials"],
            passes=data["passes"],
            best=None
            if best is None
            else {
                k: best[f]
                for k, f in (("score", "value"), ("trial", "number"), ("role", "role"), ("params", "params"))
            },
        )
    where = "final re-runs" if final else f"wave {wave} of {rounds}"
    shown = "no completed trial yet"
    if best is not None:
        point = describe_params(best["params"])
        shown = f"best {best['value']:.4f} ({best['role']} trial {best['number']}: {point})"
    passes = int(data["passes"].get("denoiser", 0))
    return f"{where}: {data['trials']} trials done, {passes:,} denoiser passes, {shown}, {elapsed:.1f} s"


def _json_event(event: str, wave: int, rounds: int, final: bool, elapsed: float, **fields: Any) -> str:
    """A JSON line of ``--log-json``: the event, where the search is (wave k of N, its phase), the
    time elapsed, and the event's own ``fields``."""
    where = {"wave": wave, "of": rounds, "phase": "final" if final else "search"}
    return json.dumps({"event": event, **where, **fields, "elapsed_s": round(elapsed, 2)}, sort_keys=True)
